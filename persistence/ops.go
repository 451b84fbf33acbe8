package persistence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// PutTwin stores the twin document of id (opaque JSON), replacing any
// previous one.
func PutTwin(id string, doc []byte) Op {
	k, v := keyValue(id, doc)
	return Op{kind: "put twin", key: id, wire: WireOp{T: wireTwinPut, K: id, V: v}, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktTwins).Put(k, v)
	}}
}

// DeleteTwin removes the twin document of id. Deleting an absent twin is not
// an error.
func DeleteTwin(id string) Op {
	k := []byte(id)
	return Op{kind: "delete twin", key: id, wire: WireOp{T: wireTwinDel, K: id}, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktTwins).Delete(k)
	}}
}

// keyValue copies key and the caller's document into one allocation. A nil
// document becomes empty, which bbolt stores the same way inside and
// outside the transaction.
func keyValue(key string, doc []byte) (k, v []byte) {
	buf := make([]byte, len(key)+len(doc))
	n := copy(buf, key)
	copy(buf[n:], doc)
	return buf[:n:n], buf[n:]
}

// PutEntity stores e, replacing the previous version, and maintains the
// children index (Parent → ID) and the connectedVia index (ConnectedVia →
// ID): the entries of the previous version are removed, those of e added.
// The ID must be free of NUL bytes (ErrInvalid); an empty ID is refused by
// bbolt at commit. PutEntity checks no referential rule (the parent need not
// exist, cycles are not detected): that is the caller's job.
func PutEntity(e Entity) Op {
	if err := checkEntity(e); err != nil {
		return errOp(putEntityName, err)
	}
	v, err := json.Marshal(e)
	if err != nil {
		return errOp(putEntityName+" "+e.ID, err)
	}
	return putEntity(e, v)
}

const putEntityName = "put entity"

// checkEntity applies PutEntity's rules on IDs.
func checkEntity(e Entity) error {
	for _, f := range []struct{ what, id string }{{"entity id", e.ID}, {"parent", e.Parent}, {"connectedVia", e.ConnectedVia}} {
		if err := checkNoNUL(f.what, f.id); err != nil {
			return err
		}
	}
	return nil
}

// putEntity stores v, the JSON encoding of e (checked by checkEntity), and
// moves e's index entries. FromWire passes the bytes it received, so a
// replica stores exactly what the owner stored.
func putEntity(e Entity, v []byte) Op {
	const name = putEntityName
	k := []byte(e.ID)
	return Op{kind: name, key: e.ID, wire: WireOp{T: wireEntityPut, K: e.ID, V: v}, apply: func(tx *bbolt.Tx) error {
		ents := tx.Bucket(bktEntities)
		prev, found, err := decodeEntity(ents.Get(k))
		if err != nil {
			return fmt.Errorf("previous version: %w", err)
		}
		if err := ents.Put(k, v); err != nil {
			return err
		}
		if err := moveIndex(tx.Bucket(bktChildren), found, prev.Parent, e.Parent, e.ID); err != nil {
			return err
		}
		return moveIndex(tx.Bucket(bktVia), found, prev.ConnectedVia, e.ConnectedVia, e.ID)
	}}
}

// moveIndex moves the index entry of id from old to new (either may be "").
func moveIndex(b *bbolt.Bucket, hadOld bool, old, new, id string) error {
	if hadOld && old == new {
		return nil
	}
	if hadOld && old != "" {
		if err := b.Delete(pairKey(old, id)); err != nil {
			return err
		}
	}
	if new != "" {
		return b.Put(pairKey(new, id), []byte{})
	}
	return nil
}

// decodeEntity decodes a stored entity; found is false for nil raw.
func decodeEntity(raw []byte) (e Entity, found bool, err error) {
	if raw == nil {
		return Entity{}, false, nil
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return Entity{}, true, fmt.Errorf("decode entity: %w", err)
	}
	return e, true, nil
}

