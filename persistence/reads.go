package persistence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"go.etcd.io/bbolt"
)

// All reads run in their own bbolt read transaction: they are safe from many
// goroutines, see every Commit that returned before they started, and return
// slices and maps the caller owns. Lists are never nil.

// GetTwin returns a copy of the twin document of id, or ErrNotFound.
func (db *DB) GetTwin(id string) ([]byte, error) {
	var out []byte
	err := db.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bktTwins).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("twin %s: %w", id, ErrNotFound)
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// CountTwins returns the number of stored twin documents. It walks the twins
// bucket's pages: cheap, but not free on a large file.
func (db *DB) CountTwins() (int, error) {
	var n int
	err := db.view(func(tx *bbolt.Tx) error {
		n = tx.Bucket(bktTwins).Stats().KeyN
		return nil
	})
	return n, err
}

// GetEntity returns the entity id, or ErrNotFound.
func (db *DB) GetEntity(id string) (Entity, error) {
	var e Entity
	err := db.view(func(tx *bbolt.Tx) error {
		var err error
		e, err = getEntity(tx, id)
		return err
	})
	return e, err
}

func getEntity(tx *bbolt.Tx, id string) (Entity, error) {
	e, found, err := decodeEntity(tx.Bucket(bktEntities).Get([]byte(id)))
	if err != nil {
		return Entity{}, fmt.Errorf("entity %s: %w", id, err)
	}
	if !found {
		return Entity{}, fmt.Errorf("entity %s: %w", id, ErrNotFound)
	}
	return e, nil
}

// children returns the direct children of parent in ID order, read through
// the index; stale index entries (entity gone or re-parented) are skipped.
func children(tx *bbolt.Tx, parent string) ([]Entity, error) {
	out := []Entity{}
	if parent == "" {
		return out, nil
	}
	ents := tx.Bucket(bktEntities)
	prefix := rangeStart(parent)
	c := tx.Bucket(bktChildren).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		id := k[len(prefix):]
		e, found, err := decodeEntity(ents.Get(id))
		if err != nil {
			return nil, fmt.Errorf("child %s of %s: %w", id, parent, err)
		}
		if found && e.Parent == parent {
			out = append(out, e)
		}
	}
	return out, nil
}

// Children returns the direct children of parent (entities whose Parent is
// parent), in ID order. An unknown parent has none.
func (db *DB) Children(parent string) ([]Entity, error) {
	var out []Entity
	err := db.view(func(tx *bbolt.Tx) (err error) {
		out, err = children(tx, parent)
		return err
	})
	return out, err
}

// Subtree returns root and everything below it in the `contains` hierarchy:
// root first, then breadth-first, each level's children in ID order. All of
// it is read in one transaction. An unknown root is ErrNotFound; a cycle in
// the stored parents is cut (each entity appears once).
func (db *DB) Subtree(root string) ([]Entity, error) {
	var out []Entity
	err := db.view(func(tx *bbolt.Tx) error {
		e, err := getEntity(tx, root)
		if err != nil {
			return err
		}
		out = []Entity{e}
		seen := map[string]bool{root: true}
		for i := 0; i < len(out); i++ {
			kids, err := children(tx, out[i].ID)
			if err != nil {
				return err
			}
			for _, k := range kids {
				if !seen[k.ID] {
					seen[k.ID] = true
					out = append(out, k)
				}
			}
		}
		return nil
	})
	return out, err
}

// ConnectedVia returns the IDs of the entities whose ConnectedVia is
// gatewayID, in ID order.
func (db *DB) ConnectedVia(gatewayID string) ([]string, error) {
	out := []string{}
	if gatewayID == "" {
		return out, nil
	}
	err := db.view(func(tx *bbolt.Tx) error {
		ents := tx.Bucket(bktEntities)
		prefix := rangeStart(gatewayID)
		c := tx.Bucket(bktVia).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			id := k[len(prefix):]
			e, found, err := decodeEntity(ents.Get(id))
			if err != nil {
				return fmt.Errorf("device %s of %s: %w", id, gatewayID, err)
			}
			if found && e.ConnectedVia == gatewayID {
				out = append(out, string(id))
			}
		}
		return nil
	})
	return out, err
}

// DefaultListLimit is the page size of ListEntities for limit <= 0.
const DefaultListLimit = 100

