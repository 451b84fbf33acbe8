package streams_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/protocols/streams"
	"github.com/twinmesh/twinmesh/protocols/streams/streamclient"
)

// agentSignaller reaches a device in process: it hands the request to a
// real streamclient.Agent (what the device would do on receiving it over
// MQTT) and returns the status the agent answers.
type agentSignaller struct {
	agent *streamclient.Agent
	wg    sync.WaitGroup
	ctx   context.Context
}

func (s *agentSignaller) RequestStream(ctx context.Context, _, name, url, token string) (int, error) {
	answered := make(chan int, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.agent.Handle(s.ctx, streamclient.Request{Name: name, RID: "1", URL: url, Token: token},
			func(st int) { answered <- st })
	}()
	select {
	case st := <-answered:
		return st, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// env is a Broker behind a real HTTP server, with a real agent as the
// device, whose one allowed stream, "t", reaches target.
type env struct {
	broker *streams.Broker
	dialer *streamclient.Dialer
}

func newEnv(t testing.TB, cfg streams.Config, target string) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sig := &agentSignaller{ctx: ctx, agent: &streamclient.Agent{Targets: map[string]string{"t": target},
		Logger: slog.New(slog.DiscardHandler)}}
	cfg.Signaller = sig
	cfg.Logger = slog.New(slog.DiscardHandler)
	b, err := streams.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/devices/{id}/streams/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Open(w, r, r.PathValue("id"), r.PathValue("name"), "test", nil); err != nil {
			api.WriteError(w, err)
		}
	})
	mux.HandleFunc("GET "+streams.ConnectPath+"{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Accept(w, r, r.PathValue("id")); err != nil {
			api.WriteError(w, err)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		b.Close()
		cancel()
		sig.wg.Wait()
		srv.Close()
	})
	return &env{broker: b, dialer: &streamclient.Dialer{Node: srv.URL, Token: "unused"}}
}

// tcpServer serves every connection with h until the test ends.
func tcpServer(t testing.TB, h func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				h(c)
			}()
		}
	}()
	return l.Addr().String()
}

func TestIdleStreamIsClosed(t *testing.T) {
	silent := tcpServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	e := newEnv(t, streams.Config{IdleTimeout: time.Second}, silent)
	// The idle clock starts when the node opens the stream, before Dial
	// returns: measuring from after Dial saw 999.7 ms in CI.
	start := time.Now()
	ws, err := e.dialer.Dial(context.Background(), "d1", "t")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = ws.ReadMessage()
	ce, ok := err.(*websocket.CloseError)
	if !ok || ce.Text != "idle timeout" {
		t.Fatalf("read: %v, want a close with \"idle timeout\"", err)
	}
	if d := time.Since(start); d < time.Second || d > 4*time.Second {
		t.Fatalf("closed after %v, want about 1 s", d)
	}
}

func TestBytesPerSecond(t *testing.T) {
	const size = 3 << 20
	source := tcpServer(t, func(c net.Conn) { _, _ = c.Write(make([]byte, size)) })
	// The bucket holds a second's worth: the first MiB passes at once,
	// the other two take about 2 s.
	e := newEnv(t, streams.Config{BytesPerSecond: 1 << 20}, source)
	ws, err := e.dialer.Dial(context.Background(), "d1", "t")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	start := time.Now()
	var got int
	for got < size {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		got += len(b)
	}
	if d := time.Since(start); d < 1700*time.Millisecond || d > 6*time.Second {
		t.Fatalf("3 MiB at 1 MiB/s (1 MiB burst) took %v, want about 2 s", d)
	}
}

