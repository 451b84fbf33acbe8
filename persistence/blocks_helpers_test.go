package persistence

import (
	"math"
	"testing"

	"go.etcd.io/bbolt"
)

// storedRec is a warm record as the store holds it: its position and the
// record.
type storedRec struct {
	ns  int64
	seq uint32
	rec TelemetryRecord
}

// storedRecs returns id's warm records in (ns, seq) order, wherever they
// are (a record of its own, a block, the ingest log), or fails the test
// on a record that does not decode.
func storedRecs(t testing.TB, db *DB, id string) []storedRec {
	t.Helper()
	var out []storedRec
	err := db.Bolt().View(func(tx *bbolt.Tx) error {
		var err error
		scanTelemetry(tx, id, 0, math.MaxInt64, false, func(w *warmRec) bool {
			var r TelemetryRecord
			if r, err = w.decode(); err != nil {
				return false
			}
			out = append(out, storedRec{w.ns, w.seq, r})
			return true
		})
		return err
	})
	if err != nil {
		t.Fatalf("stored records of %s: %v", id, err)
	}
	return out
}
