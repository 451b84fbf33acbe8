package main

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestPrintsEvents builds the example, runs it against a real node and
// checks it prints the events of a change beneath the watched entity.
func TestPrintsEvents(t *testing.T) {
	bin := testutil.Build(t, "./examples/dashboard-client")
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--url", "ws://"+n.Addr("http")+"/api/v1/ws", "--token", n.Token, "--entity", "b1", "--count", "2")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "subscribed", func() bool { return strings.Contains(out.String(), "subscribed") })
	api.MustDo(t, "PUT", "/api/v1/entities/r1", `{"kind":"room","parent":"b1"}`, 201)
	api.MustDo(t, "PATCH", "/api/v1/twins/r1", `{"desired":{"lights":"on"}}`, 200)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "r1") || !strings.Contains(out.String(), "topology") {
		t.Fatalf("output:\n%s", out.String())
	}
}

// lockedBuffer is written by exec's copying goroutine and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
