package persistence

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// TombstoneRetention is how long the record of a catalog deletion is kept
// in BucketTombstones: a node away for longer misses the deletions made
// meanwhile, and its catalog copy brings the deleted items back.
const TombstoneRetention = 30 * 24 * time.Hour

// Tombstone is the document of BucketTombstones: when the catalog item
// named by its key was deleted.
type Tombstone struct {
	At time.Time `json:"at"`
}

// PutTombstone returns the op that records the deletion of the catalog
// item key ("entity/<id>", "rules/<id>", "grants/<target>/<grantee>") at
// the time at.
func PutTombstone(key string, at time.Time) Op {
	doc, _ := json.Marshal(Tombstone{At: at.UTC()}) // a time: cannot fail
	return PutDoc(BucketTombstones, key, doc)
}

// DecodeTombstone decodes a document of BucketTombstones.
func DecodeTombstone(doc []byte) (Tombstone, error) {
	var t Tombstone
	if err := json.Unmarshal(doc, &t); err != nil {
		return Tombstone{}, fmt.Errorf("decode tombstone: %w", err)
	}
	return t, nil
}

// PruneTombstones deletes the tombstones recorded before `before`, in one
// commit, and returns how many it deleted. A tombstone it cannot decode
// is kept.
func (db *DB) PruneTombstones(ctx context.Context, before time.Time) (int, error) {
	docs, err := db.ListDocs(BucketTombstones, "")
	if err != nil {
		return 0, fmt.Errorf("prune tombstones: %w", err)
	}
	var ops []Op
	for key, doc := range docs {
		if t, err := DecodeTombstone(doc); err == nil && t.At.Before(before) {
			ops = append(ops, DeleteDoc(BucketTombstones, key))
		}
	}
	if len(ops) == 0 {
		return 0, nil
	}
	if err := db.Commit(ctx, ops...); err != nil {
		return 0, fmt.Errorf("prune tombstones: %w", err)
	}
	return len(ops), nil
}
