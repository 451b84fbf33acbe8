package mqtt

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestGuard(t *testing.T, maxPending int, connectTimeout time.Duration) (*guardListener, *guardMetrics) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &guardMetrics{acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "a"}),
		refusedPending: prometheus.NewCounter(prometheus.CounterOpts{Name: "r"})}
	g := newGuardListener(tcp, "test", Config{ConnectTimeout: connectTimeout, MaxPending: maxPending,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, m)
	t.Cleanup(func() { _ = g.Close() })
	return g, m
}

// Connections not yet authenticated are capped: beyond MaxPending a new
// one is closed at once and counted; an authenticated one (settled) or a
// closed one frees its place.
func TestGuardCapsPendingConnections(t *testing.T) {
	g, m := newTestGuard(t, 2, time.Minute)
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", g.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial(), dial()
	ga, gb := <-accepted, <-accepted
	_, _ = a, b
	refused := dial()
	_ = refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := refused.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("third pending connection: read %v, want EOF (closed by the node)", err)
	}
	if n := testutil.ToFloat64(m.refusedPending); n != 1 {
		t.Fatalf("refused = %v, want 1", n)
	}
	ga.(*guardConn).settle() // authenticated
	_ = gb.Close()
	if p := g.pending.Load(); p != 0 {
		t.Fatalf("pending = %d after one settled and one closed", p)
	}
	dial()
	select {
	case c := <-accepted:
		_ = c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a connection within the cap was not accepted")
	}
}

// Accept retries an accept error (as "too many open files") instead of
// returning it, reports it through Failing until an accept succeeds, and
// returns net.ErrClosed once the listener is closed.
func TestGuardRetriesAcceptErrors(t *testing.T) {
	g, m := newTestGuard(t, 10, time.Minute)
	g.Listener = &flakyListener{Listener: g.Listener, fail: 3}
	go func() {
		c, err := net.Dial("tcp", g.Addr().String())
		if err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := g.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	_ = c.Close()
	if n := testutil.ToFloat64(m.acceptErrors); n != 3 {
		t.Errorf("accept errors = %v, want 3", n)
	}
	if err := g.Failing(); err != nil {
		t.Errorf("Failing after a successful accept: %v", err)
	}
	g.Listener.(*flakyListener).fail = 1000
	done := make(chan error, 1)
	go func() { _, err := g.Accept(); done <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for g.Failing() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g.Failing() == nil {
		t.Fatal("Failing is nil while accepts fail")
	}
	_ = g.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept kept retrying after Close")
	}
}

// flakyListener fails its next fail accepts with EMFILE-like errors.
type flakyListener struct {
	net.Listener
	fail int
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fail > 0 {
		f.fail--
		return nil, errors.New("accept tcp: too many open files")
	}
	return f.Listener.Accept()
}
