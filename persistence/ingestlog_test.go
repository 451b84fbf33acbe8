package persistence

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// logLen returns the number of records waiting in the ingest log.
func logLen(t *testing.T, db *DB) int {
	t.Helper()
	n := 0
	if err := db.Bolt().View(func(tx *bbolt.Tx) error { n = tx.Bucket(bktTelemetryLog).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func rec(sec int) TelemetryRecord {
	return TelemetryRecord{TS: time.Unix(int64(sec), 0).UTC(), Points: map[string]any{"t": float64(sec)}}
}

func secsOf(recs []TelemetryRecord) []int {
	out := []int{}
	for _, r := range recs {
		out = append(out, int(r.TS.Unix()))
	}
	return out
}

// TestIngestLogReads: reads see a device's records whether they were moved
// to the telemetry bucket or still wait in the ingest log, merged in time
// order, with the same answers before and after the move.
func TestIngestLogReads(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, &Options{NoSync: true, logIdle: time.Hour})
	for _, s := range []int{10, 20, 30} {
		commit(t, db, AppendTelemetry("d1", rec(s)), AppendTelemetry("d10", rec(s+1)))
	}
	if err := db.MoveIngestLog(ctx); err != nil {
		t.Fatal(err)
	}
	// Older timestamps after newer ones: a device's own clock, a replica.
	for _, s := range []int{15, 40, 25} {
		commit(t, db, AppendTelemetry("d1", rec(s)), AppendTelemetry("d10", rec(s+1)))
	}
	if n := logLen(t, db); n != 6 {
		t.Fatalf("ingest log holds %d records, want 6", n)
	}
	check := func(stage string) {
		t.Helper()
		recs, err := db.QueryTelemetry(ctx, "d1", TelemetryQuery{})
		if got := secsOf(recs); err != nil || !slices.Equal(got, []int{40, 30, 25, 20, 15, 10}) {
			t.Errorf("%s: query = %v, %v", stage, got, err)
		}
		recs, err = db.QueryTelemetry(ctx, "d1", TelemetryQuery{From: time.Unix(15, 0), To: time.Unix(30, 0), Limit: 3})
		if got := secsOf(recs); err != nil || !slices.Equal(got, []int{30, 25, 20}) {
			t.Errorf("%s: query 15..30 limit 3 = %v, %v", stage, got, err)
		}
		st, err := db.GrainState("d1")
		if err != nil || st.Telemetry != 6 || st.NewestTelemetry != time.Unix(40, 0).UnixNano() {
			t.Errorf("%s: grain state = %+v, %v", stage, st, err)
		}
		ops, next, err := db.GrainSnapshot("d1", 0, 4)
		if err != nil || len(ops) != 4 || next != time.Unix(25, 0).UnixNano() {
			t.Errorf("%s: first snapshot page: %d ops, next %d, %v", stage, len(ops), next, err)
		}
		ops, next, err = db.GrainSnapshot("d1", next, 4)
		if err != nil || len(ops) != 2 || next != 0 {
			t.Errorf("%s: second snapshot page: %d ops, next %d, %v", stage, len(ops), next, err)
		}
	}
	check("before the move")
	if err := db.MoveIngestLog(ctx); err != nil {
		t.Fatal(err)
	}
	if n := logLen(t, db); n != 0 {
		t.Fatalf("ingest log holds %d records after the move", n)
	}
	check("after the move")
}

// TestIngestLogWrites: the appending ops see the log: records at one
// timestamp get distinct seqs across a move, a replica's copy of a logged
// record is not stored twice, deletes and resets drop logged records, and a
// rolled-back batch leaves nothing in the index.
func TestIngestLogWrites(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, &Options{NoSync: true, logIdle: time.Hour})
	commit(t, db, AppendTelemetry("d1", rec(5)))
	if err := db.MoveIngestLog(ctx); err != nil {
		t.Fatal(err)
	}
	commit(t, db, AppendTelemetry("d1", rec(5)))
	commit(t, db, AppendTelemetry("d1", rec(5)))
	// The same record received again from the owner (FromWire).
	commit(t, db, FromWire(WireOp{T: wireTelemetry, K: "d1", V: []byte(`{"ts":"1970-01-01T00:00:05Z","points":{"t":5}}`)}))
	if err := db.MoveIngestLog(ctx); err != nil {
		t.Fatal(err)
	}
	var seqs []uint32
	for _, r := range storedRecs(t, db, "d1") {
		seqs = append(seqs, r.seq)
	}
	if !slices.Equal(seqs, []uint32{0, 1, 2}) {
		t.Fatalf("seqs at one timestamp = %v, want [0 1 2]", seqs)
	}

	// A batch that fails after logging a record rolls the index back too.
	bad := Op{kind: "fail", key: "x", apply: func(*bbolt.Tx) error { return errors.New("boom") }}
	if err := db.Commit(ctx, AppendTelemetry("d2", rec(7)), bad); err == nil {
		t.Fatal("a failing op committed")
	}
	// A replica's copy of that record is not taken for a record already there.
	commit(t, db, FromWire(WireOp{T: wireTelemetry, K: "d2", V: []byte(`{"ts":"1970-01-01T00:00:07Z","points":{"t":7}}`)}))
	recs, err := db.QueryTelemetry(ctx, "d2", TelemetryQuery{})
	if err != nil || len(recs) != 1 {
		t.Fatalf("d2 after a rolled-back append: %v, %v", secsOf(recs), err)
	}
	if st, _ := db.GrainState("d2"); st.Telemetry != 1 {
		t.Fatalf("d2 state: %+v", st)
	}

	// Deletes and resets reach the log.
	commit(t, db, PutEntity(Entity{ID: "d3", Kind: "device"}), AppendTelemetry("d3", rec(1)), AppendTelemetry("d4", rec(1)))
	commit(t, db, DeleteEntity("d3"), ResetGrainData("d4"))
	for _, id := range []string{"d3", "d4"} {
		if recs, _ := db.QueryTelemetry(ctx, id, TelemetryQuery{}); len(recs) != 0 {
			t.Errorf("%s after delete/reset: %v", id, secsOf(recs))
		}
	}
	commit(t, db, AppendTelemetry("d4", rec(1)))
	if recs, _ := db.QueryTelemetry(ctx, "d4", TelemetryQuery{}); len(recs) != 1 {
		t.Errorf("d4 written again after a reset: %v", secsOf(recs))
	}
}

// TestIngestLogMoves: the committer moves the log once it holds moveAt
// records, and when idle; a file copied while records wait in the log (a
// crash) opens with every record.
func TestIngestLogMoves(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, &Options{NoSync: true, logIdle: time.Hour})
	for i := range moveAt + 10 {
		commit(t, db, AppendTelemetry("d1", rec(i+1)))
	}
	if n := logLen(t, db); n >= moveAt {
		t.Fatalf("ingest log holds %d records, moveAt is %d", n, moveAt)
	}
	commit(t, db, AppendTelemetry("d2", rec(1)))
	var copyFile bytes.Buffer
	if _, err := db.Backup(&copyFile); err != nil {
		t.Fatal(err)
	}
	if logLen(t, db) == 0 {
		t.Fatal("the backup was taken with an empty log: the test checks nothing")
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, copyFile.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cp, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if n := logLen(t, cp); n != 0 {
		t.Errorf("a reopened file keeps %d records in the log", n)
	}
	for id, want := range map[string]int{"d1": moveAt + 10, "d2": 1} {
		recs, err := cp.QueryTelemetry(ctx, id, TelemetryQuery{Limit: MaxTelemetryLimit})
		if err != nil || len(recs) != min(want, MaxTelemetryLimit) {
			t.Errorf("%s in the reopened copy: %d records, %v", id, len(recs), err)
		}
	}

	idle := openTemp(t, &Options{NoSync: true, logIdle: 20 * time.Millisecond})
	commit(t, idle, AppendTelemetry("d1", rec(1)))
	deadline := time.Now().Add(5 * time.Second)
	for logLen(t, idle) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle committer did not move the log")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
