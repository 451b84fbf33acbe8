package amqp

import (
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
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

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		e      actors.Event
		source string
		op     string
	}{
		{actors.Event{Type: actors.EventTelemetry}, SourceTelemetry, ""},
		{actors.Event{Type: actors.EventTwin, Section: "desired"}, SourceTwinChanges, "updateTwin"},
		{actors.Event{Type: actors.EventAlert}, SourceAlerts, ""},
		{actors.Event{Type: actors.EventTopology, Data: []byte(`{"created":true}`)}, SourceLifecycle, "createDeviceIdentity"},
		{actors.Event{Type: actors.EventTopology, Data: []byte(`{"deleted":true}`)}, SourceLifecycle, "deleteDeviceIdentity"},
		{actors.Event{Type: actors.EventConnection, Data: []byte(`{"state":"connected"}`)}, SourceLifecycle, "deviceConnected"},
		{actors.Event{Type: actors.EventConnection, Data: []byte(`{"state":"disconnected"}`)}, SourceLifecycle, "deviceDisconnected"},
		{actors.Event{Type: actors.EventTopology, Data: []byte(`{}`)}, "", ""},
		{actors.Event{Type: actors.EventRollup}, "", ""},
	} {
		source, props, ok := classify(tc.e)
		if ok != (tc.source != "") || source != tc.source || props["opType"] != tc.op {
			t.Errorf("classify(%+v) = %q %v %v", tc.e, source, props, ok)
		}
	}
}
