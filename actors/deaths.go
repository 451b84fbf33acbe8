package actors

import "sync"

// deathWatch tells callers waiting for a local grain's answer that the
// grain stopped. protoactor drops the user messages still in a mailbox
// when the actor stops (InvokeUserMessage returns early once the state is
// stopped) without a dead-letter answer, so a request that met a grain
// passivating, fenced or diverged waited out its whole timeout — 20 s in
// TestFailedCommitReloadsWhatWasStored, one run in eight under -race. A
// grain's Stopped handler runs after its last message was processed, so a
// request unanswered by then was never processed and is safe to send
// again (errNotDelivered).
type deathWatch struct {
	mu sync.Mutex
	m  map[string]*watch // by PID id
}

type watch struct {
	ch chan struct{}
	n  int
}

// add returns a channel closed when the grain with PID id stops, and the
// function that stops watching.
func (d *deathWatch) add(id string) (<-chan struct{}, func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]*watch{}
	}
	w := d.m[id]
	if w == nil {
		w = &watch{ch: make(chan struct{})}
		d.m[id] = w
	}
	w.n++
	return w.ch, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if w.n--; w.n == 0 && d.m[id] == w {
			delete(d.m, id)
		}
	}
}

// died wakes the callers waiting on the grain with PID id.
func (d *deathWatch) died(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if w := d.m[id]; w != nil {
		close(w.ch)
		delete(d.m, id)
	}
}
