package persistence

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"

	"go.etcd.io/bbolt"
)

// The outbox (schema 9) holds the messages that a grain's commit routed to
// AMQP endpoints, until the endpoint's broker accepted them. It is
// grain-scoped data like the inbox: written by the grain in the commit
// that stores what the message reports, shipped to the grain's replicas
// with that commit, copied by GrainSnapshot, and removed by the grain (a
// commit of its own) when the message was delivered. So a member's death
// loses no routed message that was committed on the grain's replicas: the
// next owner finds it in its copy.
//
// DeleteEntity keeps a device's outbox: what the device sent before it was
// deleted, and the lifecycle event of its deletion, still go out.

// OutboxEntry is one message of a device's outbox.
type OutboxEntry struct {
	Device string
	// Seq orders the device's entries: its grain gives each a larger one
	// than the last it stored (never 0).
	Seq      uint64
	Endpoint string // where the message goes
	Data     []byte // the message, opaque to the store
}

// outboxKey is device NUL be64(seq).
func outboxKey(device string, seq uint64) []byte {
	k := make([]byte, len(device)+1+8)
	n := copy(k, device)
	binary.BigEndian.PutUint64(k[n+1:], seq)
	return k
}

// outboxSuffix is what outboxKey adds to the device ID.
const outboxSuffix = 1 + 8

// outboxValue is endpoint NUL data.
func outboxValue(endpoint string, data []byte) []byte {
	v := make([]byte, len(endpoint)+1+len(data))
	n := copy(v, endpoint)
	copy(v[n+1:], data)
	return v
}

// decodeOutbox splits a stored entry.
func decodeOutbox(k, v []byte) (OutboxEntry, error) {
	i := bytes.IndexByte(k, 0)
	j := bytes.IndexByte(v, 0)
	if i < 0 || len(k) != i+outboxSuffix || j <= 0 {
		return OutboxEntry{}, fmt.Errorf("%w: outbox entry %q", ErrInvalid, k)
	}
	return OutboxEntry{Device: string(k[:i]), Seq: binary.BigEndian.Uint64(k[i+1:]),
		Endpoint: string(v[:j]), Data: bytes.Clone(v[j+1:])}, nil
}

// checkOutbox applies PutOutbox's rules.
func checkOutbox(device string, seq uint64, endpoint string) error {
	if err := checkPrefixID("device id", device); err != nil {
		return err
	}
	if endpoint == "" {
		return fmt.Errorf("%w: empty endpoint", ErrInvalid)
	}
	if err := checkNoNUL("endpoint", endpoint); err != nil {
		return err
	}
	if seq == 0 {
		return fmt.Errorf("%w: outbox seq 0", ErrInvalid)
	}
	if len(device)+outboxSuffix > bbolt.MaxKeySize {
		return fmt.Errorf("%w: device id of %d bytes is too long", ErrInvalid, len(device))
	}
	return nil
}

const putOutboxName = "put outbox entry"

// PutOutbox stores e in its device's outbox (replacing the entry with the
// same Seq). Device must be non-empty and NUL-free, Endpoint non-empty and
// NUL-free, Seq non-zero (ErrInvalid).
func PutOutbox(e OutboxEntry) Op {
	if err := checkOutbox(e.Device, e.Seq, e.Endpoint); err != nil {
		return errOp(putOutboxName, err)
	}
	return putOutbox(e.Device, e.Seq, outboxValue(e.Endpoint, e.Data))
}

// putOutbox stores v, an encoded entry (outboxValue), under device and seq.
func putOutbox(device string, seq uint64, v []byte) Op {
	k := outboxKey(device, seq)
	return Op{kind: putOutboxName, key: device, wire: WireOp{T: wireOutboxPut, K: device, K2: strconv.FormatUint(seq, 10), V: v},
		apply: func(tx *bbolt.Tx) error { return tx.Bucket(bktOutbox).Put(k, v) }}
}

// DeleteOutbox removes entry seq of device's outbox. Deleting an absent
// entry is not an error.
func DeleteOutbox(device string, seq uint64) Op {
	const name = "delete outbox entry"
	if err := checkPrefixID("device id", device); err != nil {
		return errOp(name, err)
	}
	if len(device)+outboxSuffix > bbolt.MaxKeySize {
		return errOp(name, fmt.Errorf("%w: device id of %d bytes is too long", ErrInvalid, len(device)))
	}
	k := outboxKey(device, seq)
	return Op{kind: name, key: device, wire: WireOp{T: wireOutboxDel, K: device, K2: strconv.FormatUint(seq, 10)},
		apply: func(tx *bbolt.Tx) error { return tx.Bucket(bktOutbox).Delete(k) }}
}

// outboxFromWire rebuilds an outbox op received from another member.
func outboxFromWire(w WireOp) Op {
	name := fmt.Sprintf("wire op %q", w.T)
	seq, err := strconv.ParseUint(w.K2, 10, 64)
	if err != nil {
		return errOp(name, fmt.Errorf("%w: outbox seq %q", ErrInvalid, w.K2))
	}
	if w.T == wireOutboxDel {
		return DeleteOutbox(w.K, seq)
	}
	j := bytes.IndexByte(w.V, 0)
	if j <= 0 {
		return errOp(name, fmt.Errorf("%w: outbox value without its endpoint", ErrInvalid))
	}
	if err := checkOutbox(w.K, seq, string(w.V[:j])); err != nil {
		return errOp(name, err)
	}
	return putOutbox(w.K, seq, bytes.Clone(w.V))
}

// Outbox returns up to limit entries of device's outbox with a Seq above
// after, oldest first (limit <= 0: all).
func (db *DB) Outbox(device string, after uint64, limit int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	if checkPrefixID("device id", device) != nil || after == ^uint64(0) {
		return nil, nil
	}
	err := db.view(func(tx *bbolt.Tx) error {
		prefix := rangeStart(device)
		c := tx.Bucket(bktOutbox).Cursor()
		for k, v := c.Seek(outboxKey(device, after+1)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			e, err := decodeOutbox(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// OutboxLastSeq returns the largest Seq in device's outbox, 0 when it is
// empty.
func (db *DB) OutboxLastSeq(device string) (uint64, error) {
	if checkPrefixID("device id", device) != nil {
		return 0, nil
	}
	var last uint64
	err := db.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bktOutbox).Cursor()
		k, _ := c.Seek(rangeEnd(device))
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		if k != nil && bytes.HasPrefix(k, rangeStart(device)) && len(k) == len(device)+outboxSuffix {
			last = binary.BigEndian.Uint64(k[len(device)+1:])
		}
		return nil
	})
	return last, err
}

// ScanOutbox calls fn for every outbox entry of the node's store, in key
// order (device, then Seq), with the entry's endpoint and encoded size but
// not its data, in one read transaction; fn returns false to stop. device
// and endpoint are valid only during the call (fn must not keep them): a
// scan of a large outbox allocates nothing per entry.
func (db *DB) ScanOutbox(fn func(device []byte, seq uint64, endpoint []byte, size int) bool) error {
	return db.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bktOutbox).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			i, j := bytes.IndexByte(k, 0), bytes.IndexByte(v, 0)
			if i < 0 || len(k) != i+outboxSuffix || j <= 0 {
				continue // not an entry: nothing sends it
			}
			if !fn(k[:i], binary.BigEndian.Uint64(k[i+1:]), v[:j], len(v)) {
				return nil
			}
		}
		return nil
	})
}
