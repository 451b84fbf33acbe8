package persistence

import (
	"bytes"
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"
)

// WireOp is the serialisable form of an Op, for shipping commits to replicas.
// An Op is a closure and cannot cross the wire; its WireOp can, and FromWire
// turns it back into the same write on the receiving node.
//
// K, K2 and B are Go strings: an ID that is not valid UTF-8 does not survive
// encoding/json, which replaces the bad bytes with U+FFFD. V is the exact
// stored value, so a replica stores the same bytes as the owner.
type WireOp struct {
	T  string `json:"t"`            // "twin.put","twin.del","entity.put","entity.del","identity.put","identity.del","telemetry","inbox.put","inbox.del","doc.put","doc.del","outbox.put","outbox.del"
	B  string `json:"b,omitempty"`  // bucket, for doc ops
	K  string `json:"k"`            // id / device id / doc key
	K2 string `json:"k2,omitempty"` // message id for inbox.del, decimal seq for outbox ops
	V  []byte `json:"v,omitempty"`  // twin doc, doc bytes, or the JSON of the Entity / Identity / TelemetryRecord / InboxMessage
}

// The values of WireOp.T.
const (
	wireTwinPut     = "twin.put"
	wireTwinDel     = "twin.del"
	wireEntityPut   = "entity.put"
	wireEntityDel   = "entity.del"
	wireIdentityPut = "identity.put"
	wireIdentityDel = "identity.del"
	wireTelemetry   = "telemetry"
	wireInboxPut    = "inbox.put"
	wireInboxDel    = "inbox.del"
	wireDocPut      = "doc.put"
	wireDocDel      = "doc.del"
	wireOutboxPut   = "outbox.put"
	wireOutboxDel   = "outbox.del"
)

// Wire returns the wire form of op, so that a committed op can be shipped to
// the replicas that must apply it too. ok is false for ops that have none:
// the epoch ops (CheckEpoch, ClaimEpoch guard this node's own writes and are
// not replicated), ops that could not be built, and the zero Op. V is a copy
// the caller may keep or modify; an empty V is nil, as after a JSON round
// trip.
func (op Op) Wire() (w WireOp, ok bool) {
	if op.wire.T == "" || op.err != nil {
		return WireOp{}, false
	}
	w = op.wire
	w.V = nil
	switch {
	case op.wireV != nil:
		w.V = op.wireV()
	case len(op.wire.V) > 0:
		w.V = bytes.Clone(op.wire.V)
	}
	return w, true
}

// Catalog reports whether op writes cluster-wide catalog data (entity.*,
// identity.* and doc.* ops), which every member replicates, as opposed to
// grain-scoped data (twin, telemetry, inbox), which only the grain's
// replicas hold. It is false for ops without a wire form (epoch ops, ops
// that could not be built). Note that DeleteEntity, a catalog op, also
// removes the grain-scoped data of the ID wherever it is applied.
func (op Op) Catalog() bool {
	switch op.wire.T {
	case wireEntityPut, wireEntityDel, wireIdentityPut, wireIdentityDel, wireDocPut, wireDocDel:
		return true
	}
	return false
}

