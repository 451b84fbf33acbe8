package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/twinmesh/twinmesh/persistence"
)

// errLink marks a delivery that failed with its link, session or
// connection (the worker reconnects).
var errLink = errors.New("link failed")

// markDirty notes that the devices' outboxes may hold entries for this
// endpoint.
func (w *worker) markDirty(devices ...string) {
	if len(devices) == 0 {
		return
	}
	w.mu.Lock()
	for _, d := range devices {
		w.dirty[d] = struct{}{}
	}
	w.mu.Unlock()
	w.notify()
}

// takeDirty returns the devices to look at, in order, and forgets them.
func (w *worker) takeDirty() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.dirty) == 0 {
		return nil
	}
	out := sortedKeys(w.dirty)
	clear(w.dirty)
	return out
}

// recount sets the backlog to what a scan of the store found for the
// devices this member owns, plus what the legacy outbox holds.
func (w *worker) recount(count, bytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Entries waiting for their settlement are still in the store; they
	// are no backlog (the flush would count them out a second time).
	w.st.Backlog = max(count+w.legacyCount-w.settlingN, 0)
	w.st.BacklogBytes = max(bytes+w.legacyBytes-w.settlingBytes(), 0)
	w.svc.m.backlog.WithLabelValues(w.def.Name).Set(float64(w.st.Backlog))
}

// deliverDevices sends what the dirty devices' outboxes hold for this
// endpoint, windows of up to Window messages filled from as many devices
// as it takes; progressed is false when nothing was delivered.
func (w *worker) deliverDevices(ctx context.Context, snd *amqp.Sender, bo *backoff) (progressed bool, err error) {
	g := w.svc.cfg.Grains
	if g == nil {
		return false, nil
	}
	devs := w.takeDirty()
	for len(devs) > 0 {
		if ctx.Err() != nil {
			w.markDirty(devs...)
			return progressed, ctx.Err()
		}
		var batch []*deviceBatch
		room, i := w.svc.cfg.Window, 0
		for ; i < len(devs) && room > 0; i++ {
			d := devs[i]
			if !g.Owns(d) {
				w.forgetTries(d)
				continue // its grain's owner sends it
			}
			entries, more, err := w.pending(d, room)
			if err != nil {
				w.markDirty(devs[i:]...)
				return progressed, err
			}
			if len(entries) == 0 {
				continue
			}
			if w.tries(d, entries[0].Seq) > 0 {
				// Sent alone until accepted or dead: the device's later
				// messages must not overtake it.
				entries, more = entries[:1], true
			}
			batch = append(batch, &deviceBatch{device: d, entries: entries, more: more})
			room -= len(entries)
		}
		devs = devs[i:]
		if len(batch) == 0 {
			continue
		}
		n, err := w.deliverWindow(ctx, snd, bo, batch)
		progressed = progressed || n > 0
		for _, b := range batch {
			if b.more || b.blocked || err != nil {
				w.markDirty(b.device)
			}
		}
		if err != nil {
			w.markDirty(devs...)
			return progressed, err
		}
	}
	return progressed, nil
}

// outEntry is a grain outbox entry with its decoded record.
type outEntry struct {
	persistence.OutboxEntry
	rec record
}

// deviceBatch is one device's part of a window and what became of it.
type deviceBatch struct {
	device  string
	entries []outEntry
	more    bool // the outbox holds more for this endpoint

	settled   []uint64 // accepted, dead or aged: removed from the outbox
	bytes     int      // their encoded size
	delivered int
	dead      []record
	// blocked: one of its messages was not accepted; those after it wait.
	blocked bool
}

// pending reads up to limit of device's entries for this endpoint.
func (w *worker) pending(device string, limit int) ([]outEntry, bool, error) {
	var out []outEntry
	after := uint64(0)
	page := w.svc.cfg.Window
	for {
		es, err := w.svc.cfg.Grains.Outbox(device, after, page)
		if err != nil {
			return nil, false, err
		}
		for _, e := range es {
			after = e.Seq
			if e.Endpoint != w.def.Name || w.isSettling(device, e.Seq) {
				continue
			}
			if len(out) == limit {
				return out, true, nil
			}
			var r record
			if err := json.Unmarshal(e.Data, &r); err != nil {
				// Not one this binary can send (written by a newer one?).
				w.svc.log.Warn("amqp outbox entry", "device", device, "seq", e.Seq, "err", err)
				continue
			}
			out = append(out, outEntry{OutboxEntry: e, rec: r})
		}
		if len(es) < page {
			return out, false, nil
		}
	}
}