// TestSlowReaderSlowsTheSource: a service that does not read stops the
// device's target after a bounded amount (socket buffers and a chunk per
// hop), rather than the node buffering without end.
func TestSlowReaderSlowsTheSource(t *testing.T) {
	var written atomic.Int64
	source := tcpServer(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	e := newEnv(t, streams.Config{}, source)
	ws, err := e.dialer.Dial(context.Background(), "d1", "t")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var last int64 = -1
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(300 * time.Millisecond)
		w := written.Load()
		if w == last {
			break // the source is blocked
		}
		if time.Now().After(deadline) {
			t.Fatalf("the source kept writing (%d bytes) while nobody read", w)
		}
		last = w
	}
	if last > 64<<20 {
		t.Fatalf("%d bytes in flight before the source blocked: buffering is not bounded", last)
	}
	t.Logf("the source blocked after %d KiB with nobody reading", last>>10)
	// Reading again drains it and the source moves on. How much must be
	// read first depends on the kernel's socket buffers along the way
	// (a fixed 2 MiB was not enough in one CI run), so the service reads
	// until the source writes again, for at most 5 s.
	deadline = time.Now().Add(5 * time.Second)
	for written.Load() == last {
		if time.Now().After(deadline) {
			t.Fatal("the source did not resume once the service read")
		}
		_ = ws.SetReadDeadline(deadline)
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatalf("the source did not resume once the service read: %v", err)
		}
	}
}

func TestCloseEndsStreams(t *testing.T) {
	silent := tcpServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	e := newEnv(t, streams.Config{}, silent)
	ws, err := e.dialer.Dial(context.Background(), "d1", "t")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	done := make(chan struct{})
	go func() {
		e.broker.Close()
		close(done)
	}()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Fatalf("read after Close: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := e.dialer.Dial(context.Background(), "d1", "t"); err == nil {
		t.Fatal("a stream opened after Close")
	}
}

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name string
		cfg  streams.Config
	}{
		{"no signaller", streams.Config{}},
		{"negative timeout", streams.Config{Signaller: &agentSignaller{}, IdleTimeout: -1}},
		{"http URL", streams.Config{Signaller: &agentSignaller{}, URL: "http://node:8080"}},
		{"URL with a path", streams.Config{Signaller: &agentSignaller{}, URL: "ws://node:8080/x"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := streams.New(tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := streams.New(streams.Config{Signaller: &agentSignaller{}, URL: "wss://node:8443"}); err != nil {
		t.Fatal(err)
	}
}

func TestDeletedDeviceEndsOnlyItsStreams(t *testing.T) {
	echo := tcpServer(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	e := newEnv(t, streams.Config{}, echo)
	ws1, err := e.dialer.Dial(context.Background(), "d1", "t")
	if err != nil {
		t.Fatal(err)
	}
	defer ws1.Close()
	ws2, err := e.dialer.Dial(context.Background(), "d2", "t")
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	e.broker.HandleEvent(actors.Event{Type: actors.EventTopology, Entity: "d1", Data: json.RawMessage(`{"deleted":true}`)})
	_ = ws1.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = ws1.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Text != "device deleted" {
		t.Fatalf("d1's stream: %v, want a close \"device deleted\"", err)
	}
	if err := ws2.WriteMessage(websocket.BinaryMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	_ = ws2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, b, err := ws2.ReadMessage(); err != nil || string(b) != "still here" {
		t.Fatalf("d2's stream: %q %v", b, err)
	}
}

func TestNodeLimit(t *testing.T) {
	silent := tcpServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	e := newEnv(t, streams.Config{MaxPerNode: 1}, silent)
	ws, err := e.dialer.Dial(context.Background(), "d1", "t")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.dialer.Dial(context.Background(), "d2", "t")
	var se *streamclient.StatusError
	if !errors.As(err, &se) || se.Status != 429 {
		t.Fatalf("a second stream on a node that allows one: %v, want 429", err)
	}
	// The slot is free again once the first stream ended.
	_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, _ = ws.ReadMessage()
	_ = ws.Close()
	testutil.Eventually(t, 5*time.Second, "the slot to be released", func() bool {
		ws2, err := e.dialer.Dial(context.Background(), "d2", "t")
		if err == nil {
			_ = ws2.Close()
		}
		return err == nil
	})
}