// FromWire rebuilds the Op of w on a replica, with the same checks as the
// constructor of its type; Commit applies it like a local op and it stores
// the same bytes as the original. Invalid input (an unknown T, an empty or
// oversized key, a V that does not decode, or whose ID differs from K, a
// telemetry timestamp outside 1970..2262) gives an Op that makes Commit fail
// with ErrInvalid before anything is queued. Fields that T does not use are
// ignored. FromWire copies V.
//
// Unlike AppendTelemetry, a telemetry op from FromWire is idempotent: if the
// device already has a record with exactly the same timestamp (unix ns) it
// does nothing, because a replica may receive a record twice (a retried
// shipment, a snapshot overlapping what it has) and grains write strictly
// increasing timestamps per device.
func FromWire(w WireOp) Op {
	name := fmt.Sprintf("wire op %q", w.T)
	if err := checkWire(w); err != nil {
		return errOp(name, err)
	}
	v := bytes.Clone(w.V)
	switch w.T {
	case wireTwinPut:
		return PutTwin(w.K, v)
	case wireTwinDel:
		return DeleteTwin(w.K)
	case wireEntityDel:
		return DeleteEntity(w.K)
	case wireIdentityDel:
		return DeleteIdentity(w.K)
	case wireInboxDel:
		return DeleteInbox(w.K, w.K2)
	case wireDocPut:
		return PutDoc(Bucket(w.B), w.K, v)
	case wireDocDel:
		return DeleteDoc(Bucket(w.B), w.K)
	case wireOutboxPut, wireOutboxDel:
		return outboxFromWire(w)
	case wireEntityPut:
		var e Entity
		if err := decodeWire(w, &e); err != nil {
			return errOp(name, err)
		}
		if err := checkEntity(e); err != nil {
			return errOp(name, err)
		}
		if err := checkKeyLen(e.ID, e.Parent, e.ConnectedVia); err != nil {
			return errOp(name, err)
		}
		return putEntity(e, v)
	case wireIdentityPut:
		var i Identity
		if err := decodeWire(w, &i); err != nil {
			return errOp(name, err)
		}
		return putIdentity(i.DeviceID, v)
	case wireInboxPut:
		var m InboxMessage
		if err := decodeWire(w, &m); err != nil {
			return errOp(name, err)
		}
		if err := checkInbox(m.DeviceID, m.ID); err != nil {
			return errOp(name, err)
		}
		if err := checkKeyLen(m.DeviceID, m.ID); err != nil {
			return errOp(name, err)
		}
		return putInbox(m.DeviceID, m.ID, v)
	case wireTelemetry:
		if err := checkPrefixID("device id", w.K); err != nil {
			return errOp(name, err)
		}
		var r TelemetryRecord
		if err := decodeWire(w, &r); err != nil {
			return errOp(name, err)
		}
		// A zero TS is refused here: AppendTelemetry would replace it by
		// the local clock, which differs on every replica.
		if r.TS.Before(minTelemetryTS) || r.TS.After(maxTelemetryTS) {
			return errOp(name, fmt.Errorf("%w: timestamp %v outside 1970..2262", ErrInvalid, r.TS))
		}
		return appendTelemetryOnce(w.K, r.TS.UnixNano(), r, v)
	}
	return errOp("wire op", fmt.Errorf("%w: unknown type %q", ErrInvalid, w.T))
}

// checkWire checks what all wire ops share: a non-empty K that fits a
// bbolt key with the longest suffix an op adds to it, and a V bbolt can
// store.
func checkWire(w WireOp) error {
	if w.K == "" {
		return fmt.Errorf("%w: empty k", ErrInvalid)
	}
	if w.T == wireInboxDel && w.K2 == "" {
		return fmt.Errorf("%w: empty k2", ErrInvalid)
	}
	if len(w.V) > bbolt.MaxValueSize {
		return fmt.Errorf("%w: v of %d bytes exceeds bbolt's %d", ErrInvalid, len(w.V), bbolt.MaxValueSize)
	}
	switch w.T {
	case wireTelemetry:
		if len(w.K)+telemetrySuffix > bbolt.MaxKeySize {
			return fmt.Errorf("%w: device id of %d bytes is too long", ErrInvalid, len(w.K))
		}
	case wireInboxDel:
		return checkKeyLen(w.K, w.K2)
	case wireOutboxPut, wireOutboxDel:
		if len(w.K)+outboxSuffix > bbolt.MaxKeySize {
			return fmt.Errorf("%w: device id of %d bytes is too long", ErrInvalid, len(w.K))
		}
	default:
		return checkKeyLen(w.K)
	}
	return nil
}

// checkKeyLen refuses an id that is too long for bbolt, alone or in a pair
// key "ref NUL id" with any of refs (empty refs are not stored).
func checkKeyLen(id string, refs ...string) error {
	n := len(id)
	for _, r := range refs {
		if r != "" {
			n = max(n, len(r)+1+len(id))
		}
	}
	if n > bbolt.MaxKeySize {
		return fmt.Errorf("%w: key of %d bytes exceeds bbolt's %d", ErrInvalid, n, bbolt.MaxKeySize)
	}
	return nil
}

// decodeWire decodes w.V into dst (one of the value types) and checks that
// the ID it holds, if any, is w.K.
func decodeWire(w WireOp, dst any) error {
	if err := json.Unmarshal(w.V, dst); err != nil {
		return fmt.Errorf("%w: decode v: %w", ErrInvalid, err)
	}
	var id string
	switch d := dst.(type) {
	case *Entity:
		id = d.ID
	case *Identity:
		id = d.DeviceID
	case *InboxMessage:
		id = d.DeviceID
	case *TelemetryRecord:
		return nil // the device ID is only in K
	}
	if id != w.K {
		return fmt.Errorf("%w: k %q differs from the id %q in v", ErrInvalid, w.K, id)
	}
	return nil
}
