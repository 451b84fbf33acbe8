package twin_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/twin"
)

// objDepth counts nested object levels the way Limits.MaxDepth does.
func objDepth(v any) int {
	d := 0
	switch x := v.(type) {
	case map[string]any:
		for _, c := range x {
			d = max(d, objDepth(c))
		}
		return d + 1
	case []any:
		for _, c := range x {
			d = max(d, objDepth(c))
		}
	}
	return d
}

var patchSeeds = []string{
	`{"a":"b"}`, `{"a":null}`, `{"a":{"b":"d","c":null}}`, `{"a":[{"b":"c"}]}`, `["c"]`, `null`, `"bar"`, `1`,
	`{"a":{"bb":{"ccc":null}}}`, `{"$version":1}`, `{"x":{"$y":1}}`, `{"deep":{"a":{"b":{"c":{"d":1}}}}}`,
	`{"s":"0123456789012345678901234567890123456789012345678901234567890123456789"}`, `{`, ``, `{"a":1}{"b":2}`,
	`{"u":"\ud800","k\u00e9":"<&>"}`, `{"n":1e308,"m":-0,"f":0.1}`,
}

func FuzzMergePatch(f *testing.F) {
	docs := []string{`{}`, `{"a":"b","c":{"d":[1,2]}}`, `{"e":null}`, `[1,2]`, `"s"`, `null`}
	for i, p := range patchSeeds {
		f.Add(docs[i%len(docs)], p)
	}
	f.Fuzz(func(t *testing.T, docIn, patchIn string) {
		var d, p any
		if json.Unmarshal([]byte(docIn), &d) != nil || json.Unmarshal([]byte(patchIn), &p) != nil {
			t.Skip()
		}
		dBefore, _ := json.Marshal(d)
		pBefore, _ := json.Marshal(p)
		once := twin.MergePatch(d, p)
		twice := twin.MergePatch(once, p)
		if !reflect.DeepEqual(once, twice) {
			t.Fatalf("not idempotent: once %v, twice %v", once, twice)
		}
		if b, _ := json.Marshal(d); string(b) != string(dBefore) {
			t.Fatalf("target mutated: %s -> %s", dBefore, b)
		}
		if b, _ := json.Marshal(p); string(b) != string(pBefore) {
			t.Fatalf("patch mutated: %s -> %s", pBefore, b)
		}
		// Through a Twin: the section is the merge result, the change data
		// reproduces it, and a second application is a no-op.
		if _, ok := d.(map[string]any); !ok {
			return
		}
		tw := twin.New("f", "device")
		big := twin.Limits{MaxSectionBytes: 1 << 30, MaxDepth: 1 << 20}
		if _, err := tw.Patch(twin.Desired, dBefore, t0, big); err != nil {
			return // reserved keys in the document
		}
		start := tw.Section(twin.Desired)
		c, err := tw.Patch(twin.Desired, []byte(patchIn), t1, big)
		if err != nil {
			return
		}
		want := twin.MergePatch(start, p)
		if got := tw.Section(twin.Desired); !reflect.DeepEqual(got, want) {
			t.Fatalf("section %v, want %v", got, want)
		}
		if !c.Noop {
			var data any
			if err := json.Unmarshal(c.Data, &data); err != nil {
				t.Fatalf("change data %s: %v", c.Data, err)
			}
			if got := twin.MergePatch(start, data); !reflect.DeepEqual(got, want) {
				t.Fatalf("start + change data = %v, want %v", got, want)
			}
		}
		c2, err := tw.Patch(twin.Desired, []byte(patchIn), t2, big)
		if err != nil || !c2.Noop {
			t.Fatalf("second application: %+v, %v", c2, err)
		}
	})
}