// DeleteEntity removes the entity id and everything keyed by it: its entries
// in the children and connectedVia indexes, its twin, identity, inbox and
// telemetry, and in BucketContrib the docs keyed "<id>/…" (contributions to
// it) and those it made to its parent and gateway (keys "<parent>/<id>", or
// more generally "<parent>/…/<id>", likewise for the gateway). Index entries
// that point at id from other entities (its children, devices connected via
// it) stay until those are re-put or deleted. An entity whose stored JSON is
// corrupt is still deleted, without the index cleanup. Deleting an absent id
// removes whatever else is keyed by it. All of it happens in the one
// transaction, so a device with a long telemetry history makes a large one.
// The epoch fence of id (see CheckEpoch) stays: fences must only grow, also
// across a delete and re-create of the same ID.
func DeleteEntity(id string) Op {
	const name = "delete entity"
	if err := checkPrefixID("entity id", id); err != nil {
		return errOp(name, err)
	}
	k := []byte(id)
	return Op{kind: name, key: id, wire: WireOp{T: wireEntityDel, K: id}, apply: func(tx *bbolt.Tx) error {
		ents := tx.Bucket(bktEntities)
		prev, found, derr := decodeEntity(ents.Get(k))
		if err := ents.Delete(k); err != nil {
			return err
		}
		contrib := tx.Bucket([]byte(BucketContrib))
		if found && derr == nil {
			if err := moveIndex(tx.Bucket(bktChildren), true, prev.Parent, "", id); err != nil {
				return err
			}
			if err := moveIndex(tx.Bucket(bktVia), true, prev.ConnectedVia, "", id); err != nil {
				return err
			}
			for _, up := range []string{prev.Parent, prev.ConnectedVia} {
				if up == "" {
					continue
				}
				if err := deleteWhere(contrib, []byte(up+"/"), func(k []byte) bool {
					return bytes.HasSuffix(k, []byte("/"+id))
				}); err != nil {
					return err
				}
			}
		}
		for _, b := range [][]byte{bktTwins, bktIdentities} {
			if err := tx.Bucket(b).Delete(k); err != nil {
				return err
			}
		}
		if err := deleteWhere(tx.Bucket(bktInbox), rangeStart(id), nil); err != nil {
			return err
		}
		if err := deleteWhere(tx.Bucket(bktTelemetry), rangeStart(id), nil); err != nil {
			return err
		}
		if err := dropLogged(tx, id); err != nil {
			return err
		}
		return deleteWhere(contrib, []byte(id+"/"), nil)
	}}
}

// ResetGrainData removes what a snapshot copy of grain id replaces here:
// its twin, inbox, outbox and warm telemetry (the entity, its contributions and its
// epoch fence stay). A claim that copies the newest owner's state puts it
// before the first page: records only this node held are writes of an
// older owner that were never acknowledged (the newest copy holds every
// acknowledged one), and kept beside the copy they would, for instance,
// store a retransmitted message twice under two timestamps. It has no wire
// form.
func ResetGrainData(id string) Op {
	const name = "reset grain data"
	if err := checkPrefixID("grain id", id); err != nil {
		return errOp(name, err)
	}
	k := []byte(id)
	return Op{kind: name, key: id, apply: func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bktTwins).Delete(k); err != nil {
			return err
		}
		if err := deleteWhere(tx.Bucket(bktInbox), rangeStart(id), nil); err != nil {
			return err
		}
		if err := deleteWhere(tx.Bucket(bktOutbox), rangeStart(id), nil); err != nil {
			return err
		}
		if err := deleteWhere(tx.Bucket(bktTelemetry), rangeStart(id), nil); err != nil {
			return err
		}
		return dropLogged(tx, id)
	}}
}

