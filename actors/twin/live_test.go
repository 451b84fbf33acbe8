package twin_test

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/twin"
)

// Tests of the live state (telemetry, connection, rollup, alerts) and of
// what moves the version.

func TestTelemetry(t *testing.T) {
	type step struct {
		points  map[string]any
		ts      time.Time
		noop    bool
		data    string
		version int64 // always 0: telemetry never moves the version
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  string // telemetry member of the document
	}{
		{"first values", []step{
			{map[string]any{"temp": 21.5, "on": true, "s": "x"}, t0, false,
				`{"on":{"value":true,"ts":"2025-03-01T10:00:00Z"},"s":{"value":"x","ts":"2025-03-01T10:00:00Z"},"temp":{"value":21.5,"ts":"2025-03-01T10:00:00Z"}}`, 0},
		}, `{"on":{"value":true,"ts":"2025-03-01T10:00:00Z"},"s":{"value":"x","ts":"2025-03-01T10:00:00Z"},"temp":{"value":21.5,"ts":"2025-03-01T10:00:00Z"}}`},
		{"merge keeps other points", []step{
			{map[string]any{"a": 1.0, "b": 2.0}, t0, false, `{"a":{"value":1,"ts":"2025-03-01T10:00:00Z"},"b":{"value":2,"ts":"2025-03-01T10:00:00Z"}}`, 0},
			{map[string]any{"b": 3.0}, t1, false, `{"b":{"value":3,"ts":"2025-03-01T10:00:01Z"}}`, 0},
		}, `{"a":{"value":1,"ts":"2025-03-01T10:00:00Z"},"b":{"value":3,"ts":"2025-03-01T10:00:01Z"}}`},
		{"same values and ts are a noop", []step{
			{map[string]any{"a": 1.0}, t0, false, `{"a":{"value":1,"ts":"2025-03-01T10:00:00Z"}}`, 0},
			{map[string]any{"a": 1}, t0.In(time.FixedZone("x", 7200)), true, ``, 0},
			{map[string]any{}, t1, true, ``, 0},
			{nil, t1, true, ``, 0},
		}, `{"a":{"value":1,"ts":"2025-03-01T10:00:00Z"}}`},
		{"same value new ts changes", []step{
			{map[string]any{"a": 1.0}, t0, false, `{"a":{"value":1,"ts":"2025-03-01T10:00:00Z"}}`, 0},
			{map[string]any{"a": 1.0}, t1, false, `{"a":{"value":1,"ts":"2025-03-01T10:00:01Z"}}`, 0},
		}, `{"a":{"value":1,"ts":"2025-03-01T10:00:01Z"}}`},
		{"data holds only changed points", []step{
			{map[string]any{"a": 1.0, "b": 2.0}, t0, false, `{"a":{"value":1,"ts":"2025-03-01T10:00:00Z"},"b":{"value":2,"ts":"2025-03-01T10:00:00Z"}}`, 0},
			{map[string]any{"a": 1.0, "b": 5.0}, t0, false, `{"b":{"value":5,"ts":"2025-03-01T10:00:00Z"}}`, 0},
		}, `{"a":{"value":1,"ts":"2025-03-01T10:00:00Z"},"b":{"value":5,"ts":"2025-03-01T10:00:00Z"}}`},
		{"unrepresentable values ignored", []step{
			{map[string]any{"nan": jsonNaN(), "nil": nil}, t0, true, ``, 0},
			{map[string]any{"ok": 1}, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), true, ``, 0},
		}, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := twin.New("d", "device")
			for i, st := range tc.steps {
				c := tw.SetTelemetry(st.points, st.ts)
				if c.Noop != st.noop || string(c.Data) != st.data || c.Version != st.version || tw.Version() != st.version ||
					c.Section != "telemetry" || c.SectionVersion != 0 {
					t.Errorf("step %d: change %+v data %s, want noop %v data %s version %d", i, c, c.Data, st.noop, st.data, st.version)
				}
			}
			jsonEq(t, member(t, tw, "telemetry"), tc.want)
		})
	}
}

func jsonNaN() float64 {
	zero := 0.0
	return zero / zero
}

