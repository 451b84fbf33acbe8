package persistence

import (
	"bytes"
	"fmt"

	"go.etcd.io/bbolt"
)

// Doc is one document of a doc bucket and its key.
type Doc struct {
	Key string
	Val []byte
}

// DocPage returns, in key order, at most limit documents of bucket b whose
// key starts with prefix and sorts after after ("" starts at the prefix),
// read in one transaction. It is ListDocs for prefixes too large to hold
// in memory at once: a caller pages on with the last key it got. limit <= 0
// means DefaultListLimit; an unknown bucket is ErrInvalid.
func (db *DB) DocPage(b Bucket, prefix, after string, limit int) ([]Doc, error) {
	if !b.valid() {
		return nil, fmt.Errorf("%w: unknown bucket %q", ErrInvalid, b)
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	var out []Doc
	err := db.view(func(tx *bbolt.Tx) error {
		bk := tx.Bucket([]byte(b))
		if bk == nil { // a read-only file older than the bucket
			return nil
		}
		p := []byte(prefix)
		c := bk.Cursor()
		k, v := c.Seek(p)
		if after != "" {
			k, v = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, p) && len(out) < limit; k, v = c.Next() {
			out = append(out, Doc{Key: string(k), Val: bytes.Clone(v)})
		}
		return nil
	})
	return out, err
}
