package amqp

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"amqp://guest:guest@127.0.0.1:5672", "amqp://guest:***@127.0.0.1:5672"},
		{"amqps://u:p%40ss@host/vh", "amqps://u:***@host/vh"},
		{"amqp://host:5672", "amqp://host:5672"},
		{"amqp://user@host", "amqp://user@host"},
	} {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	msg := `dial amqp://svc:s3cr3t@broker:5671: connection refused; also amqps://a:b@c`
	if got := Redact(msg); strings.Contains(got, "s3cr3t") || strings.Contains(got, ":b@") || !strings.Contains(got, "amqp://svc:***@broker") {
		t.Errorf("Redact: %q", got)
	}
}

func FuzzRedact(f *testing.F) {
	for _, s := range []string{"amqp://u:p@h", "amqps://u:p:q@h:1/x", "x amqp://:@ y", "amqp://u:p@h amqp://v:w@k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// A password between "amqp://user:" and "@" never survives.
		i := strings.Index(s, "amqp://")
		if i < 0 {
			return
		}
		rest := s[i+len("amqp://"):]
		colon, at := strings.IndexByte(rest, ':'), strings.IndexByte(rest, '@')
		if colon < 0 || at < colon || strings.ContainsAny(rest[:at], "/ \t\n\r\f\v") {
			return
		}
		pass := rest[colon+1 : at]
		if len(pass) < 4 || pass == "***" {
			return
		}
		if strings.Contains(Redact(s), "amqp://"+rest[:colon]+":"+pass+"@") {
			t.Fatalf("Redact(%q) kept the password", s)
		}
		_ = RedactURL(s)
	})
}

func TestParseTo(t *testing.T) {
	for _, tc := range []struct {
		to, dev, kind string
		ok            bool
	}{
		{"/devices/d1/messages/events", "d1", "events", true},
		{"/devices/d-1.x/messages/devicebound", "d-1.x", "devicebound", true},
		{"/devices//messages/events", "", "", false},
		{"/devices/d1/messages/other", "", "", false},
		{"/devices/a/b/messages/events", "", "", false},
		{"devices/d1/messages/events", "", "", false},
		{"", "", "", false},
	} {
		dev, kind, ok := parseTo(tc.to)
		if ok != tc.ok || dev != tc.dev || kind != tc.kind {
			t.Errorf("parseTo(%q) = %q %q %v", tc.to, dev, kind, ok)
		}
	}
}

func FuzzParseTo(f *testing.F) {
	f.Add("/devices/d1/messages/events")
	f.Add("/devices/x/messages/devicebound")
	f.Fuzz(func(t *testing.T, to string) {
		dev, kind, ok := parseTo(to)
		if !ok {
			return
		}
		if !actors.ValidID(dev) || "/devices/"+dev+"/messages/"+kind != to {
			t.Fatalf("parseTo(%q) = %q %q", to, dev, kind)
		}
	})
}

func TestDefinitionsAreChecked(t *testing.T) {
	good := Endpoint{Name: "e", Type: "amqp", URL: "amqp://h:5672", Address: "/queue/a"}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]Endpoint{
		"type":    {Name: "e", Type: "kafka", URL: "amqp://h", Address: "a"},
		"scheme":  {Name: "e", Type: "amqp", URL: "https://h", Address: "a"},
		"host":    {Name: "e", Type: "amqp", URL: "amqp://", Address: "a"},
		"address": {Name: "e", Type: "amqp", URL: "amqp://h"},
		"ca":      {Name: "e", Type: "amqp", URL: "amqps://h", Address: "a", CA: "not pem"},
		"ca+amqp": {Name: "e", Type: "amqp", URL: "amqp://h", Address: "a", CA: "x"},
		"name":    {Name: "a/b", Type: "amqp", URL: "amqp://h", Address: "a"},
	} {
		if err := e.Check(); err == nil {
			t.Errorf("%s: accepted %+v", name, e)
		}
	}
	if err := (Route{Name: "r", Source: "telemetry", Endpoint: "e", Condition: "body.x >"}).Check(); err == nil {
		t.Error("a condition that does not compile was accepted")
	}
}

