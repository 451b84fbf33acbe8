package persistence

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTombstoneRoundTrip(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 5, time.FixedZone("x", 3600))
	db := openTemp(t, nil)
	commit(t, db, PutTombstone("entity/e1", at))
	doc, err := db.GetDoc(BucketTombstones, "entity/e1")
	if err != nil {
		t.Fatal(err)
	}
	ts, err := DecodeTombstone(doc)
	if err != nil || !ts.At.Equal(at) {
		t.Fatalf("decoded %v (%v), want %v", ts.At, err, at)
	}
	if _, err := DecodeTombstone([]byte("nope")); err == nil {
		t.Error("decoded a document that is not a tombstone")
	}
}

func TestPruneTombstones(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		at   time.Time // zero: an undecodable document
		goes bool
	}{
		{"older than the cut", now.Add(-40 * 24 * time.Hour), true},
		{"just older", now.Add(-TombstoneRetention - time.Second), true},
		{"recent", now.Add(-time.Hour), false},
		{"undecodable", time.Time{}, false},
	}
	db := openTemp(t, nil)
	for _, tc := range tests {
		if tc.at.IsZero() {
			commit(t, db, PutDoc(BucketTombstones, tc.name, []byte("{")))
			continue
		}
		commit(t, db, PutTombstone(tc.name, tc.at))
	}
	n, err := db.PruneTombstones(context.Background(), now.Add(-TombstoneRetention))
	if err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want 2", n, err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := db.GetDoc(BucketTombstones, tc.name)
			if gone := errors.Is(err, ErrNotFound); gone != tc.goes {
				t.Errorf("gone = %v (%v), want %v", gone, err, tc.goes)
			}
		})
	}
	if n, err := db.PruneTombstones(context.Background(), now.Add(-TombstoneRetention)); err != nil || n != 0 {
		t.Errorf("second prune: %d (%v), want nothing", n, err)
	}
}

// Retain prunes at once, and stops when its context is done.
func TestRetain(t *testing.T) {
	db := openTemp(t, nil)
	now := time.Now()
	commit(t, db,
		PutEntity(Entity{ID: "d1", Kind: "device"}),
		AppendTelemetry("d1", TelemetryRecord{TS: now.Add(-48 * time.Hour), Points: map[string]any{"t": 1.0}}),
		AppendTelemetry("d1", TelemetryRecord{TS: now.Add(-time.Minute), Points: map[string]any{"t": 2.0}}),
		PutTombstone("entity/old", now.Add(-40*24*time.Hour)),
		PutTombstone("entity/new", now.Add(-time.Minute)),
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); db.Retain(ctx, Retention{Telemetry: 24 * time.Hour, Every: time.Hour}) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs, err := db.QueryTelemetry(context.Background(), "d1", TelemetryQuery{})
		_, oldErr := db.GetDoc(BucketTombstones, "entity/old")
		if err == nil && len(recs) == 1 && errors.Is(oldErr, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not pruned: %d records (%v), old tombstone: %v", len(recs), err, oldErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := db.GetDoc(BucketTombstones, "entity/new"); err != nil {
		t.Errorf("recent tombstone: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Retain did not return after its context was done")
	}
}
