package persistence

import (
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"
)

// Epoch is the fencing state of one grain identity on this node.
// Ownership of a grain moves between nodes with increasing epochs; the
// fence stored here is what lets this node refuse the writes of an owner
// that has not yet learnt it was replaced.
//
// Wrote and Seq tell how new this node's copy of the grain is: (Wrote, Seq)
// orders the copies of the members, Wrote first. Seq counts the fenced
// writes of epoch Wrote applied here (CheckEpoch), so that of two copies
// written in the same epoch the one that missed writes has the lower Seq,
// even when the writes left the twin's version alone. A snapshot copy
// (GrainSnapshot) sets the copier's Wrote and Seq to the source's. A record
// stored before Seq existed reads as Seq 0.
type Epoch struct {
	Fence uint64 `json:"fence"`         // highest epoch claimed or written here
	Wrote uint64 `json:"wrote"`         // epoch of the newest write held here
	Seq   uint64 `json:"seq,omitempty"` // fenced writes of epoch Wrote held here
}

// CheckEpoch guards the other ops of a Commit with the writer's owner
// epoch: inside the commit's transaction, if the stored Fence of grain id is
// above epoch, it fails with an error wrapping ErrFenced (naming id and both
// epochs) and, the ops of a Commit being atomic, nothing of the request is
// written; otherwise it stores Fence = Wrote = epoch and counts the write in
// Seq: Seq+1 if Wrote was already epoch, else 1 (the first write of a new
// epoch). Put it first in the Commit: a refused request then costs its
// batch nothing, whereas a guard after other ops fails the batch
// transaction and costs it a retry. An empty id is ErrInvalid. CheckEpoch
// has no wire form: each node fences and counts its own writes, including
// those it applies for a replicated grain, so a replica that applied every
// shipped write of an epoch has the owner's Seq.
func CheckEpoch(id string, epoch uint64) Op {
	return epochOp("check epoch", id, func(cur Epoch) (Epoch, error) {
		if cur.Fence > epoch {
			return cur, fmt.Errorf("grain %s: write with epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		}
		seq := uint64(1)
		if cur.Wrote == epoch {
			seq = cur.Seq + 1
		}
		return Epoch{Fence: epoch, Wrote: epoch, Seq: seq}, nil
	})
}

// ClaimEpoch raises the fence of grain id to epoch when a new owner takes
// the grain over, so that from then on the writes of older owners are
// refused here (by CheckEpoch). If the stored Fence is already epoch or
// more, it fails with an error wrapping ErrFenced: someone claimed that
// epoch or a newer one first. Wrote and Seq are unchanged. Epochs start at
// 1 (the fence of an unknown grain is 0, so claiming 0 always fails). An
// empty id is ErrInvalid.
func ClaimEpoch(id string, epoch uint64) Op {
	return epochOp("claim epoch", id, func(cur Epoch) (Epoch, error) {
		if cur.Fence >= epoch {
			return cur, fmt.Errorf("grain %s: claim of epoch %d, fence is already %d: %w", id, epoch, cur.Fence, ErrFenced)
		}
		cur.Fence = epoch
		return cur, nil
	})
}

// withSourceEpoch makes op, an op of a snapshot page of grain id, also set
// this node's Wrote and Seq of id to src's (the copy is now as new as its
// source), raising the Fence to src.Wrote if it is lower so that Fence >=
// Wrote holds. The Fence is otherwise per node and is not copied. A page
// is committed after the copier's CheckEpoch, which counted the copy as a
// write; this undoes that, so the copies of a claim stay in step.
func withSourceEpoch(op Op, id string, src Epoch) Op {
	if op.err != nil {
		return op
	}
	e := Epoch{Wrote: src.Wrote, Seq: src.Seq}
	inner := op.apply
	op.apply = func(tx *bbolt.Tx) error {
		if err := inner(tx); err != nil {
			return err
		}
		return updateEpoch(tx, id, func(cur Epoch) (Epoch, error) {
			return Epoch{Fence: max(cur.Fence, e.Wrote), Wrote: e.Wrote, Seq: e.Seq}, nil
		})
	}
	op.wire.E = &e
	return op
}

// epochOp reads id's Epoch, lets next compute the new one (or refuse), and
// stores it if it changed. It is a guard: a refusal writes nothing.
func epochOp(name, id string, next func(Epoch) (Epoch, error)) Op {
	if id == "" {
		return errOp(name, fmt.Errorf("%w: empty grain id", ErrInvalid))
	}
	return Op{kind: name, key: id, guard: true, apply: func(tx *bbolt.Tx) error {
		return updateEpoch(tx, id, next)
	}}
}

// updateEpoch reads id's Epoch in tx, lets next compute the new one (or
// refuse), and stores it if it changed.
func updateEpoch(tx *bbolt.Tx, id string, next func(Epoch) (Epoch, error)) error {
	k := []byte(id)
	b := tx.Bucket(bktEpochs)
	cur, err := decodeEpoch(b.Get(k))
	if err != nil {
		return fmt.Errorf("grain %s: %w", id, err)
	}
	nxt, err := next(cur)
	if err != nil || nxt == cur {
		return err
	}
	v, err := json.Marshal(nxt)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

// decodeEpoch decodes a stored Epoch; nil raw is the zero Epoch.
func decodeEpoch(raw []byte) (Epoch, error) {
	var e Epoch
	if raw == nil {
		return e, nil
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return Epoch{}, fmt.Errorf("decode epoch: %w", err)
	}
	return e, nil
}

// GetEpoch returns the fencing state of grain id on this node, so that a
// node can tell which epoch it last accepted; a grain never fenced here has
// the zero Epoch (and a nil error).
func (db *DB) GetEpoch(id string) (Epoch, error) {
	var e Epoch
	err := db.view(func(tx *bbolt.Tx) error {
		var err error
		if e, err = decodeEpoch(tx.Bucket(bktEpochs).Get([]byte(id))); err != nil {
			return fmt.Errorf("epoch %s: %w", id, err)
		}
		return nil
	})
	return e, err
}
