package persistence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
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
//
// An Op built by a constructor of stored data also carries its wire form
// (see Wire), so that the commits of a grain can be shipped to replicas.
type Op struct {
	kind   string // "put twin", …
	bucket Bucket // for doc ops
	key    string
	err    error
	apply  func(tx *bbolt.Tx) error
	wire   WireOp // T == "" for ops without a wire form
	// wireV, when set, encodes wire.V on demand (see Wire).
	wireV func() []byte
	// guard marks an op that, when it fails with ErrFenced, ErrGap or
	// ErrApplied, has written nothing: as the first op of a request it refuses the request without
	// failing the batch transaction (see tryCommit).
	guard bool
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
	// move asks the committer to move the ingest log (MoveIngestLog); such
	// a request has no ops and is answered once the move committed.
	move bool
	// refused is set by tryCommit when the request's first op is a guard
	// that refused it: the request wrote nothing and gets this error once
	// the transaction of its batch has committed.
	refused error
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
// transaction. A request refused by the fence of its first op (ErrFenced
// from CheckEpoch or ClaimEpoch) fails alone without any retry.
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

// MoveIngestLog moves the telemetry records waiting in the ingest log (see
// ingestlog.go) to the telemetry bucket and returns once that committed.
// Reads never need it (they see both); retention, compaction and tests
// that look at the raw buckets do. On a read-only DB it returns
// ErrReadOnly; after Close, ErrClosed.
func (db *DB) MoveIngestLog(ctx context.Context) error {
	if db.readOnly {
		return ErrReadOnly
	}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	req := db.reqs.Get().(*request)
	req.move = true
	select {
	case db.queue <- req:
		db.mu.RUnlock()
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
		return ctx.Err() // the committer still owns req
	}
}

func newRequest() any { return &request{done: make(chan error, 1)} }

// putRequest returns a request whose result was received to the pool.
func (db *DB) putRequest(r *request) {
	clear(r.inline[:])
	r.ops = nil
	r.refused = nil
	r.move = false
	db.reqs.Put(r)
}

// run is the committer goroutine: it collects batches from the queue and
// commits them until the queue is closed and drained.
func (db *DB) run() {
	defer close(db.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]*request, 0, db.opts.MaxBatch)
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	for {
		var first *request
		var ok bool
		if db.ilog != nil && db.ilog.count() > 0 {
			// Records wait in the ingest log: move them if nothing comes.
			idle.Reset(cmp.Or(db.opts.logIdle, moveIdle))
			select {
			case first, ok = <-db.queue:
				idle.Stop()
			case <-idle.C:
				_ = db.moveLog() // logged; retried when idle again
				continue
			}
		} else {
			first, ok = <-db.queue
		}
		if !ok {
			if db.ilog != nil && db.ilog.count() > 0 {
				_ = db.moveLog()
			}
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
		// Moves are rare (MoveIngestLog): split only a batch that has one.
		writes, moves := batch, []*request(nil)
		if slices.ContainsFunc(batch, func(r *request) bool { return r.move }) {
			writes = nil
			for _, r := range batch {
				if r.move {
					moves = append(moves, r)
				} else {
					writes = append(writes, r)
				}
			}
		}
		if len(writes) > 0 {
			db.commitBatch(writes)
		}
		clear(batch) // drop references for the GC
		if moves != nil || (db.ilog != nil && (db.ilog.count() >= moveAt || !open)) {
			var err error
			if db.ilog != nil {
				err = db.moveLog()
			}
			for _, r := range moves {
				r.done <- err
			}
		}
		if !open {
			return
		}
	}
}

// commitBatch commits batch and answers every request in it.
func (db *DB) commitBatch(batch []*request) {
	for len(batch) > 0 {
		failed, err := db.tryCommit(batch)
		if err == nil {
			for _, r := range batch {
				r.done <- r.refused
			}
			return
		}
		if len(batch) == 1 {
			batch[0].done <- err
			return
		}
		if failed < 0 {
			db.log.Warn("group commit failed; retrying each request alone", "requests", len(batch), "err", err)
			for _, r := range batch {
				db.commitAlone(r)
			}
			return
		}
		db.log.Debug("request failed in a group commit; retrying the others", "requests", len(batch), "err", err)
		// The requests before the failing one applied cleanly on the same
		// state, so they are committed together again.
		db.commitBatch(batch[:failed])
		db.commitAlone(batch[failed])
		batch = batch[failed+1:]
	}
}

// commitAlone commits r in its own transaction and answers it.
func (db *DB) commitAlone(r *request) {
	_, err := db.tryCommit([]*request{r})
	if err == nil {
		err = r.refused
	}
	r.done <- err
}

// tryCommit applies batch in one transaction. On failure it returns the
// index of the request whose op failed, or -1 if the commit itself failed.
//
// A request whose first op is a guard (CheckEpoch, ClaimEpoch, ApplyEpoch)
// failing with ErrFenced, ErrGap, ErrApplied or ErrCopyAbandoned has written nothing, so it does not fail the transaction: its
// error goes to r.refused, its other ops are skipped and the batch goes on.
// A stale owner's writes thus cost no batch retry. A guard later in a
// request fails the transaction like any op (earlier ops of the request
// wrote), and the request is isolated by commitBatch's retry.
func (db *DB) tryCommit(batch []*request) (failed int, err error) {
	start := time.Now()
	failed, reqs, ops := -1, 0, 0
	if db.ilog != nil {
		db.ilog.begin()
	}
	err = db.bolt.Update(func(tx *bbolt.Tx) error {
		for i, r := range batch {
			r.refused = nil
			for j, op := range r.ops {
				if err := applyOp(tx, op); err != nil {
					err = fmt.Errorf("%v: %w", op, err)
					if j == 0 && op.guard && refusal(err) {
						r.refused = err
						break
					}
					failed = i
					return err
				}
			}
			if r.refused == nil {
				reqs++
				ops += len(r.ops)
			}
		}
		if reqs == 0 {
			return errAllRefused // nothing to write: skip the commit's fsync
		}
		return nil
	})
	if db.ilog != nil {
		if err == nil {
			db.ilog.commit()
		} else {
			db.ilog.begin() // rolled back: forget what it logged
		}
	}
	if errors.Is(err, errAllRefused) {
		return -1, nil
	}
	if err != nil {
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			err = ErrClosed
		}
		return failed, err
	}
	if db.opts.Observer != nil {
		db.opts.Observer(reqs, ops, time.Since(start))
	}
	return -1, nil
}

// errAllRefused rolls back a transaction in which every request was refused.
var errAllRefused = errors.New("every request refused")

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

// refusal reports whether err is a guard's refusal of its request (which
// wrote nothing) rather than a failure of the transaction.
func refusal(err error) bool {
	return errors.Is(err, ErrFenced) || errors.Is(err, ErrGap) || errors.Is(err, ErrApplied) || errors.Is(err, ErrCopyAbandoned)
}