func TestConnection(t *testing.T) {
	tw := twin.New("d", "device")
	mustPatch(t, tw, twin.Desired, `{"a":1}`, t0) // version 1
	for i, st := range []struct {
		c    twin.Connection
		noop bool
		data string
	}{
		{twin.Connection{State: "disconnected"}, true, ``},
		{twin.Connection{State: "connected", Since: t0, Node: "n1"}, false, `{"state":"connected","since":"2025-03-01T10:00:00Z","node":"n1"}`},
		{twin.Connection{State: "connected", Since: t0.In(time.FixedZone("x", 3600)), Node: "n1"}, true, ``},
		{twin.Connection{State: "connected", Since: t0, Node: "n2"}, false, `{"state":"connected","since":"2025-03-01T10:00:00Z","node":"n2"}`},
		{twin.Connection{State: "connected", Since: t0, Node: "n2", Protocol: "coap"}, false, `{"state":"connected","since":"2025-03-01T10:00:00Z","node":"n2","protocol":"coap"}`},
		{twin.Connection{State: "connected", Since: t0, Node: "n2", Protocol: "coap"}, true, ``},
		{twin.Connection{State: "disconnected", Since: t1}, false, `{"state":"disconnected","since":"2025-03-01T10:00:01Z"}`},
	} {
		c := tw.SetConnection(st.c)
		if c.Noop != st.noop || string(c.Data) != st.data || c.Section != "connection" {
			t.Errorf("step %d: %+v data %s, want noop %v data %s", i, c, c.Data, st.noop, st.data)
		}
		if c.Version != 1 || tw.Version() != 1 {
			t.Errorf("step %d: version %d (twin %d), want the unchanged 1", i, c.Version, tw.Version())
		}
	}
	jsonEq(t, member(t, tw, "connection"), `{"state":"disconnected","since":"2025-03-01T10:00:01Z"}`)
}

func TestRollup(t *testing.T) {
	tw := twin.New("b", "building")
	if got := member(t, tw, "metadata"); got.(map[string]any)["rollup"] != nil {
		t.Errorf("new twin has a rollup time: %v", got)
	}
	for i, st := range []struct {
		r    map[string]any
		noop bool
		data string
	}{
		{nil, true, ``},
		{map[string]any{}, true, ``},
		{map[string]any{"devices": 3, "connected": 1}, false, `{"connected":1,"devices":3}`},
		{map[string]any{"devices": 3.0, "connected": 1.0}, true, ``},
		{map[string]any{"devices": 4.0}, false, `{"devices":4}`},
		{map[string]any{"devices": 4.0, "by": map[string]int{"room": 2}}, false, `{"by":{"room":2},"devices":4}`},
		{map[string]any{"devices": 4.0, "by": map[string]any{"room": 2}}, true, ``},
		{nil, false, `{}`},
	} {
		now := t0.Add(time.Duration(i) * time.Minute)
		before := tw.RollupUpdated()
		c := tw.SetRollup(st.r, now)
		if c.Noop != st.noop || string(c.Data) != st.data || c.Section != "rollup" {
			t.Errorf("step %d: %+v data %s, want noop %v data %s", i, c, c.Data, st.noop, st.data)
		}
		if c.Version != 0 || tw.Version() != 0 {
			t.Errorf("step %d: version %d (twin %d), want the unchanged 0", i, c.Version, tw.Version())
		}
		want := now
		if st.noop {
			want = before
		}
		if got := tw.RollupUpdated(); !got.Equal(want) {
			t.Errorf("step %d: rollup updated %v, want %v", i, got, want)
		}
	}
	// The last change was step 7, at t0+7m.
	jsonEq(t, member(t, tw, "metadata", "rollup"), `{"$lastUpdated":"2025-03-01T10:07:00Z"}`)
	// A time JSON cannot hold is unknown: left out of the document.
	tw.SetRollup(map[string]any{"devices": 1}, time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC))
	if got := member(t, tw, "metadata"); got.(map[string]any)["rollup"] != nil || !tw.RollupUpdated().IsZero() {
		t.Errorf("metadata %v, rollup updated %v, want no rollup time", got, tw.RollupUpdated())
	}
}

func TestAlerts(t *testing.T) {
	tw := twin.New("d", "device")
	for i, st := range []struct {
		a    string
		noop bool
		data string
	}{
		{``, true, ``},
		{`null`, true, ``},
		{`[]`, true, ``},
		{`{"id":1}`, true, ``}, // not an array: refused, twin unchanged
		{`[`, true, ``},
		{`[{"id":"a","sev":"major"}]`, false, `[{"id":"a","sev":"major"}]`},
		{` [ {"sev":"major", "id":"a"} ] `, true, ``},
		{`[{"id":"a","sev":"minor"}]`, false, `[{"id":"a","sev":"minor"}]`},
		{``, false, `[]`},
	} {
		now := t0.Add(time.Duration(i) * time.Minute)
		before := tw.AlertsUpdated()
		var raw json.RawMessage
		if st.a != "" {
			raw = json.RawMessage(st.a)
		}
		c := tw.SetAlerts(raw, now)
		if c.Noop != st.noop || string(c.Data) != st.data || c.Section != "alerts" {
			t.Errorf("step %d: %+v data %s, want noop %v data %s", i, c, c.Data, st.noop, st.data)
		}
		if c.Version != 0 || tw.Version() != 0 {
			t.Errorf("step %d: version %d (twin %d), want the unchanged 0", i, c.Version, tw.Version())
		}
		want := now
		if st.noop {
			want = before
		}
		if got := tw.AlertsUpdated(); !got.Equal(want) {
			t.Errorf("step %d: alerts updated %v, want %v", i, got, want)
		}
	}
	if got := member(t, tw, "alerts"); !reflect.DeepEqual(got, []any{}) {
		t.Errorf("alerts = %#v, want []", got)
	}
	// The last change was step 8, at t0+8m.
	jsonEq(t, member(t, tw, "metadata", "alerts"), `{"$lastUpdated":"2025-03-01T10:08:00Z"}`)
}