func FuzzPatchLimits(f *testing.F) {
	for _, p := range patchSeeds {
		f.Add(p)
	}
	small := twin.Limits{MaxSectionBytes: 128, MaxDepth: 3}
	f.Fuzz(func(t *testing.T, patch string) {
		tw := twin.New("f", "device")
		for _, s := range []twin.Section{twin.Desired, twin.Reported, twin.Tags} {
			if _, err := tw.Patch(s, []byte(`{"a":{"b":1},"c":"x"}`), t0, small); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range []twin.Section{twin.Desired, twin.Reported, twin.Tags} {
			before := doc(t, tw)
			v, sv := tw.Version(), tw.SectionVersion(s)
			c, err := tw.Patch(s, []byte(patch), t1, small)
			if err != nil {
				if !errors.Is(err, twin.ErrMalformed) && !errors.Is(err, twin.ErrReservedKey) &&
					!errors.Is(err, twin.ErrTooLarge) && !errors.Is(err, twin.ErrTooDeep) {
					t.Fatalf("unexpected error %v", err)
				}
				if after := doc(t, tw); after != before {
					t.Fatalf("refused patch changed the twin:\n%s\n%s", before, after)
				}
				continue
			}
			sec := tw.Section(s)
			b, _ := json.Marshal(sec)
			if len(b) > small.MaxSectionBytes || objDepth(sec) > small.MaxDepth {
				t.Fatalf("%s over limits: %d bytes, depth %d", s, len(b), objDepth(sec))
			}
			bump := int64(1)
			if c.Noop {
				bump = 0
				if doc(t, tw) != before {
					t.Fatalf("noop changed the twin")
				}
			}
			if tw.Version() != v+bump || c.Version != v+bump {
				t.Fatalf("version %d, want %d", tw.Version(), v+bump)
			}
			if s != twin.Tags && (tw.SectionVersion(s) != sv+bump || c.SectionVersion != sv+bump) {
				t.Fatalf("$version %d, want %d", tw.SectionVersion(s), sv+bump)
			}
		}
		roundTrip(t, doc(t, tw))
	})
}

// roundTrip loads d into a twin and checks it encodes back to d.
func roundTrip(t *testing.T, d string) {
	t.Helper()
	back := twin.New("", "")
	if err := back.UnmarshalJSON([]byte(d)); err != nil {
		t.Fatalf("UnmarshalJSON(%s): %v", d, err)
	}
	if got := doc(t, back); got != d {
		t.Fatalf("round trip differs:\n%s\n%s", d, got)
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(doc(f, populated(f)))
	f.Add(doc(f, twin.New("a", "b")))
	f.Add(`{}`)
	f.Add(oldDoc)
	f.Add(`{"version":9,"metadata":{"rollup":{"$lastUpdated":"2025-03-01T11:00:00+01:00"},"alerts":{"$lastUpdated":"0000-01-01T00:00:00+01:00"},"attributes":{"$lastUpdated":null}}}`)
	f.Add(`{"desired":{"$version":1e30}}`)
	f.Add(`{"metadata":{"desired":{"$lastUpdated":1,"a":[]}},"desired":{"a":{"b":2}}}`)
	f.Add(`{"telemetry":{"t":{"value":{"x":[1]},"ts":"0000-01-01T00:00:00+01:00"}},"connection":{"state":"x","since":"9999-12-31T23:59:59-01:00"}}`)
	f.Add(`{"alerts":null,"rollup":null,"tags":null,"version":-1}`)
	f.Fuzz(func(t *testing.T, in string) {
		tw := twin.New("id", "kind")
		if err := tw.UnmarshalJSON([]byte(in)); err != nil {
			if !errors.Is(err, twin.ErrMalformed) && !errors.Is(err, twin.ErrReservedKey) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		roundTrip(t, doc(t, tw))
		tw.Delta()
		// A loaded document goes on from its version, whatever it is (old
		// documents carry versions that live state moved): live state
		// leaves it, a patch adds one.
		v := tw.Version()
		tw.SetTelemetry(map[string]any{"fuzz": 1.5}, t2)
		tw.SetConnection(twin.Connection{State: "connected", Since: t2})
		tw.SetRollup(map[string]any{"fuzz": 1}, t2)
		tw.SetAlerts(json.RawMessage(`[{"fuzz":1}]`), t2)
		if tw.Version() != v {
			t.Fatalf("live state moved the version from %d to %d", v, tw.Version())
		}
		c, err := tw.Patch(twin.Desired, []byte(`{"z":1}`), t2, lim)
		if err == nil && !c.Noop && (c.Version != v+1 || tw.Version() != v+1) {
			t.Fatalf("patch: version %d (twin %d), want %d", c.Version, tw.Version(), v+1)
		}
		roundTrip(t, doc(t, tw))
	})
}

// FuzzLiveState applies arbitrary telemetry, connection, rollup and alerts
// to a twin and checks that none of them moves the version, that each
// changes the document exactly when it is not a no-op, and that patches
// and attribute changes still add exactly one.
func FuzzLiveState(f *testing.F) {
	f.Add(`{"temp":21.5,"on":true}`, "connected", `{"devices":3,"by":{"k":[1]}}`, `[{"id":"a"}]`, int64(0), `{"fan":"on"}`)
	f.Add(`{"temp":21.5}`, "connected", `{"devices":3,"connected":2,"by":{"k":[1,"a"]}}`,
		`[{"id":"a1","state":"active","severity":"major"}]`, int64(1e9), `{}`)
	f.Add(`{}`, "", `null`, `null`, int64(-1), `{"fan":null}`)
	f.Add(`{"x":null,"y":"\ud800"}`, "disconnected", `{"a":1e308}`, `{"not":"an array"}`, int64(1<<62), `[1]`)
	f.Add(`[1]`, "x", `"s"`, `[`, int64(-1<<62), `{"$x":1}`)
	f.Fuzz(func(t *testing.T, telemetry, state, rollup, alerts string, offset int64, patch string) {
		tw := populated(t)
		at := t2.Add(time.Duration(offset))
		var points, roll map[string]any
		_ = json.Unmarshal([]byte(telemetry), &points)
		_ = json.Unmarshal([]byte(rollup), &roll)
		v := tw.Version()
		for _, step := range []struct {
			name  string
			apply func() twin.Change
		}{
			{"telemetry", func() twin.Change { return tw.SetTelemetry(points, at) }},
			{"connection", func() twin.Change {
				return tw.SetConnection(twin.Connection{State: state, Since: at, Node: state, Protocol: state})
			}},
			{"rollup", func() twin.Change { return tw.SetRollup(roll, at) }},
			{"alerts", func() twin.Change { return tw.SetAlerts(json.RawMessage(alerts), at) }},
		} {
			before := doc(t, tw)
			c := step.apply()
			if c.Version != v || tw.Version() != v {
				t.Fatalf("%s moved the version: change %d, twin %d, want %d", step.name, c.Version, tw.Version(), v)
			}
			if c.Section != step.name || c.SectionVersion != 0 || c.Noop != (c.Data == nil) {
				t.Fatalf("%s: change %+v", step.name, c)
			}
			if changed := doc(t, tw) != before; changed == c.Noop {
				t.Fatalf("%s: document changed %v, noop %v", step.name, changed, c.Noop)
			}
		}
		roundTrip(t, doc(t, tw))
		c, err := tw.Patch(twin.Desired, []byte(patch), at, lim)
		want := v + 1
		if err != nil || c.Noop {
			want = v
		}
		if tw.Version() != want || (err == nil && c.Version != want) {
			t.Fatalf("patch %s (%v): version %d (change %d), want %d", patch, err, tw.Version(), c.Version, want)
		}
		if c := tw.AttributesChanged(at); c.Version != want+1 || tw.Version() != want+1 {
			t.Fatalf("attributes: version %d (twin %d), want %d", c.Version, tw.Version(), want+1)
		}
		roundTrip(t, doc(t, tw))
	})
}
