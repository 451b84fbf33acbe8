package persistence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Op is one write, built by the constructors (PutTwin, PutEntity, …) and
// applied by Commit inside the batch transaction. Values are encoded when the
// Op is built, in the caller's goroutine; reads of the previous state (for
// the indexes) happen inside the transaction, so they see the writes of
// requests queued earlier. An Op that could not be built carries its error
// and makes Commit fail before anything is queued. The zero Op is invalid.
type Op struct {
	kind   string // "put twin", …
	bucket Bucket // for doc ops
	key    string
	err    error
	apply  func(tx *bbolt.Tx) error
}

// String names the op for errors and logs: "put twin d1", "put doc rules/r1".
func (op Op) String() string {
	if op.bucket != "" {
		return op.kind + " " + string(op.bucket) + "/" + op.key
	}
	return op.kind + " " + op.key
}

// errOp returns an Op that fails Commit with err.
func errOp(name string, err error) Op {
	return Op{kind: name, err: fmt.Errorf("%s: %w", name, err)}
}

// request is one Commit call: its ops are applied together, in order.
// Requests are pooled: one is reused only after its Commit received the
// result, never when Commit left early on its context.
type request struct {
	ops    []Op
	inline [2]Op      // backing array for small requests
	done   chan error // buffered(1): the committer never blocks on it
}

// Commit applies ops atomically and durably, as one request of a group
// commit: all requests collected within Options.MaxWait (or until
// Options.MaxBatch) are applied, in arrival order, in one bbolt transaction,
// and Commit returns nil only after that transaction is committed (fsynced
// unless NoSync). If the batch transaction fails, the requests are retried
// apart so that one bad request fails alone: the requests before the one
// whose op failed are committed together again, the failing one alone (which
// returns its error), and the rest continue as a new batch; a failure that no
// request caused (a commit error) retries each request in its own
// transaction.
//
// Ops that could not be built (ErrInvalid, encoding errors) fail Commit at
// once, before anything is queued. Commit with no ops returns nil.
//
// Commit blocks while the queue is full. If ctx is done before the request
// is queued, Commit returns ctx.Err() and nothing is written. If ctx is done
// after it was queued, Commit returns ctx.Err() without waiting: the write
// may still commit. After Close it returns ErrClosed; on a read-only DB,
// ErrReadOnly. Commit is safe from many goroutines; it does not keep ops.
func (db *DB) Commit(ctx context.Context, ops ...Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.readOnly {
		return ErrReadOnly
	}
	for i := range ops {
		if ops[i].err != nil {
			return ops[i].err
		}
		if ops[i].apply == nil {
			return fmt.Errorf("%w: zero Op at index %d", ErrInvalid, i)
		}
	}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	if len(ops) == 0 {
		db.mu.RUnlock()
		return nil
	}
	req := db.reqs.Get().(*request)
	req.ops = append(req.inline[:0], ops...)
	select {
	case db.queue <- req:
		db.mu.RUnlock()
		db.enqueued.Add(1)
	case <-ctx.Done():
		db.mu.RUnlock()
		db.putRequest(req)
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		db.putRequest(req)
		return err
	case <-ctx.Done():
		select { // prefer a result that is already there
		case err := <-req.done:
			db.putRequest(req)
			return err
		default:
			return ctx.Err() // the committer still owns req
		}
	}
}

func newRequest() any { return &request{done: make(chan error, 1)} }

// putRequest returns a request whose result was received to the pool.
func (db *DB) putRequest(r *request) {
	clear(r.inline[:])
	r.ops = nil
	db.reqs.Put(r)
}

// run is the committer goroutine: it collects batches from the queue and
// commits them until the queue is closed and drained.
func (db *DB) run() {
	defer close(db.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]*request, 0, db.opts.MaxBatch)
	for {
		first, ok := <-db.queue
		if !ok {
			return
		}
		batch = append(batch[:0], first)
		// Wait for company from now, when the committer is free: requests
		// queued during the previous commit are company already.
		deadline := time.Now().Add(db.opts.MaxWait)
		open := true
	collect:
		for len(batch) < db.opts.MaxBatch {
			select {
			case r, ok := <-db.queue:
				if !ok {
					open = false
					break collect
				}
				batch = append(batch, r)
				continue
			default:
			}
			wait := time.Until(deadline)
			if wait <= 0 {
				break collect
			}
			timer.Reset(wait)
			select {
			case r, ok := <-db.queue:
				timer.Stop()
				if !ok {
					open = false
					break collect
				}
				batch = append(batch, r)
			case <-timer.C:
				break collect
			}
		}
		db.commitBatch(batch)
		clear(batch) // drop references for the GC
		if !open {
			return
		}
	}
}

// commitBatch commits batch and answers every request in it.
func (db *DB) commitBatch(batch []*request) {
	for len(batch) > 0 {
		failed, err := db.tryCommit(batch)
		if err == nil || len(batch) == 1 {
			for _, r := range batch {
				r.done <- err
			}
			return
		}
		if failed < 0 {
			db.log.Warn("group commit failed; retrying each request alone", "requests", len(batch), "err", err)
			for _, r := range batch {
				_, err := db.tryCommit([]*request{r})
				r.done <- err
			}
			return
		}
		db.log.Debug("request failed in a group commit; retrying the others", "requests", len(batch), "err", err)
		// The requests before the failing one applied cleanly on the same
		// state, so they are committed together again.
		db.commitBatch(batch[:failed])
		_, err = db.tryCommit(batch[failed : failed+1])
		batch[failed].done <- err
		batch = batch[failed+1:]
	}
}

// tryCommit applies batch in one transaction. On failure it returns the
// index of the request whose op failed, or -1 if the commit itself failed.
func (db *DB) tryCommit(batch []*request) (failed int, err error) {
	start := time.Now()
	failed, ops := -1, 0
	err = db.bolt.Update(func(tx *bbolt.Tx) error {
		for i, r := range batch {
			for _, op := range r.ops {
				if err := applyOp(tx, op); err != nil {
					failed = i
					return fmt.Errorf("%v: %w", op, err)
				}
			}
			ops += len(r.ops)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			err = ErrClosed
		}
		return failed, err
	}
	if db.opts.Observer != nil {
		db.opts.Observer(len(batch), ops, time.Since(start))
	}
	return -1, nil
}

// applyOp applies op and turns a panic into an error, so a bug in one op
// fails its request (as bbolt's Batch does) instead of the committer.
func applyOp(tx *bbolt.Tx, op Op) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return op.apply(tx)
}