func TestAttributesChanged(t *testing.T) {
	tw := twin.New("d", "device")
	mustPatch(t, tw, twin.Desired, `{"a":1}`, t0)
	local := time.Date(2025, 3, 1, 12, 0, 0, 5, time.FixedZone("x", 7200))
	for i := range 3 {
		before := doc(t, tw)
		c := tw.AttributesChanged(local.Add(time.Duration(i) * time.Second))
		want := int64(2 + i)
		if !reflect.DeepEqual(c, twin.Change{Version: want, Section: "attributes"}) || tw.Version() != want {
			t.Errorf("step %d: change %+v, twin version %d, want version %d", i, c, tw.Version(), want)
		}
		if doc(t, tw) == before {
			t.Errorf("step %d: document unchanged", i)
		}
	}
	if got := tw.AttributesUpdated(); !got.Equal(local.Add(2*time.Second)) || got.Location() != time.UTC {
		t.Errorf("attributes updated %v", got)
	}
	jsonEq(t, member(t, tw, "metadata", "attributes"), `{"$lastUpdated":"2025-03-01T10:00:02.000000005Z"}`)
	// Desired and reported are not touched.
	if tw.SectionVersion(twin.Desired) != 1 || tw.SectionVersion(twin.Reported) != 0 {
		t.Errorf("$versions %d, %d", tw.SectionVersion(twin.Desired), tw.SectionVersion(twin.Reported))
	}
	// A time JSON cannot hold still bumps the version; the time is unknown.
	tw.AttributesChanged(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))
	if tw.Version() != 5 || !tw.AttributesUpdated().IsZero() || member(t, tw, "metadata").(map[string]any)["attributes"] != nil {
		t.Errorf("out-of-range time: version %d, updated %v", tw.Version(), tw.AttributesUpdated())
	}
	roundTrip(t, doc(t, tw))
}

