package persistence

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestCompact: after retention freed most of a store, Compact gives the
// space back, keeps every remaining record, and refuses a store in use.
func TestCompact(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "twinmesh.db")
	db, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1000, 0)
	for d := range 50 {
		var ops []Op
		for i := range 400 {
			ops = append(ops, AppendTelemetry("dev-"+string(rune('a'+d%26))+string(rune('a'+d/26)),
				TelemetryRecord{TS: old.Add(time.Duration(i) * time.Second), Points: map[string]any{"t": float64(i) + 0.1, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}))
		}
		commit(t, db, ops...)
	}
	commit(t, db, AppendTelemetry("keep", TelemetryRecord{TS: time.Now(), Points: map[string]any{"t": 1.5}}))
	if n, err := db.PruneTelemetry(ctx, time.Now().Add(-time.Hour)); err != nil || n != 50*400 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	if _, _, err := Compact(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("compact of a store in use: %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before, after, err := Compact(path)
	if err != nil {
		t.Fatal(err)
	}
	if after >= before/2 {
		t.Errorf("compacted %d → %d bytes: expected most of it back", before, after)
	}
	db, err = Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recs, err := db.QueryTelemetry(ctx, "keep", TelemetryQuery{})
	if err != nil || len(recs) != 1 || recs[0].Points["t"] != 1.5 {
		t.Fatalf("after compaction: %+v, %v", recs, err)
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}