// deleteWhere deletes the keys of b that start with prefix and satisfy keep
// (nil = all). Keys are collected first: deleting under a moving cursor can
// skip keys.
func deleteWhere(b *bbolt.Bucket, prefix []byte, match func(k []byte) bool) error {
	var dels [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if match == nil || match(k) {
			dels = append(dels, bytes.Clone(k))
		}
	}
	for _, k := range dels {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// PutIdentity stores the identity of i.DeviceID, replacing any previous one.
func PutIdentity(i Identity) Op {
	v, err := json.Marshal(i)
	if err != nil {
		return errOp("put identity "+i.DeviceID, err)
	}
	return putIdentity(i.DeviceID, v)
}

// putIdentity stores v, the JSON encoding of deviceID's Identity.
func putIdentity(deviceID string, v []byte) Op {
	k := []byte(deviceID)
	return Op{kind: "put identity", key: deviceID, wire: WireOp{T: wireIdentityPut, K: deviceID, V: v}, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktIdentities).Put(k, v)
	}}
}

// DeleteIdentity removes the identity of deviceID. Deleting an absent
// identity is not an error.
func DeleteIdentity(deviceID string) Op {
	k := []byte(deviceID)
	return Op{kind: "delete identity", key: deviceID, wire: WireOp{T: wireIdentityDel, K: deviceID}, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktIdentities).Delete(k)
	}}
}

// AppendTelemetry appends r to the warm telemetry of deviceID under the key
// deviceID NUL be64(unix nanos of r.TS) be32(seq), where seq makes records
// with equal timestamps unique (0 for the first, then 1, 2, … in commit
// order). A zero r.TS means the time AppendTelemetry is called. deviceID must
// be non-empty and NUL-free, and r.TS within 1970..2262 (ErrInvalid).
//
// The op's wire form carries r with its final TS; a replica applies it
// idempotently (see FromWire), keeping one record per timestamp.
func AppendTelemetry(deviceID string, r TelemetryRecord) Op {
	const name = appendTelemetryName
	if err := checkPrefixID("device id", deviceID); err != nil {
		return errOp(name, err)
	}
	if r.TS.IsZero() {
		r.TS = time.Now()
	}
	if r.TS.Before(minTelemetryTS) || r.TS.After(maxTelemetryTS) {
		return errOp(name+" "+deviceID, fmt.Errorf("%w: timestamp %v outside 1970..2262", ErrInvalid, r.TS))
	}
	v, err := encodeRecord(r)
	if err != nil {
		return errOp(name+" "+deviceID, err)
	}
	ns := r.TS.UnixNano()
	// Members exchange records as JSON, encoded only when the op is shipped.
	wireV := func() []byte { b, _ := json.Marshal(r); return b }
	return Op{kind: name, key: deviceID, wire: WireOp{T: wireTelemetry, K: deviceID}, wireV: wireV, apply: func(tx *bbolt.Tx) error {
		b := tx.Bucket(bktTelemetry)
		seq, found, inBlock, err := seqAt(b, deviceID, ns)
		if err != nil {
			return fmt.Errorf("telemetry of %s at %v: %w", deviceID, r.TS, err)
		}
		if found {
			if seq == ^uint32(0) {
				return fmt.Errorf("more than 2^32 records at %v", r.TS)
			}
			seq++
		}
		k := telemetryKey(deviceID, ns, seq)
		l := logOf(tx)
		if l == nil {
			if inBlock { // beside it, the block's records would be out of order
				return packRecords(b, deviceID, []kv{{k, v}})
			}
			return b.Put(k, v)
		}
		for l.has(k) {
			if seq == ^uint32(0) {
				return fmt.Errorf("more than 2^32 records at %v", r.TS)
			}
			seq++
			k = telemetryKey(deviceID, ns, seq)
		}
		return l.stage(tx, k, v)
	}}
}

const appendTelemetryName = "append telemetry"

