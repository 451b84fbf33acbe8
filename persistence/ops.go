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
	return Op{kind: "put twin", key: id, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktTwins).Put(k, v)
	}}
}

// DeleteTwin removes the twin document of id. Deleting an absent twin is not
// an error.
func DeleteTwin(id string) Op {
	k := []byte(id)
	return Op{kind: "delete twin", key: id, apply: func(tx *bbolt.Tx) error {
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
	const name = "put entity"
	for _, f := range []struct{ what, id string }{{"entity id", e.ID}, {"parent", e.Parent}, {"connectedVia", e.ConnectedVia}} {
		if err := checkNoNUL(f.what, f.id); err != nil {
			return errOp(name, err)
		}
	}
	v, err := json.Marshal(e)
	if err != nil {
		return errOp(name+" "+e.ID, err)
	}
	k := []byte(e.ID)
	return Op{kind: name, key: e.ID, apply: func(tx *bbolt.Tx) error {
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
func DeleteEntity(id string) Op {
	const name = "delete entity"
	if err := checkPrefixID("entity id", id); err != nil {
		return errOp(name, err)
	}
	k := []byte(id)
	return Op{kind: name, key: id, apply: func(tx *bbolt.Tx) error {
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
		return deleteWhere(contrib, []byte(id+"/"), nil)
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
	k := []byte(i.DeviceID)
	return Op{kind: "put identity", key: i.DeviceID, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktIdentities).Put(k, v)
	}}
}

// DeleteIdentity removes the identity of deviceID. Deleting an absent
// identity is not an error.
func DeleteIdentity(deviceID string) Op {
	k := []byte(deviceID)
	return Op{kind: "delete identity", key: deviceID, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktIdentities).Delete(k)
	}}
}

// AppendTelemetry appends r to the warm telemetry of deviceID under the key
// deviceID NUL be64(unix nanos of r.TS) be32(seq), where seq makes records
// with equal timestamps unique (0 for the first, then 1, 2, … in commit
// order). A zero r.TS means the time AppendTelemetry is called. deviceID must
// be non-empty and NUL-free, and r.TS within 1970..2262 (ErrInvalid).
func AppendTelemetry(deviceID string, r TelemetryRecord) Op {
	const name = "append telemetry"
	if err := checkPrefixID("device id", deviceID); err != nil {
		return errOp(name, err)
	}
	if r.TS.IsZero() {
		r.TS = time.Now()
	}
	if r.TS.Before(minTelemetryTS) || r.TS.After(maxTelemetryTS) {
		return errOp(name+" "+deviceID, fmt.Errorf("%w: timestamp %v outside 1970..2262", ErrInvalid, r.TS))
	}
	v, err := json.Marshal(r)
	if err != nil {
		return errOp(name+" "+deviceID, err)
	}
	ns := r.TS.UnixNano()
	return Op{kind: name, key: deviceID, apply: func(tx *bbolt.Tx) error {
		b := tx.Bucket(bktTelemetry)
		k := telemetryKey(deviceID, ns, 0)
		prefix := k[:len(k)-4]
		var seq uint32
		c := b.Cursor()
		for ck, _ := c.Seek(prefix); ck != nil && bytes.HasPrefix(ck, prefix); ck, _ = c.Next() {
			if _, _, s, ok := parseTelemetryKey(ck); ok {
				if s == ^uint32(0) {
					return fmt.Errorf("more than 2^32 records at %v", r.TS)
				}
				seq = s + 1
			}
		}
		return b.Put(telemetryKey(deviceID, ns, seq), v)
	}}
}

// PutInbox inserts m into the inbox of m.DeviceID, or replaces the message
// with the same ID (state changes). DeviceID and ID must be non-empty and
// NUL-free (ErrInvalid).
func PutInbox(m InboxMessage) Op {
	const name = "put inbox message"
	if err := checkPrefixID("device id", m.DeviceID); err != nil {
		return errOp(name, err)
	}
	if err := checkPrefixID("message id", m.ID); err != nil {
		return errOp(name, err)
	}
	v, err := json.Marshal(m)
	if err != nil {
		return errOp(name+" "+m.DeviceID+"/"+m.ID, err)
	}
	k := pairKey(m.DeviceID, m.ID)
	return Op{kind: name, key: m.DeviceID + "/" + m.ID, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket(bktInbox).Put(k, v)
	}}
}

// DeleteInbox removes message msgID from the inbox of deviceID. Deleting an
// absent message is not an error.
func DeleteInbox(deviceID, msgID string) Op {
	const name = "delete inbox message"
	if err := checkPrefixID("device id", deviceID); err != nil {
		return errOp(name, err)
	}
	if err := checkPrefixID("message id", msgID); err != nil {
		return errOp(name, err)
	}
	k := pairKey(deviceID, msgID)
	return Op{kind: name, key: deviceID + "/" + msgID, apply: func(tx *bbolt.Tx) error {
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
	return Op{kind: "put doc", bucket: b, key: key, apply: func(tx *bbolt.Tx) error {
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
	return Op{kind: "delete doc", bucket: b, key: key, apply: func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(b)).Delete(k)
	}}
}
