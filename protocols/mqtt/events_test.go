package mqtt

import (
	"encoding/json"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/twinmesh/twinmesh/actors"
)

// nopBackend is a Backend that knows no device; HandleEvent never calls it.
type nopBackend struct{ Backend }

func TestHandleEventQueuesOnlyWhatDevicesHear(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0"}, nopBackend{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		ev    actors.Event
		queue bool
	}{
		{"desired change", actors.Event{Type: actors.EventTwin, Section: "desired", Entity: "d1", Data: json.RawMessage(`{}`)}, true},
		{"reported change", actors.Event{Type: actors.EventTwin, Section: "reported", Entity: "d1"}, false},
		{"telemetry", actors.Event{Type: actors.EventTelemetry, Entity: "d1"}, false},
		{"disabled", actors.Event{Type: actors.EventIdentity, Entity: "d1", Data: json.RawMessage(`{"status":"disabled"}`)}, true},
		{"enabled", actors.Event{Type: actors.EventIdentity, Entity: "d1", Data: json.RawMessage(`{"status":"enabled"}`)}, false},
		{"deleted", actors.Event{Type: actors.EventTopology, Entity: "d1", Data: json.RawMessage(`{"deleted":true}`)}, true},
		{"moved", actors.Event{Type: actors.EventTopology, Entity: "d1", Data: json.RawMessage(`{"created":false}`)}, false},
		{"inbox", actors.Event{Type: actors.EventInbox, Entity: "d1"}, true},
		{"bad data", actors.Event{Type: actors.EventIdentity, Entity: "d1", Data: json.RawMessage(`{`)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.events)
			s.HandleEvent(tc.ev)
			if queued := len(s.events) > before; queued != tc.queue {
				t.Fatalf("queued = %v, want %v", queued, tc.queue)
			}
		})
	}
	// A full queue drops and counts, and never blocks the grain.
	for len(s.events) < cap(s.events) {
		s.HandleEvent(actors.Event{Type: actors.EventInbox, Entity: "d1"})
	}
	s.HandleEvent(actors.Event{Type: actors.EventInbox, Entity: "d1"})
	if got := testutil.ToFloat64(s.metrics.eventsDropped); got != 1 {
		t.Fatalf("dropped = %v, want 1", got)
	}
}