// ListEntities returns up to limit entities matching f, in ID order, starting
// after the ID `after` ("" = from the start). next is the ID to pass as
// `after` for the following page, or "" when no match is left. limit <= 0
// means DefaultListLimit. Each page is one read transaction; entities written
// between pages show up if their ID is beyond the cursor.
func (db *DB) ListEntities(f EntityFilter, after string, limit int) (list []Entity, next string, err error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	list = []Entity{}
	err = db.view(func(tx *bbolt.Tx) error {
		ents := tx.Bucket(bktEntities)
		parents := map[string]string{} // id → parent, cache for Under and Within
		// below reports whether e is strictly below root.
		below := func(e *Entity, root string) (bool, error) {
			seen := map[string]bool{e.ID: true}
			for p := e.Parent; p != ""; {
				if p == root {
					return true, nil
				}
				if seen[p] {
					return false, nil // cycle
				}
				seen[p] = true
				pp, ok := parents[p]
				if !ok {
					pe, found, err := decodeEntity(ents.Get([]byte(p)))
					if err != nil {
						return false, fmt.Errorf("ancestor %s: %w", p, err)
					}
					if found {
						pp = pe.Parent
					}
					parents[p] = pp
				}
				p = pp
			}
			return false, nil
		}
		c := ents.Cursor()
		k, v := c.First()
		if after != "" {
			k, v = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			var e Entity
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("entity %s: decode: %w", k, err)
			}
			ok, err := matches(&e, &f, below)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if len(list) == limit {
				next = list[len(list)-1].ID
				return nil
			}
			list = append(list, e)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return list, next, nil
}

func matches(e *Entity, f *EntityFilter, below func(e *Entity, root string) (bool, error)) (bool, error) {
	if f.Kind != "" && e.Kind != f.Kind {
		return false, nil
	}
	for k, want := range f.Tags {
		v, ok := e.Tags[k]
		if !ok || fmt.Sprint(v) != want {
			return false, nil
		}
	}
	if f.Within != "" && e.ID != f.Within {
		if ok, err := below(e, f.Within); err != nil || !ok {
			return false, err
		}
	}
	if f.Under != "" {
		return below(e, f.Under)
	}
	return true, nil
}

// GetIdentity returns the identity of deviceID, or ErrNotFound.
func (db *DB) GetIdentity(deviceID string) (Identity, error) {
	var i Identity
	err := db.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bktIdentities).Get([]byte(deviceID))
		if v == nil {
			return fmt.Errorf("identity %s: %w", deviceID, ErrNotFound)
		}
		if err := json.Unmarshal(v, &i); err != nil {
			return fmt.Errorf("identity %s: decode: %w", deviceID, err)
		}
		return nil
	})
	return i, err
}

// Inbox returns every message of deviceID's inbox, whatever its state, in
// enqueue order (Seq, then EnqueuedAt, then ID).
func (db *DB) Inbox(deviceID string) ([]InboxMessage, error) {
	out := []InboxMessage{}
	if err := checkPrefixID("device id", deviceID); err != nil {
		return out, nil
	}
	err := db.view(func(tx *bbolt.Tx) error {
		prefix := rangeStart(deviceID)
		c := tx.Bucket(bktInbox).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var m InboxMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("inbox %s: decode %s: %w", deviceID, k[len(prefix):], err)
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		if !a.EnqueuedAt.Equal(b.EnqueuedAt) {
			return a.EnqueuedAt.Before(b.EnqueuedAt)
		}
		return a.ID < b.ID
	})
	return out, nil
}

// InboxMessage returns message msgID of deviceID's inbox, or ErrNotFound.
func (db *DB) InboxMessage(deviceID, msgID string) (InboxMessage, error) {
	var m InboxMessage
	if checkPrefixID("device id", deviceID) != nil || checkPrefixID("message id", msgID) != nil {
		return m, fmt.Errorf("inbox message %s/%s: %w", deviceID, msgID, ErrNotFound)
	}
	err := db.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bktInbox).Get(pairKey(deviceID, msgID))
		if v == nil {
			return fmt.Errorf("inbox message %s/%s: %w", deviceID, msgID, ErrNotFound)
		}
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("inbox message %s/%s: decode: %w", deviceID, msgID, err)
		}
		return nil
	})
	return m, err
}

// GetDoc returns a copy of the document key of bucket b, or ErrNotFound. An
// unknown bucket is ErrInvalid.
func (db *DB) GetDoc(b Bucket, key string) ([]byte, error) {
	if !b.valid() {
		return nil, fmt.Errorf("%w: unknown bucket %q", ErrInvalid, b)
	}
	var out []byte
	err := db.view(func(tx *bbolt.Tx) error {
		var v []byte
		if bk := tx.Bucket([]byte(b)); bk != nil { // nil: a read-only file older than the bucket
			v = bk.Get([]byte(key))
		}
		if v == nil {
			return fmt.Errorf("doc %s/%s: %w", b, key, ErrNotFound)
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// ListDocs returns every document of bucket b whose key starts with prefix
// ("" = all), keyed by full key. An unknown bucket is ErrInvalid.
func (db *DB) ListDocs(b Bucket, prefix string) (map[string][]byte, error) {
	if !b.valid() {
		return nil, fmt.Errorf("%w: unknown bucket %q", ErrInvalid, b)
	}
	out := map[string][]byte{}
	err := db.view(func(tx *bbolt.Tx) error {
		p := []byte(prefix)
		bk := tx.Bucket([]byte(b))
		if bk == nil { // a read-only file older than the bucket
			return nil
		}
		c := bk.Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			out[string(k)] = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
