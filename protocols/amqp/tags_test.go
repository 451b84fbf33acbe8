package amqp

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
)

func TestUsesTags(t *testing.T) {
	for _, tc := range []struct {
		cond string
		want bool
	}{
		{`tags.site == "hq"`, true},
		{`body.t > 1 && "hq" in tags`, true},
		{`properties.tags == "x"`, false}, // a property named tags, not the device's
		{`body.t > 1`, false},
		{``, false},
	} {
		p, err := compileCondition(tc.cond)
		if err != nil {
			t.Fatal(err)
		}
		if got := usesTags(p); got != tc.want {
			t.Errorf("usesTags(%q) = %v, want %v", tc.cond, got, tc.want)
		}
	}
}

// TestTagCache: tags are loaded once, dropped by a change of the device's
// tags (local or remote) or its deletion, and after the TTL; a failed load
// is not cached.
func TestTagCache(t *testing.T) {
	now := time.Unix(0, 0)
	loads := 0
	stored := map[string]any{"site": "hq"}
	fail := false
	c := newTagCache(func(id string) (map[string]any, error) {
		loads++
		if fail {
			return nil, errors.New("store closed")
		}
		return stored, nil
	}, time.Minute, 2, func() time.Time { return now })
	get := func() any {
		tags, _ := c.get("d1")
		return tags["site"]
	}
	steps := []struct {
		name  string
		do    func()
		site  any
		loads int
	}{
		{"first use loads", func() {}, "hq", 1},
		{"second use is cached", func() {}, "hq", 1},
		{"a telemetry event changes nothing", func() { c.observe(actors.Event{Type: actors.EventTelemetry, Entity: "d1"}) }, "hq", 1},
		{"a desired change changes nothing", func() { c.observe(actors.Event{Type: actors.EventTwin, Section: "desired", Entity: "d1"}) }, "hq", 1},
		{"a tags change reloads", func() {
			stored = map[string]any{"site": "plant"}
			c.observe(actors.Event{Type: actors.EventTwin, Section: "tags", Entity: "d1"})
		}, "plant", 2},
		{"a remote tags change reloads", func() {
			stored = map[string]any{"site": "lab"}
			c.observe(actors.Event{Type: actors.EventTwin, Section: "tags", Entity: "d1", Remote: true})
		}, "lab", 3},
		{"the TTL reloads", func() { stored = map[string]any{"site": "yard"}; now = now.Add(2 * time.Minute) }, "yard", 4},
		{"deletion drops; a failed load yields no tags", func() {
			fail = true
			c.observe(actors.Event{Type: actors.EventTopology, Entity: "d1"})
		}, nil, 5},
		{"and is not cached", func() { fail = false }, "yard", 6},
	}
	for _, s := range steps {
		s.do()
		if got := get(); got != s.site || loads != s.loads {
			t.Fatalf("%s: site %v after %d loads, want %v after %d", s.name, got, loads, s.site, s.loads)
		}
	}
	_, _ = c.get("d2")
	_, _ = c.get("d3") // past max (2): one entry made room
	if len(c.m) != 2 {
		t.Fatalf("%d entries, bound 2", len(c.m))
	}
}

// TestTelemetryUntouchedWithoutATelemetryRoute: with routes for other
// sources only, a telemetry event costs RouteEvents (called in the grain,
// before its commit) no allocation (its points are not re-encoded) and
// routes nothing; without an enabled route the Service is not Active, so
// grains do not call it at all; KeepPayloads follows whether a telemetry
// route is enabled.
func TestTelemetryUntouchedWithoutATelemetryRoute(t *testing.T) {
	var keep []bool
	s, err := New(Config{Path: t.TempDir() + "/amqp.db", KeepPayloads: func(on bool) { keep = append(keep, on) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutEndpoint(Endpoint{Name: "e", Type: "amqp", URL: "amqp://127.0.0.1:1", Address: "/queue/x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRoute(Route{Name: "life", Source: SourceLifecycle, Endpoint: "e", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	e := actors.Event{Type: actors.EventTelemetry, Entity: "d1", Telemetry: &actorspb.Telemetry{
		Points: entity.PointsProto(map[string]any{"t": 1.0}), ContentType: "application/json"}}
	evs := []actors.Event{e}
	var routed []actors.OutboxMessage
	if n := testing.AllocsPerRun(100, func() { routed = s.RouteEvents(evs) }); n != 0 {
		t.Fatalf("RouteEvents of telemetry without a telemetry route: %v allocations", n)
	}
	if len(routed) != 0 {
		t.Fatalf("%d messages routed", len(routed))
	}
	if err := s.DeleteRoute("life"); err != nil {
		t.Fatal(err)
	}
	if s.Active() {
		t.Fatal("active without an enabled route: grains would call RouteEvents")
	}
	if err := s.PutRoute(Route{Name: "all", Source: SourceTelemetry, Endpoint: "e", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if routed = s.RouteEvents(evs); len(routed) != 1 || routed[0].Endpoint != "e" {
		t.Fatalf("routed %+v with a telemetry route, want 1 message to e", routed)
	}
	if err := s.DeleteRoute("all"); err != nil {
		t.Fatal(err)
	}
	if want := []bool{false, false, false, true, false}; !reflect.DeepEqual(keep, want) {
		t.Fatalf("KeepPayloads calls %v, want %v", keep, want)
	}
}