// TestVersionSemantics holds the twin to CONTRACT section 4: version (the
// ETag) rises by exactly one on an accepted change of desired, reported,
// tags or the entity's attributes, and not at all on live state
// (telemetry, connection, rollup, alerts) or on a no-op.
func TestVersionSemantics(t *testing.T) {
	patch := func(s twin.Section, p string) func(*twin.Twin) (twin.Change, error) {
		return func(tw *twin.Twin) (twin.Change, error) { return tw.Patch(s, []byte(p), t2, lim) }
	}
	live := func(f func(*twin.Twin) twin.Change) func(*twin.Twin) (twin.Change, error) {
		return func(tw *twin.Twin) (twin.Change, error) { return f(tw), nil }
	}
	later := t2.Add(time.Hour)
	for _, tc := range []struct {
		name    string
		apply   func(*twin.Twin) (twin.Change, error)
		section string
		bump    int64
		noop    bool
	}{
		{"desired", patch(twin.Desired, `{"fan":"off","cfg":{"rate":6,"x":{"y":1}},"u":null}`), "desired", 1, false},
		{"reported", patch(twin.Reported, `{"fan":"on","neg":null,"n":{"a":1,"b":[1]}}`), "reported", 1, false},
		{"tags", patch(twin.Tags, `{"site":"b","floor":{"n":3},"new":true}`), "tags", 1, false},
		{"desired noop", patch(twin.Desired, `{"fan":"on","cfg":{"rate":5}}`), "desired", 0, true},
		{"reported noop", patch(twin.Reported, `{"gone":null}`), "reported", 0, true},
		{"tags noop", patch(twin.Tags, `{}`), "tags", 0, true},
		{"attributes", live(func(tw *twin.Twin) twin.Change { return tw.AttributesChanged(later) }), "attributes", 1, false},
		{"telemetry", live(func(tw *twin.Twin) twin.Change {
			return tw.SetTelemetry(map[string]any{"temp": 22.0, "new": "x"}, later)
		}), "telemetry", 0, false},
		{"telemetry noop", live(func(tw *twin.Twin) twin.Change {
			return tw.SetTelemetry(map[string]any{"temp": 21.5}, t2)
		}), "telemetry", 0, true},
		{"connect", live(func(tw *twin.Twin) twin.Change {
			return tw.SetConnection(twin.Connection{State: "connected", Since: later, Node: "n2"})
		}), "connection", 0, false},
		{"disconnect", live(func(tw *twin.Twin) twin.Change {
			return tw.SetConnection(twin.Connection{State: "disconnected", Since: later})
		}), "connection", 0, false},
		{"connection noop", live(func(tw *twin.Twin) twin.Change {
			return tw.SetConnection(twin.Connection{State: "connected", Since: t1, Node: "n1"})
		}), "connection", 0, true},
		{"rollup", live(func(tw *twin.Twin) twin.Change {
			return tw.SetRollup(map[string]any{"devices": 4}, later)
		}), "rollup", 0, false},
		{"rollup noop", live(func(tw *twin.Twin) twin.Change { return tw.SetRollup(tw.Rollup(), later) }), "rollup", 0, true},
		{"alerts", live(func(tw *twin.Twin) twin.Change { return tw.SetAlerts(nil, later) }), "alerts", 0, false},
		{"alerts noop", live(func(tw *twin.Twin) twin.Change { return tw.SetAlerts(tw.Alerts(), later) }), "alerts", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := populated(t)
			before := doc(t, tw)
			v, dv, rv := tw.Version(), tw.SectionVersion(twin.Desired), tw.SectionVersion(twin.Reported)
			c, err := tc.apply(tw)
			if err != nil {
				t.Fatal(err)
			}
			if c.Section != tc.section || c.Noop != tc.noop {
				t.Errorf("change %+v, want section %s noop %v", c, tc.section, tc.noop)
			}
			want := v + tc.bump
			if c.Version != want || tw.Version() != want || member(t, tw, "version") != float64(want) {
				t.Errorf("version %d (twin %d, document %v), want %d", c.Version, tw.Version(), member(t, tw, "version"), want)
			}
			// $version moves with its section, once per patch.
			wantDV, wantRV := dv, rv
			switch {
			case tc.section == "desired" && !tc.noop:
				wantDV++
			case tc.section == "reported" && !tc.noop:
				wantRV++
			}
			if tw.SectionVersion(twin.Desired) != wantDV || tw.SectionVersion(twin.Reported) != wantRV {
				t.Errorf("$versions %d, %d, want %d, %d", tw.SectionVersion(twin.Desired), tw.SectionVersion(twin.Reported), wantDV, wantRV)
			}
			if changed := doc(t, tw) != before; changed == tc.noop {
				t.Errorf("document changed: %v, want %v", changed, !tc.noop)
			}
		})
	}
}

// TestIfMatchSurvivesLiveState is the scenario of CONTRACT section 4: a
// client reads the twin, the device sends telemetry, reconnects and the
// rollup and alerts move; the version the client read still matches.
func TestIfMatchSurvivesLiveState(t *testing.T) {
	tw := populated(t)
	etag := tw.Version()
	for i := range 10 {
		at := t2.Add(time.Duration(i+1) * time.Second)
		tw.SetTelemetry(map[string]any{"temp": 20.0 + float64(i)}, at)
		tw.SetConnection(twin.Connection{State: []string{"disconnected", "connected"}[i%2], Since: at, Node: "n1"})
		tw.SetRollup(map[string]any{"devices": i}, at)
		tw.SetAlerts(json.RawMessage(fmt.Sprintf(`[{"id":"a%d"}]`, i)), at)
	}
	if tw.Version() != etag {
		t.Fatalf("version %d after live-state changes, want the read %d", tw.Version(), etag)
	}
	c := mustPatch(t, tw, twin.Desired, `{"fan":"auto"}`, t2)
	if c.Version != etag+1 {
		t.Errorf("patch after live state: version %d, want %d", c.Version, etag+1)
	}
}

// TestMergeTelemetryMatchesSetTelemetry: the entity core's MergeTelemetry
// changes a twin exactly as SetTelemetry does and reports the same no-ops.
func TestMergeTelemetryMatchesSetTelemetry(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	steps := []struct {
		points map[string]any
		ts     time.Time
	}{
		{map[string]any{"temp": 21.5, "on": true}, t0},
		{map[string]any{"temp": 21.5, "on": true}, t0},                               // same values and time: no-op
		{map[string]any{"temp": 22.0}, t0.Add(time.Second)},                          // one changes
		{map[string]any{"bad": math.NaN(), "nil": nil}, t0},                          // nothing representable
		{map[string]any{"temp": 22.0}, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, // out of range
	}
	a, b := twin.New("d1", "device"), twin.New("d1", "device")
	for i, st := range steps {
		ch := a.SetTelemetry(st.points, st.ts)
		if changed := b.MergeTelemetry(st.points, st.ts); changed == ch.Noop {
			t.Errorf("step %d: MergeTelemetry reported %v, SetTelemetry's no-op is %v", i, changed, ch.Noop)
		}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("step %d: twins differ:\n%s\n%s", i, ja, jb)
		}
	}
}