// deliverWindow sends the batch's messages pipelined on the link, waits
// for their outcomes in order and settles, through each device's grain,
// the accepted ones (and the dead and aged). The first message of a
// device that is not accepted (the broker rejected it, or the link or
// session failed while it was in flight: RabbitMQ's AMQP 1.0 plugin ends
// the session when a queue refuses a message) counts a try; after
// MaxTries it becomes a dead letter and the device's later messages go
// on. n is how many were delivered.
func (w *worker) deliverWindow(ctx context.Context, snd *amqp.Sender, bo *backoff, batch []*deviceBatch) (n int, err error) {
	now := w.svc.cfg.Now()
	type sent struct {
		b *deviceBatch
		e outEntry
		r amqp.SendReceipt
	}
	var inFlight []sent
	var failed error
	aged := 0
send:
	for _, b := range batch {
		for _, e := range b.entries {
			if w.svc.cfg.Bounds.MaxAge > 0 && now.Sub(e.rec.Enqueued) > w.svc.cfg.Bounds.MaxAge {
				b.settled, b.bytes, aged = append(b.settled, e.Seq), b.bytes+len(e.Data), aged+1
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, w.svc.cfg.SendTimeout)
			r, err := snd.SendWithReceipt(sctx, w.message(entry{key: append([]byte(b.device+"-"), seqKey(e.Seq)...), rec: e.rec}), nil)
			cancel()
			if err != nil {
				// Not a try: the link was gone before the message was on
				// it (a broker restart must not use up tries).
				failed = fmt.Errorf("%w: send: %s", errLink, Redact(err.Error()))
				break send
			}
			inFlight = append(inFlight, sent{b, e, r})
		}
	}
	for _, s := range inFlight {
		wctx, cancel := context.WithTimeout(ctx, w.svc.cfg.SendTimeout)
		state, err := s.r.Wait(wctx)
		cancel()
		if _, ok := state.(*amqp.StateAccepted); ok && err == nil {
			s.b.settled, s.b.bytes, s.b.delivered = append(s.b.settled, s.e.Seq), s.b.bytes+len(s.e.Data), s.b.delivered+1
			w.forgetTry(s.b.device, s.e.Seq)
			continue
		}
		reason := "not accepted"
		switch st := state.(type) {
		case *amqp.StateRejected:
			reason = "rejected"
			if st.Error != nil {
				reason = st.Error.Error()
			}
		case nil:
			if err != nil {
				reason = Redact(err.Error())
				if failed == nil {
					failed = fmt.Errorf("%w: settlement: %s", errLink, reason)
				}
			}
		}
		if failed == nil {
			failed = fmt.Errorf("broker did not accept a message: %s", Redact(reason))
		}
		w.failedTry(s.b, s.e, reason, now)
	}
	var dead []record
	for _, b := range batch {
		dead = append(dead, b.dead...)
	}
	if len(dead) > 0 {
		if err := w.svc.st.addDead(w.def.Name, dead); err != nil {
			return 0, fmt.Errorf("dead letters: %w", err)
		}
	}
	// The outbox forgets them when the next settlement flushes (a commit
	// of each device's grain, for many windows at once).
	for _, b := range batch {
		n += b.delivered
		w.account(b.delivered, 0, 0, len(b.dead), 0, 0)
		w.toSettle(b)
	}
	w.account(0, aged, 0, 0, 0, 0)
	switch {
	case failed != nil && errors.Is(failed, errLink):
		return n, failed // reconnect
	case failed != nil:
		w.setState(StateConnected, failed)
		if !sleep(ctx, bo.next()) {
			return n, ctx.Err()
		}
		return n, nil
	}
	bo.reset()
	return n, nil
}

// failedTry records a try of e, which was not accepted, unless an earlier
// message of its device already took this round's: after MaxTries it is a
// dead letter (removed from the outbox with the round's settlement).
func (w *worker) failedTry(b *deviceBatch, e outEntry, reason string, now time.Time) {
	if b.blocked {
		return
	}
	b.blocked = true
	tries := w.addTry(b.device, e.Seq)
	if tries < w.svc.cfg.MaxTries {
		w.account(0, 0, 1, 0, 0, 0)
		return
	}
	e.rec.Tries, e.rec.Error, e.rec.Dead = tries, Redact(reason), now
	b.dead = append(b.dead, e.rec)
	b.settled, b.bytes = append(b.settled, e.Seq), b.bytes+len(e.Data)
	w.forgetTry(b.device, e.Seq)
}

// tryKey names an outbox entry in the worker's try counts.
type tryKey struct {
	device string
	seq    uint64
}

// tries returns how many times an entry was tried without being accepted
// by this member (counts live in memory: a new owner starts again).
func (w *worker) tries(device string, seq uint64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tried[tryKey{device, seq}]
}

func (w *worker) addTry(device string, seq uint64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := tryKey{device, seq}
	w.tried[k]++
	return w.tried[k]
}

func (w *worker) forgetTry(device string, seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.tried, tryKey{device, seq})
}

// forgetTries drops the counts of a device this member no longer owns.
func (w *worker) forgetTries(device string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.tried {
		if k.device == device {
			delete(w.tried, k)
		}
	}
}