func TestBackoffGrowsWithJitterAndCaps(t *testing.T) {
	b := backoff{base: 100 * time.Millisecond, max: time.Second}
	for i, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		d := b.next()
		if d < want/2 || d > want {
			t.Fatalf("try %d: %v outside [%v, %v]", i, d, want/2, want)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

// TestClassify: events other than telemetry are routed as their JSON
// document with IoT Hub's application properties of non-telemetry events.
func TestClassify(t *testing.T) {
	ts := time.Date(2026, 12, 2, 23, 0, 0, 5, time.UTC)
	ev := func(typ, data string) actors.Event {
		return actors.Event{Type: typ, Entity: "d1", Data: []byte(data), TS: ts, Section: "desired", Version: 7}
	}
	for _, tc := range []struct {
		e              actors.Event
		source, op, sc string
	}{
		{ev(actors.EventTwin, `{}`), SourceTwinChanges, "updateTwin", "twinChangeNotification"},
		{ev(actors.EventAlert, `{}`), SourceAlerts, "", ""},
		{ev(actors.EventTopology, `{"created":true}`), SourceLifecycle, "createDeviceIdentity", "deviceLifecycleNotification"},
		{ev(actors.EventTopology, `{"deleted":true}`), SourceLifecycle, "deleteDeviceIdentity", "deviceLifecycleNotification"},
		{ev(actors.EventConnection, `{"state":"connected"}`), SourceLifecycle, "deviceConnected", "deviceConnectionStateNotification"},
		{ev(actors.EventConnection, `{"state":"disconnected"}`), SourceLifecycle, "deviceDisconnected", "deviceConnectionStateNotification"},
		{ev(actors.EventTopology, `{}`), "", "", ""},
		{ev(actors.EventRollup, `{}`), "", "", ""},
	} {
		source, m, ok := classify(tc.e)
		p := m.Properties
		if ok != (tc.source != "") || source != tc.source || p["opType"] != tc.op || p["iothub-message-schema"] != tc.sc {
			t.Errorf("classify(%s %s) = %q %v %v", tc.e.Type, tc.e.Data, source, p, ok)
		}
		if ok && (p["deviceId"] != "d1" || p["operationTimestamp"] != "2026-12-02T23:00:00.000000005Z" ||
			m.ContentType != "application/json" || m.ContentEncoding != "utf-8" || string(m.Body) != string(tc.e.Data)) {
			t.Errorf("classify(%s %s): %+v", tc.e.Type, tc.e.Data, m)
		}
		if tc.e.Type == actors.EventTwin && (p["section"] != "desired" || p["version"] != "7") {
			t.Errorf("twin change properties %v", p)
		}
	}
}

// TestClassifyTelemetryMessage: a telemetry route sends the device's
// message, whichever form the grain got it in, and a condition sees its
// body when it is JSON in UTF-8.
func TestClassifyTelemetryMessage(t *testing.T) {
	props := map[string]string{"alarm": "yes"}
	for _, tc := range []struct {
		name string
		in   *actorspb.Telemetry
		body string
		cond map[string]any // what a condition sees as body
	}{
		{"original bytes kept", &actorspb.Telemetry{Points: entity.PointsProto(map[string]any{"t": 1.0}),
			Payload: []byte(`{ "t": 1, "nested": {"a": [1]} }`), ContentType: "application/json", ContentEncoding: "utf-8",
			MessageId: "m1", Properties: props}, `{ "t": 1, "nested": {"a": [1]} }`,
			map[string]any{"t": 1.0, "nested": map[string]any{"a": []any{1.0}}}},
		{"not kept: the points", &actorspb.Telemetry{Points: entity.PointsProto(map[string]any{"t": 1.0}),
			ContentType: "application/json"}, `{"t":1}`, map[string]any{"t": 1.0}},
		{"raw bytes", &actorspb.Telemetry{Raw: []byte{0, 1, 2}, ContentType: "application/octet-stream"},
			"\x00\x01\x02", map[string]any{}},
		{"gzip JSON: no fields", &actorspb.Telemetry{Raw: []byte(`{"t":1}`), ContentType: "application/json",
			ContentEncoding: "gzip"}, `{"t":1}`, map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := actors.Event{Type: actors.EventTelemetry, Entity: "d1", Data: []byte(`{"ts":"x","points":{}}`), Telemetry: tc.in}
			source, m, ok := classify(e)
			if !ok || source != SourceTelemetry || string(m.Body) != tc.body || m.ContentType != tc.in.ContentType ||
				m.ContentEncoding != tc.in.ContentEncoding || m.MessageID != tc.in.MessageId || m.Properties["alarm"] != tc.in.Properties["alarm"] {
				t.Fatalf("classify = %q %+v %v", source, m, ok)
			}
			if got := conditionBody(m); !reflect.DeepEqual(got, tc.cond) {
				t.Fatalf("condition body %v, want %v", got, tc.cond)
			}
		})
	}
}
