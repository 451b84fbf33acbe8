package persistence

import (
	"bytes"
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"
)

// Reads for fleet operations (CONTRACT section 9): twins scanned page by
// page with their entity and identity, and the identity registry listed.
// Each page is one read transaction, so a scan of a million twins never
// holds a transaction (and the file's mapping) for long, and never holds
// more than a page in memory.

// TwinRow is one entity of a ScanTwins page with what a fleet query reads
// of it.
type TwinRow struct {
	Entity Entity
	// Twin is the stored twin document, nil when this node's store holds
	// none (in a cluster, a grain whose replicas are on other members).
	Twin []byte
	// Identity is the device identity, nil for entities without one.
	Identity *Identity
}

// ScanTwins returns up to limit entities matching f, in ID order, after the
// ID `after` ("" = from the start), each with its twin document and
// identity. next is the ID to pass as `after` for the following page, or ""
// when no match is left. limit <= 0 means DefaultListLimit.
func (db *DB) ScanTwins(f EntityFilter, after string, limit int) ([]TwinRow, string, error) {
	ents, next, err := db.ListEntities(f, after, limit)
	if err != nil {
		return nil, "", err
	}
	rows := make([]TwinRow, len(ents))
	err = db.view(func(tx *bbolt.Tx) error {
		twins, idns := tx.Bucket(bktTwins), tx.Bucket(bktIdentities)
		for i, e := range ents {
			rows[i].Entity = e
			if v := twins.Get([]byte(e.ID)); v != nil {
				rows[i].Twin = bytes.Clone(v)
			}
			if v := idns.Get([]byte(e.ID)); v != nil {
				var idn Identity
				if err := json.Unmarshal(v, &idn); err != nil {
					return fmt.Errorf("identity %s: decode: %w", e.ID, err)
				}
				rows[i].Identity = &idn
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return rows, next, nil
}

// IdentityFilter selects identities in ListIdentities. Zero fields match
// everything.
type IdentityFilter struct {
	// Status, if set, must equal Identity.Status.
	Status string
	// Under, if set, matches devices strictly below that entity.
	Under string
	// Within, if set, matches that entity and the devices below it (an
	// access token's scope); it applies on top of Under.
	Within string
}

// ListIdentities returns up to limit identities matching f, in device ID
// order, after the ID `after`. next is the ID to pass as `after` for the
// following page, or "" when no match is left. limit <= 0 means
// DefaultListLimit. Each page is one read transaction.
func (db *DB) ListIdentities(f IdentityFilter, after string, limit int) (list []Identity, next string, err error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	list = []Identity{}
	err = db.view(func(tx *bbolt.Tx) error {
		ents := tx.Bucket(bktEntities)
		// below reports whether id is strictly below root, following the
		// stored parents (a cycle ends the walk).
		below := func(id, root string) (bool, error) {
			seen := map[string]bool{id: true}
			for cur := id; ; {
				e, found, err := decodeEntity(ents.Get([]byte(cur)))
				if err != nil || !found {
					return false, err
				}
				p := e.Parent
				if p == "" || seen[p] {
					return false, nil
				}
				if p == root {
					return true, nil
				}
				seen[p] = true
				cur = p
			}
		}
		c := tx.Bucket(bktIdentities).Cursor()
		k, v := c.First()
		if after != "" {
			k, v = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			var idn Identity
			if err := json.Unmarshal(v, &idn); err != nil {
				return fmt.Errorf("identity %s: decode: %w", k, err)
			}
			if f.Status != "" && idn.Status != f.Status {
				continue
			}
			if f.Within != "" && idn.DeviceID != f.Within {
				if ok, err := below(idn.DeviceID, f.Within); err != nil || !ok {
					if err != nil {
						return err
					}
					continue
				}
			}
			if f.Under != "" {
				if ok, err := below(idn.DeviceID, f.Under); err != nil || !ok {
					if err != nil {
						return err
					}
					continue
				}
			}
			if len(list) == limit {
				next = list[len(list)-1].DeviceID
				return nil
			}
			list = append(list, idn)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return list, next, nil
}
