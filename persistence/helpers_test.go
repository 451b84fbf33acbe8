package persistence

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// openTemp opens a DB in t.TempDir with NoSync and closes it at cleanup.
func openTemp(t testing.TB, o *Options) *DB {
	t.Helper()
	if o == nil {
		o = &Options{NoSync: true}
	}
	db, err := Open(filepath.Join(t.TempDir(), "twinmesh.db"), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// commit commits ops or fails the test.
func commit(t testing.TB, db *DB, ops ...Op) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.Commit(ctx, ops...); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func ids(es []Entity) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// t0 is a fixed UTC instant, so times survive the JSON round trip unchanged.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
