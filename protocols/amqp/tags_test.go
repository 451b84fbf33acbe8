package amqp

import (
	"errors"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
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
