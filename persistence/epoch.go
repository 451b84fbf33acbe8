package persistence

import (
	"encoding/binary"
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
// orders the copies of the members, Wrote first. Seq numbers the writes of
// epoch Wrote: the owner counts them (CheckEpochReport), a replica takes
// the owner's number with each write (ApplyEpoch) and refuses one that does
// not follow its copy, and a copy of another member's data takes the
// source's once every page landed (CopiedEpoch). So a copy holds every
// write up to its (Wrote, Seq), even when the writes left the twin's
// version alone. A record stored before Seq existed reads as Seq 0.
//
// Copy is the token of a copy of another member's data that is being
// written here page by page (StartCopyEpoch set it, CopiedEpoch clears
// it): a page of any other copy is refused (ContinueCopyEpoch), so that
// two copies sent at once by two members never mix their pages.
type Epoch struct {
	Fence uint64 `json:"fence"`          // highest epoch claimed or written here
	Wrote uint64 `json:"wrote"`          // epoch of the newest write held here
	Seq   uint64 `json:"seq,omitempty"`  // writes of epoch Wrote held here, all of 1..Seq
	Copy  uint64 `json:"copy,omitempty"` // token of the copy under way here, 0 if none
}

// Holds reports whether a copy at e holds every write of a copy at o:
// (Wrote, Seq) at least o's, Wrote first.
func (e Epoch) Holds(o Epoch) bool {
	return e.Wrote > o.Wrote || (e.Wrote == o.Wrote && e.Seq >= o.Seq)
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
// is the owner's guard; a replica applies the owner's writes with
// ApplyEpoch, which takes the owner's Seq instead of counting its own.
func CheckEpoch(id string, epoch uint64) Op {
	return CheckEpochReport(id, epoch, nil)
}

// CheckEpochReport is CheckEpoch that also calls report, inside the
// transaction, with the Epoch before and after the write, so that the
// owner can ship the write with its place in the epoch's sequence
// (ApplyEpoch). report may run more than once (a batch retried); the last
// call is the one committed.
func CheckEpochReport(id string, epoch uint64, report func(prev, next Epoch)) Op {
	return epochOp("check epoch", id, func(cur Epoch) (Epoch, error) {
		if cur.Fence > epoch {
			return cur, fmt.Errorf("grain %s: write with epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		}
		seq := uint64(1)
		if cur.Wrote == epoch {
			seq = cur.Seq + 1
		}
		// Copy is left at zero: the owner's own write ends a copy that was
		// under way here, whose later pages are then refused.
		next := Epoch{Fence: epoch, Wrote: epoch, Seq: seq}
		if report != nil {
			report(cur, next)
		}
		return next, nil
	})
}

// ApplyEpoch guards a write of grain id shipped by its owner (epoch) to a
// replica. The owner's CheckEpochReport gave the write's place: prev, the
// owner's (Wrote, Seq) before it, and seq, its Seq after. The write is
// applied only on the copy it was made on, so that every copy holds all the
// writes up to its (Wrote, Seq) and the copy with the highest (Wrote, Seq)
// holds every write the others hold — the order a new owner relies on. So:
// a Fence above epoch is ErrFenced; a copy that already holds the write
// (Wrote == epoch, Seq >= seq) is ErrApplied (nothing to do; the write is
// there); a copy whose (Wrote, Seq) is not prev is ErrGap (it missed
// writes: a replica that was skipped while it did not answer, or one the
// claim did not bring up to date); otherwise the write is applied and the
// copy takes the owner's (Wrote, Seq).
func ApplyEpoch(id string, epoch uint64, prev Epoch, seq uint64) Op {
	return epochOp("apply epoch", id, func(cur Epoch) (Epoch, error) {
		switch {
		case cur.Fence > epoch:
			return cur, fmt.Errorf("grain %s: write with epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		case cur.Copy != 0:
			return cur, fmt.Errorf("grain %s: write %d of epoch %d while a copy is under way: %w", id, seq, epoch, ErrGap)
		case cur.Wrote == epoch && cur.Seq >= seq:
			return cur, fmt.Errorf("grain %s: write %d of epoch %d: %w", id, seq, epoch, ErrApplied)
		case cur.Wrote != prev.Wrote || cur.Seq != prev.Seq:
			return cur, fmt.Errorf("grain %s: write %d of epoch %d follows %d/%d, this copy is at %d/%d: %w",
				id, seq, epoch, prev.Wrote, prev.Seq, cur.Wrote, cur.Seq, ErrGap)
		}
		return Epoch{Fence: epoch, Wrote: epoch, Seq: seq}, nil
	})
}

// FenceEpoch guards ops of grain id that are not a step in its sequence of
// writes — a page of a copy (CopiedEpoch ends it) or the catalog part of a write sent to a member that is not a replica: a
// Fence above epoch is ErrFenced, otherwise the Fence is raised to epoch
// and Wrote and Seq are left alone.
func FenceEpoch(id string, epoch uint64) Op {
	return epochOp("fence epoch", id, func(cur Epoch) (Epoch, error) {
		if cur.Fence > epoch {
			return cur, fmt.Errorf("grain %s: write with epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		}
		cur.Fence = epoch
		return cur, nil
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

// StartCopyEpoch guards the first page of a copy of grain id sent by a
// member whose fence is epoch and whose copy stands at from: a Fence above
// epoch is ErrFenced; a copy here at least as new as from (Wrote, then Seq)
// is ErrApplied — the copy would replace newer data with older, as when a
// member re-replicating what it holds meets the owner that wrote since;
// otherwise the Fence is raised to epoch and the copy's token is recorded
// (a copy started before is abandoned: its next page is refused). Follow
// it with ResetGrainData and EmptyCopyEpoch, the later pages with
// ContinueCopyEpoch, and end the copy with CopiedEpoch.
func StartCopyEpoch(id string, epoch uint64, from Epoch, token uint64) Op {
	return epochOp("start copy epoch", id, func(cur Epoch) (Epoch, error) {
		switch {
		case cur.Fence > epoch:
			return cur, fmt.Errorf("grain %s: copy with epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		case cur.Holds(from):
			return cur, fmt.Errorf("grain %s: copy of %d/%d, this copy is at %d/%d: %w", id, from.Wrote, from.Seq, cur.Wrote, cur.Seq, ErrApplied)
		}
		cur.Fence, cur.Copy = epoch, token
		return cur, nil
	})
}

// BeginCopyEpoch is StartCopyEpoch for a copy this node decided to take
// (a new owner pulling the newest copy): it refuses only a Fence above
// epoch, whatever this node holds.
func BeginCopyEpoch(id string, epoch uint64, token uint64) Op {
	return epochOp("begin copy epoch", id, func(cur Epoch) (Epoch, error) {
		if cur.Fence > epoch {
			return cur, fmt.Errorf("grain %s: copy with epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		}
		cur.Fence, cur.Copy = epoch, token
		return cur, nil
	})
}

// ContinueCopyEpoch guards a page of a copy after the first: a Fence above
// epoch is ErrFenced; a copy other than token under way here (another
// member started one since, or an owner's write ended it) is
// ErrCopyAbandoned; otherwise the Fence is raised to epoch.
func ContinueCopyEpoch(id string, epoch uint64, token uint64) Op {
	return epochOp("continue copy epoch", id, func(cur Epoch) (Epoch, error) {
		switch {
		case cur.Fence > epoch:
			return cur, fmt.Errorf("grain %s: copy with epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		case cur.Copy != token:
			return cur, fmt.Errorf("grain %s: page of copy %x, copy under way is %x: %w", id, token, cur.Copy, ErrCopyAbandoned)
		}
		cur.Fence = epoch
		return cur, nil
	})
}

// CopiedEpoch records that this node's copy of grain id is now a copy of
// a source whose copy stood at src (its Wrote and Seq): the last op of a
// copy, after every page of it was written. It never lowers the copy's
// (Wrote, Seq) — a copy that acknowledged a write must go on claiming it —
// and raises the Fence to src.Wrote if it is lower (Fence >= Wrote). Start a
// copy with ResetGrainData and EmptyCopyEpoch, so that a copy cut off half
// way claims nothing.
func CopiedEpoch(id string, src Epoch) Op {
	return epochOp("copied epoch", id, func(cur Epoch) (Epoch, error) {
		cur.Copy = 0
		if cur.Holds(src) {
			return cur, nil
		}
		return Epoch{Fence: max(cur.Fence, src.Wrote), Wrote: src.Wrote, Seq: src.Seq}, nil
	})
}

// AdoptEpoch makes this node's copy of grain id, standing at from (its
// Wrote and Seq), the starting copy of a new owner's epoch: it becomes
// (Wrote epoch, Seq 0), so the owner's first write follows it (Seq 1), and
// the copy now outranks every write of an epoch older than the claim.
// Without it a copy the claim took and served keeps its writer's epoch,
// and a stale activation whose epoch lies between the two could store a
// write locally that a later claim ranks above what was served. A Fence
// above epoch is ErrFenced; a copy already adopted by epoch is ErrApplied;
// any other copy than from (it changed since it was reported, or a copy is
// under way) is ErrGap: the owner sends it the whole copy instead.
func AdoptEpoch(id string, epoch uint64, from Epoch) Op {
	return epochOp("adopt epoch", id, func(cur Epoch) (Epoch, error) {
		switch {
		case cur.Fence > epoch:
			return cur, fmt.Errorf("grain %s: adoption by epoch %d, fence is %d: %w", id, epoch, cur.Fence, ErrFenced)
		case cur.Copy == 0 && cur.Wrote == epoch && cur.Seq == 0:
			return cur, fmt.Errorf("grain %s: copy already adopted by epoch %d: %w", id, epoch, ErrApplied)
		case cur.Copy != 0 || cur.Wrote != from.Wrote || cur.Seq != from.Seq:
			return cur, fmt.Errorf("grain %s: adoption of %d/%d, this copy is at %d/%d: %w", id, from.Wrote, from.Seq, cur.Wrote, cur.Seq, ErrGap)
		}
		return Epoch{Fence: epoch, Wrote: epoch}, nil
	})
}

// EmptyCopyEpoch sets this node's Wrote and Seq of grain id to zero, the
// copy of nothing, leaving the Fence and the copy's token: the first op of a copy, after
// ResetGrainData, so that until CopiedEpoch ends it the copy is never
// taken for a complete one.
func EmptyCopyEpoch(id string) Op {
	return epochOp("empty copy epoch", id, func(cur Epoch) (Epoch, error) {
		return Epoch{Fence: cur.Fence, Copy: cur.Copy}, nil
	})
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
	return b.Put(k, encodeEpoch(nxt))
}

// epochBinary marks the binary form of a stored Epoch: the byte, then
// Fence, Wrote, Seq and Copy as uvarints. Every write of a grain rewrites
// its Epoch, and encoding/json cost 3 % of the node's CPU on the ingest
// path; files written before hold JSON, which starts with '{' and is still
// read.
const epochBinary = 1

func encodeEpoch(e Epoch) []byte {
	b := make([]byte, 1, 1+4*binary.MaxVarintLen64)
	b[0] = epochBinary
	b = binary.AppendUvarint(b, e.Fence)
	b = binary.AppendUvarint(b, e.Wrote)
	b = binary.AppendUvarint(b, e.Seq)
	return binary.AppendUvarint(b, e.Copy)
}

// decodeEpoch decodes a stored Epoch, binary or JSON; nil raw is the zero
// Epoch.
func decodeEpoch(raw []byte) (Epoch, error) {
	var e Epoch
	switch {
	case raw == nil:
		return e, nil
	case raw[0] == epochBinary:
		rest := raw[1:]
		for _, f := range []*uint64{&e.Fence, &e.Wrote, &e.Seq, &e.Copy} {
			v, n := binary.Uvarint(rest)
			if n <= 0 {
				return Epoch{}, fmt.Errorf("decode epoch: %w: truncated or overlong varint", ErrInvalid)
			}
			*f, rest = v, rest[n:]
		}
		if len(rest) != 0 {
			return Epoch{}, fmt.Errorf("decode epoch: %w: %d trailing bytes", ErrInvalid, len(rest))
		}
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
