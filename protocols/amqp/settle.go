package amqp

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Settlement: an entry the broker accepted (or that became a dead letter,
// or too old) leaves the outbox through a commit of its device's grain.
// One such commit per device per window would double the commits of a
// busy node (each PUBACKed message is one already), so the worker keeps
// what it must settle and flushes it, one commit per device, when it has
// nothing else to do, when settleEvery passed since the oldest, or when
// settleMax entries wait. Until then they are not sent again from here;
// should this member die first, the next owner sends them again
// (duplicates, never losses).
const (
	settleEvery = 100 * time.Millisecond
	settleMax   = 1024
)

// pendingSettle is what one device's grain must remove.
type pendingSettle struct {
	kind  string
	seqs  []uint64
	bytes int
	left  int // entries removed from the backlog once settled
}

// toSettle queues a window's outcome for a device.
func (w *worker) toSettle(b *deviceBatch) {
	if len(b.settled) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.settling[b.device]
	if p == nil {
		p = &pendingSettle{kind: b.entries[0].rec.Kind}
		w.settling[b.device] = p
	}
	for _, seq := range b.settled {
		p.seqs = append(p.seqs, seq)
		w.settlingSeqs[tryKey{b.device, seq}] = struct{}{}
	}
	p.bytes += b.bytes
	p.left += len(b.settled)
	if w.settlingSince.IsZero() {
		w.settlingSince = w.svc.cfg.Now()
	}
	w.settlingN += len(b.settled)
}

// isSettling reports whether an entry waits for its settlement.
func (w *worker) isSettling(device string, seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.settlingSeqs[tryKey{device, seq}]
	return ok
}

// settleDue reports whether the queued settlements should go now (idle:
// nothing else to do).
func (w *worker) settleDue(idle bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.settlingN == 0 {
		return false
	}
	return idle || w.settlingN >= settleMax || w.svc.cfg.Now().Sub(w.settlingSince) >= settleEvery
}

// flushSettle commits the queued settlements, one grain request per
// device, in parallel; what fails stays queued for the next flush.
func (w *worker) flushSettle(ctx context.Context) error {
	w.mu.Lock()
	todo := w.settling
	w.settling = map[string]*pendingSettle{}
	w.settlingN, w.settlingSince = 0, time.Time{}
	w.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, w.svc.cfg.Window) // bounds the grain requests in flight
	var wg sync.WaitGroup
	for device, p := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, w.svc.cfg.SendTimeout)
			err := w.svc.cfg.Grains.SettleOutbox(sctx, device, p.kind, p.seqs)
			cancel()
			w.mu.Lock()
			defer w.mu.Unlock()
			if err != nil {
				// Kept for the next flush (merged with what came since).
				q := w.settling[device]
				if q == nil {
					w.settling[device] = p
				} else {
					q.seqs, q.bytes, q.left = append(q.seqs, p.seqs...), q.bytes+p.bytes, q.left+p.left
				}
				w.settlingN += len(p.seqs)
				if w.settlingSince.IsZero() {
					w.settlingSince = w.svc.cfg.Now()
				}
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("settle the outbox of %s: %w", device, err)
				}
				mu.Unlock()
				return
			}
			for _, seq := range p.seqs {
				delete(w.settlingSeqs, tryKey{device, seq})
			}
			w.st.Backlog = max(w.st.Backlog-p.left, 0)
			w.st.BacklogBytes = max(w.st.BacklogBytes-p.bytes, 0)
			w.svc.m.backlog.WithLabelValues(w.def.Name).Set(float64(w.st.Backlog))
		}()
	}
	wg.Wait()
	return firstErr
}

// settlingBytes is the encoded size of what waits for its settlement;
// callers hold w.mu.
func (w *worker) settlingBytes() int {
	n := 0
	for _, p := range w.settling {
		n += p.bytes
	}
	return n
}
