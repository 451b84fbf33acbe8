package api

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
)

// TestViewsKeepTheWire: the API's response types encode exactly as the
// store's records did when handlers encoded those directly, so clients see
// no change.
func TestViewsKeepTheWire(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	entities := map[string]persistence.Entity{
		"zero":    {},
		"minimal": {ID: "b1", Kind: "building", CreatedAt: ts, UpdatedAt: ts},
		"full": {ID: "d1", Kind: "device", Parent: "r1", ConnectedVia: "gw1",
			Tags: map[string]any{"city": "Oslo", "n": 3.0, "nested": map[string]any{"a": true}}, CreatedAt: ts, UpdatedAt: ts.Add(time.Hour)},
		"empty tags": {ID: "r1", Kind: "room", Tags: map[string]any{}},
	}
	for name, e := range entities {
		t.Run("entity "+name, func(t *testing.T) {
			sameJSON(t, entityView(e), e)
		})
	}
	records := map[string]persistence.TelemetryRecord{
		"zero":   {},
		"points": {TS: ts, Points: map[string]any{"temperature": 21.5, "on": true, "mode": "eco"}, MessageID: "m1"},
		"raw": {TS: ts, Raw: []byte{0, 1, 2, 0xff}, ContentType: "application/octet-stream",
			Properties: map[string]string{"k": "v"}},
	}
	for name, r := range records {
		t.Run("telemetry "+name, func(t *testing.T) {
			got := telemetryViews([]persistence.TelemetryRecord{r})
			sameJSON(t, got, []persistence.TelemetryRecord{r})
		})
	}
	t.Run("device", func(t *testing.T) {
		b, _ := json.Marshal(deviceView(persistence.Identity{DeviceID: "d1", PrimaryKey: "p", SecondaryKey: "s", Status: "enabled", CreatedAt: ts}))
		if want := `{"id":"d1","primaryKey":"p","secondaryKey":"s","status":"enabled"}`; string(b) != want {
			t.Fatalf("device %s, want %s", b, want)
		}
	})
	t.Run("lists are never null", func(t *testing.T) {
		for _, v := range []any{items[Entity]{Items: entityViews(nil)}, items[TelemetryRecord]{Items: telemetryViews(nil)}} {
			b, _ := json.Marshal(v)
			if string(b) != `{"items":[]}` {
				t.Fatalf("empty list %s", b)
			}
		}
	})
}

func sameJSON(t *testing.T, view, record any) {
	t.Helper()
	got, err := json.Marshal(view)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(record)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("view encodes\n%s\nthe record\n%s", got, want)
	}
}

func TestMessageView(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		m    persistence.InboxMessage
		want string
	}{
		{"json payload, pending", persistence.InboxMessage{ID: "m1", DeviceID: "d1", Payload: []byte(`{"a":1}`), State: "pending", EnqueuedAt: ts, ExpiresAt: ts.Add(time.Hour), Seq: 4},
			`{"messageId":"m1","state":"pending","payload":{"a":1},"enqueuedAt":"2026-01-02T03:04:05Z","expiresAt":"2026-01-02T04:04:05Z"}`},
		{"binary payload, delivered", persistence.InboxMessage{ID: "m2", Payload: []byte{0xff, 0}, State: "delivered", Properties: map[string]string{"k": "v"},
			EnqueuedAt: ts, ExpiresAt: ts, DeliveredAt: ts},
			`{"messageId":"m2","state":"delivered","payloadBase64":"/wA=","properties":{"k":"v"},"enqueuedAt":"2026-01-02T03:04:05Z","expiresAt":"2026-01-02T03:04:05Z","deliveredAt":"2026-01-02T03:04:05Z"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := json.Marshal(messageView(tc.m))
			if string(b) != tc.want {
				t.Fatalf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}
