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
type Epoch struct {
	Fence uint64 `json:"fence"` // highest epoch claimed or written here
	Wrote uint64 `json:"wrote"` // epoch of the last write accepted here
}

// CheckEpoch guards the other ops of a Commit with the writer's owner
// epoch: inside the commit's transaction, if the stored Fence of grain id is
// above epoch, it fails with an error wrapping ErrFenced (naming id and both
// epochs) and, the ops of a Commit being atomic, nothing of the request is
// written; otherwise it stores Fence = Wrote = epoch. Put it first in the
// Commit: a refused request then costs its batch nothing, whereas a guard
// after other ops fails the batch transaction and costs it a retry. An
// empty id is ErrInvalid. CheckEpoch has no wire form: each node fences its
// own writes, including those it applies for a replicated grain.
func CheckEpoch(id string, epoch uint64) Op {
	return epochOp("check epoch", id, func(cur Epoch) (Epoch, error) {
		if cur.Fence > epoch {
			return cur, fmt.Errorf("grain %s: write with epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		}
		return Epoch{Fence: epoch, Wrote: epoch}, nil
	})
}

// ClaimEpoch raises the fence of grain id to epoch when a new owner takes
// the grain over, so that from then on the writes of older owners are
// refused here (by CheckEpoch). If the stored Fence is already epoch or
// more, it fails with an error wrapping ErrFenced: someone claimed that
// epoch or a newer one first. Wrote is unchanged. Epochs start at 1 (the
// fence of an unknown grain is 0, so claiming 0 always fails). An empty id
// is ErrInvalid.
func ClaimEpoch(id string, epoch uint64) Op {
	return epochOp("claim epoch", id, func(cur Epoch) (Epoch, error) {
		if cur.Fence >= epoch {
			return cur, fmt.Errorf("grain %s: claim of epoch %d, fence is already %d: %w", id, epoch, cur.Fence, ErrFenced)
		}
		return Epoch{Fence: epoch, Wrote: cur.Wrote}, nil
	})
}

// epochOp reads id's Epoch, lets next compute the new one (or refuse), and
// stores it if it changed. It is a guard: a refusal writes nothing.
func epochOp(name, id string, next func(Epoch) (Epoch, error)) Op {
	if id == "" {
		return errOp(name, fmt.Errorf("%w: empty grain id", ErrInvalid))
	}
	k := []byte(id)
	return Op{kind: name, key: id, guard: true, apply: func(tx *bbolt.Tx) error {
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
	}}
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
