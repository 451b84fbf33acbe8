package persistence

import (
	"fmt"
	"io"

	"go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the whole file to w, from one read
// transaction (commits go on meanwhile), and returns how many bytes it
// wrote. The copy opens as a store of its own: it is what an operator
// restores, or what a member that lost its file starts from.
func (db *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	err := db.view(func(tx *bbolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("backup %s: %w", db.path, err)
	}
	return n, nil
}

// Check walks every page of the file with bbolt's consistency check and
// returns nil for a sound file, or an error wrapping ErrCorrupt that counts
// the problems and names the first ones.
func (db *DB) Check() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("check %s: %w (%v)", db.path, ErrCorrupt, r)
		}
	}()
	var problems []error
	if err := db.view(func(tx *bbolt.Tx) error {
		for e := range tx.Check() {
			problems = append(problems, e)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("check %s: %w", db.path, err)
	}
	if len(problems) > 0 {
		first := problems[:min(3, len(problems))]
		return fmt.Errorf("check %s: %w: %d problems, first: %v", db.path, ErrCorrupt, len(problems), first)
	}
	return nil
}
