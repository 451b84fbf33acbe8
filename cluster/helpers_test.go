package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"
)

// waitFor polls cond every 10 ms until it holds, failing the test after
// timeout; it returns how long it took.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger returns a logger that keeps everything in memory and prints it
// if the test fails (TWINMESH_TEST_LOG=1 prints it always).
func testLogger(t testing.TB) *slog.Logger { return testLoggerAt(t, slog.LevelDebug) }

// testLoggerAt is testLogger keeping only records at level or above.
func testLoggerAt(t testing.TB, level slog.Level) *slog.Logger {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("TWINMESH_TEST_LOG") != "" {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level}))
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// recorder stands in for protoactor's MemberList in gossip-only tests.
type recorder struct {
	mu    sync.Mutex
	ids   []string
	calls int
}

func (r *recorder) update(ms pcluster.Members) {
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.Id)
	}
	slices.Sort(ids)
	r.mu.Lock()
	r.ids = ids
	r.calls++
	r.mu.Unlock()
}

// topology returns the IDs last handed over, comma-separated.
func (r *recorder) topology() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.ids, ",")
}

var incarnation atomic.Int64

// gossipNode starts a Provider without protoactor: its metadata is made up
// and its topology goes to a recorder. The node is shut down (not
// gracefully) at the end of the test.
func gossipNode(t *testing.T, cfg Config, cluster string, kinds ...string) (*Provider, *recorder, meta) {
	t.Helper()
	p, rec, self, err := startGossipNode(t, cfg, cluster, kinds...)
	if err != nil {
		t.Fatal(err)
	}
	return p, rec, self
}

// startGossipNode is gossipNode returning the error of the start.
func startGossipNode(t *testing.T, cfg Config, cluster string, kinds ...string) (*Provider, *recorder, meta, error) {
	t.Helper()
	if cfg.GossipAddr == "" {
		cfg.GossipAddr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	p, err := NewProvider(cfg)
	if err != nil {
		return nil, nil, meta{}, err
	}
	n := incarnation.Add(1)
	self := meta{Cluster: cluster, ID: fmt.Sprintf("%s-id%d", cfg.NodeName, n), Host: "127.0.0.1", Port: 20000 + int(n), Kinds: kinds}
	rec := &recorder{}
	t.Cleanup(func() { _ = p.Shutdown(false) })
	return p, rec, self, p.start(self, rec.update)
}

// member returns the member named name as p sees it.
func member(p *Provider, name string) (Member, bool) {
	for _, m := range p.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// stateOf returns the state of name as p sees it ("" if never seen).
func stateOf(p *Provider, name string) string {
	m, _ := member(p, name)
	return m.State
}
