package persistence

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestResetGrainData(t *testing.T) {
	db := openTemp(t, nil)
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range []string{"d1", "d10"} {
		commit(t, db, PutEntity(Entity{ID: id, Kind: "device"}), PutTwin(id, []byte(`{"version":3}`)),
			AppendTelemetry(id, TelemetryRecord{TS: ts, Points: map[string]any{"t": 1.0}, MessageID: "m1"}),
			PutInbox(InboxMessage{ID: "x", DeviceID: id, State: "pending", ExpiresAt: ts.Add(time.Hour)}),
			CheckEpoch(id, 4))
	}
	commit(t, db, ResetGrainData("d1"))
	ctx := context.Background()
	if _, err := db.GetTwin("d1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("twin of d1 after reset: %v", err)
	}
	if recs, _ := db.QueryTelemetry(ctx, "d1", TelemetryQuery{}); len(recs) != 0 {
		t.Fatalf("telemetry of d1 after reset: %v", recs)
	}
	if msgs, _ := db.Inbox("d1"); len(msgs) != 0 {
		t.Fatalf("inbox of d1 after reset: %v", msgs)
	}
	if _, err := db.GetEntity("d1"); err != nil {
		t.Fatalf("the entity goes with a reset: %v", err)
	}
	if st, _ := db.GrainState("d1"); st.Epoch.Fence != 4 {
		t.Fatalf("the fence must stay: %+v", st.Epoch)
	}
	// A neighbour whose ID starts with the same characters keeps all.
	if _, err := db.GetTwin("d10"); err != nil {
		t.Fatal(err)
	}
	if recs, _ := db.QueryTelemetry(ctx, "d10", TelemetryQuery{}); len(recs) != 1 {
		t.Fatalf("telemetry of d10: %v", recs)
	}
	if msgs, _ := db.Inbox("d10"); len(msgs) != 1 {
		t.Fatalf("inbox of d10: %v", msgs)
	}
	if _, ok := ResetGrainData("d1").Wire(); ok {
		t.Fatal("a reset must not travel")
	}
}
