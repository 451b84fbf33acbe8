// Package mochiclose stops a mochi-mqtt server without the deadlock its
// Close can fall into.
//
// mochi-mqtt/server v2.7.9's Close disconnects each listener's clients
// through Clients.GetByListener, which read-locks the client map and,
// holding it, calls Clients.Len, which read-locks it again. A client
// connecting or going away in between (Clients.Add or Delete) waits for
// the write lock, and Go's RWMutex makes the second read lock wait behind
// it: Close never returns. It happened in `make test` (TestBenchCommand
// hung 13 minutes in the bare broker's Close) and can happen when a node
// stops with devices connected. Close here first stops the listeners from
// accepting, disconnects every client and waits for the client map to
// settle, so that nothing writes it while mochi's Close reads it; and it
// bounds mochi's Close, so a stop can never hang for good.
package mochiclose

import (
	"errors"
	"fmt"
	"io"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
)

// ErrTimeout is returned when mochi's Close did not return in time; the
// server's goroutines may still be running.
var ErrTimeout = errors.New("mochiclose: mochi's Close did not return in time")

// Close closes the listeners under s (the net.Listeners given to its
// mochi listeners) so that no client connects any more, disconnects every
// client, waits up to settle for the client map to stop changing, then
// calls s.Close and waits for it up to timeout. The map counts as settled
// once its size held for 200 ms: a disconnecting client leaves it after
// its hooks ran (OnDisconnect writes the device's connection state).
func Close(s *mochi.Server, listeners []io.Closer, settle, timeout time.Duration) error {
	for _, l := range listeners {
		_ = l.Close()
	}
	for _, cl := range s.Clients.GetAll() {
		if !cl.Net.Inline {
			cl.Stop(errors.New("server shutting down"))
		}
	}
	deadline := time.Now().Add(settle)
	last, stable := -1, 0
	for time.Now().Before(deadline) && stable < 20 {
		n := s.Clients.Len()
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%w (%v)", ErrTimeout, timeout)
	}
}