// appendTelemetryOnce is the telemetry op FromWire builds: it stores r, a
// record at unix nanos ns received as the JSON v, under seq 0 unless deviceID already has
// a record at ns, in which case it does nothing. Grains write strictly
// increasing timestamps per device, so an equal timestamp is the same record
// received again (a retried shipment, or a snapshot overlapping the
// replica's data).
func appendTelemetryOnce(deviceID string, ns int64, r TelemetryRecord, v []byte) Op {
	stored, err := encodeRecord(r)
	if err != nil {
		return errOp(appendTelemetryName+" "+deviceID, err)
	}
	return Op{kind: appendTelemetryName, key: deviceID, wire: WireOp{T: wireTelemetry, K: deviceID, V: v}, apply: func(tx *bbolt.Tx) error {
		v := stored
		b := tx.Bucket(bktTelemetry)
		k := telemetryKey(deviceID, ns, 0)
		_, found, inBlock, err := seqAt(b, deviceID, ns)
		if err != nil {
			return fmt.Errorf("telemetry of %s at %d: %w", deviceID, ns, err)
		}
		if found {
			return nil
		}
		l := logOf(tx)
		if l == nil {
			if inBlock {
				return packRecords(b, deviceID, []kv{{k, v}})
			}
			return b.Put(k, v)
		}
		if l.has(k) {
			return nil
		}
		return l.stage(tx, k, v)
	}}
}

// PutInbox inserts m into the inbox of m.DeviceID, or replaces the message
// with the same ID (state changes). DeviceID and ID must be non-empty and
// NUL-free (ErrInvalid).
func PutInbox(m InboxMessage) Op {
	const name = putInboxName
	if err := checkInbox(m.DeviceID, m.ID); err != nil {
		return errOp(name, err)
	}
	v, err := json.Marshal(m)
	if err != nil {
		return errOp(name+" "+m.DeviceID+"/"+m.ID, err)
	}
	return putInbox(m.DeviceID, m.ID, v)
}

const putInboxName = "put inbox message"

// checkInbox applies the rules of PutInbox and DeleteInbox on IDs.
func checkInbox(deviceID, msgID string) error {
	if err := checkPrefixID("device id", deviceID); err != nil {
		return err
	}
	return checkPrefixID("message id", msgID)
}

// putInbox stores v, the JSON of message msgID of deviceID's inbox.
func putInbox(deviceID, msgID string, v []byte) Op {
	k := pairKey(deviceID, msgID)
	return Op{kind: putInboxName, key: deviceID + "/" + msgID, wire: WireOp{T: wireInboxPut, K: deviceID, V: v}, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktInbox).Put(k, v)
	}}
}

// DeleteInbox removes message msgID from the inbox of deviceID. Deleting an
// absent message is not an error.
func DeleteInbox(deviceID, msgID string) Op {
	const name = "delete inbox message"
	if err := checkInbox(deviceID, msgID); err != nil {
		return errOp(name, err)
	}
	k := pairKey(deviceID, msgID)
	return Op{kind: name, key: deviceID + "/" + msgID, wire: WireOp{T: wireInboxDel, K: deviceID, K2: msgID}, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktInbox).Delete(k)
	}}
}

// PutDoc stores doc under key in the document bucket b, replacing any
// previous one. An unknown bucket is ErrInvalid; an empty key is refused by
// bbolt at commit.
func PutDoc(b Bucket, key string, doc []byte) Op {
	if !b.valid() {
		return errOp("put doc "+string(b)+"/"+key, fmt.Errorf("%w: unknown bucket %q", ErrInvalid, b))
	}
	k, v := keyValue(key, doc)
	return Op{kind: "put doc", bucket: b, key: key, wire: WireOp{T: wireDocPut, B: string(b), K: key, V: v}, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(b)).Put(k, v)
	}}
}

// DeleteDoc removes key from the document bucket b. Deleting an absent key
// is not an error; an unknown bucket is ErrInvalid.
func DeleteDoc(b Bucket, key string) Op {
	if !b.valid() {
		return errOp("delete doc "+string(b)+"/"+key, fmt.Errorf("%w: unknown bucket %q", ErrInvalid, b))
	}
	k := []byte(key)
	return Op{kind: "delete doc", bucket: b, key: key, wire: WireOp{T: wireDocDel, B: string(b), K: key}, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(b)).Delete(k)
	}}
}
