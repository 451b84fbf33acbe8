package actors

import (
	"time"

	"testing"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
)

// TestTelemetryMessage: DecodeTelemetry keeps a reference to a JSON
// payload's bytes (not a copy), and Event.Message gives routes the
// device's bytes when they were kept, the raw bytes of a payload that is
// not JSON points, and the points otherwise.
func TestTelemetryMessage(t *testing.T) {
	payload := []byte(`{ "t": 1 }`)
	in := DecodeTelemetry(payload, "", time.Time{}, map[string]string{"a": "b"})
	if len(in.Points) != 1 || &in.Payload[0] != &payload[0] || in.Raw != nil {
		t.Fatalf("decoded %+v", in)
	}
	if raw := DecodeTelemetry([]byte("plain"), "text/plain", time.Time{}, nil); raw.Payload != nil || string(raw.Raw) != "plain" {
		t.Fatalf("a text payload decoded as %+v", raw)
	}
	pts := entity.PointsProto(map[string]any{"t": 1.0})
	for _, tc := range []struct {
		name string
		tel  *actorspb.Telemetry
		body string
	}{
		{"kept", &actorspb.Telemetry{Points: pts, Payload: payload, ContentType: "application/json", MessageId: "m",
			ContentEncoding: "utf-8", Properties: map[string]string{"a": "b"}}, `{ "t": 1 }`},
		{"not kept", &actorspb.Telemetry{Points: pts, ContentType: "application/json"}, `{"t":1}`},
		{"raw", &actorspb.Telemetry{Raw: []byte("plain"), ContentType: "text/plain"}, "plain"},
		{"empty", &actorspb.Telemetry{ContentType: "application/octet-stream"}, ""},
	} {
		m, ok := Event{Type: EventTelemetry, Telemetry: tc.tel}.Message()
		if !ok || string(m.Body) != tc.body || m.ContentType != tc.tel.ContentType || m.MessageID != tc.tel.MessageId ||
			m.ContentEncoding != tc.tel.ContentEncoding || m.Properties["a"] != tc.tel.Properties["a"] {
			t.Errorf("%s: Message() = %+v %v", tc.name, m, ok)
		}
	}
	if _, ok := (Event{Type: EventTelemetry}).Message(); ok {
		t.Error("an event without its message (a remote one) has a message")
	}
}
