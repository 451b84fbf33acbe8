package mqtt

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// guardListener stands between the MQTT port and mochi, for what mochi's
// listener does not do:
//
//   - mochi's accept loop returns for good on any error, so one "too many
//     open files" left the port dead while /readyz said ready. Accept
//     retries every error but a closed listener, backing off from 5 ms to
//     1 s as net/http does, logs (at most once a second) and counts, and
//     Failing reports the error until an accept succeeds again.
//   - A client that never sends CONNECT (or half of one) held its socket
//     forever. Each connection gets a deadline of ConnectTimeout, which
//     mochi replaces with the keep-alive deadline once CONNECT is read.
//   - Connections that have not completed authentication are capped
//     (MaxPending); beyond it new ones are closed at once and counted.
type guardListener struct {
	net.Listener
	name           string
	connectTimeout time.Duration
	maxPending     int64
	log            *slog.Logger
	m              *guardMetrics

	pending atomic.Int64
	failing atomic.Pointer[error]
	done    chan struct{}
	once    sync.Once
	lastLog time.Time // of an accept error; Accept is called from one goroutine
}

type guardMetrics struct {
	acceptErrors, refusedPending prometheus.Counter
	pending                      prometheus.GaugeFunc
}

func newGuardListener(ln net.Listener, name string, cfg Config, m *guardMetrics) *guardListener {
	return &guardListener{Listener: ln, name: name, connectTimeout: cfg.ConnectTimeout, maxPending: int64(cfg.MaxPending),
		log: cfg.Logger.With("component", "mqtt", "listener", name), m: m, done: make(chan struct{})}
}

// Accept returns the next connection, retrying failed accepts until the
// listener is closed.
func (l *guardListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			l.failing.Store(&err)
			l.m.acceptErrors.Inc()
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			if time.Since(l.lastLog) > time.Second {
				l.lastLog = time.Now()
				l.log.Error("MQTT listener cannot accept connections; retrying", "err", err, "retry", backoff)
			}
			select {
			case <-time.After(backoff):
				continue
			case <-l.done:
				return nil, net.ErrClosed
			}
		}
		if l.failing.Swap(nil) != nil {
			l.log.Info("MQTT listener accepts connections again")
		}
		backoff = 0
		if l.pending.Load() >= l.maxPending {
			l.m.refusedPending.Inc()
			_ = c.Close()
			continue
		}
		l.pending.Add(1)
		_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
		return &guardConn{Conn: c, l: l}, nil
	}
}

// Close stops the listener and any retry under way.
func (l *guardListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Failing returns the last accept error while accepting fails, nil while
// the listener serves.
func (l *guardListener) Failing() error {
	if e := l.failing.Load(); e != nil {
		return fmt.Errorf("mqtt listener %s: %w", l.name, *e)
	}
	return nil
}

// guardConn is an accepted connection; it counts as pending until its
// client is authenticated or it is closed.
type guardConn struct {
	net.Conn
	l    *guardListener
	once sync.Once
}

// settle takes the connection off the pending count.
func (c *guardConn) settle() { c.once.Do(func() { c.l.pending.Add(-1) }) }

// Close implements net.Conn.
func (c *guardConn) Close() error {
	c.settle()
	return c.Conn.Close()
}

// settleClient takes an authenticated client's connection off the pending
// count of its listener (through TLS, whose connection wraps ours).
func settleClient(cl *mochi.Client) {
	conn := cl.Net.Conn
	if t, ok := conn.(*tls.Conn); ok {
		conn = t.NetConn()
	}
	if g, ok := conn.(*guardConn); ok {
		g.settle()
	}
}
