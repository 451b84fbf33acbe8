package twin_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/twin"
)

var (
	t0  = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	t1  = t0.Add(time.Second)
	t2  = t0.Add(2 * time.Second)
	lim = twin.DefaultLimits()
)

func doc(t testing.TB, tw *twin.Twin) string {
	t.Helper()
	b, err := tw.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	return string(b)
}

// member returns the decoded member path of the twin document.
func member(t testing.TB, tw *twin.Twin, path ...string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(doc(t, tw)), &v); err != nil {
		t.Fatal(err)
	}
	for _, p := range path {
		v = v.(map[string]any)[p]
	}
	return v
}

func jsonEq(t testing.TB, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	if !reflect.DeepEqual(got, w) {
		g, _ := json.Marshal(got)
		t.Errorf("got  %s\nwant %s", g, want)
	}
}

func mustPatch(t testing.TB, tw *twin.Twin, s twin.Section, p string, now time.Time) twin.Change {
	t.Helper()
	c, err := tw.Patch(s, []byte(p), now, lim)
	if err != nil {
		t.Fatalf("Patch(%s, %s): %v", s, p, err)
	}
	return c
}

func TestNew(t *testing.T) {
	tw := twin.New("dev-1", "device")
	want := `{"id":"dev-1","kind":"device","version":0,"tags":{},"desired":{"$version":0},"reported":{"$version":0},` +
		`"delta":{},"telemetry":{},"connection":{"state":"disconnected"},"rollup":{},"alerts":[],` +
		`"metadata":{"desired":{},"reported":{}}}`
	if got := doc(t, tw); got != want {
		t.Errorf("new twin\n got %s\nwant %s", got, want)
	}
	if tw.ID() != "dev-1" || tw.Kind() != "device" || tw.Version() != 0 {
		t.Errorf("ID, Kind, Version = %q, %q, %d", tw.ID(), tw.Kind(), tw.Version())
	}
}

func TestPatchVersions(t *testing.T) {
	type step struct {
		sec                     twin.Section
		patch                   string
		version, desVer, repVer int64
		noop                    bool
		data                    string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"desired bumps version and desired $version", []step{
			{twin.Desired, `{"a":1}`, 1, 1, 0, false, `{"a":1}`},
			{twin.Desired, `{"b":2}`, 2, 2, 0, false, `{"b":2}`},
		}},
		{"reported bumps version and reported $version", []step{
			{twin.Reported, `{"a":1}`, 1, 0, 1, false, `{"a":1}`},
			{twin.Desired, `{"a":1}`, 2, 1, 1, false, `{"a":1}`},
			{twin.Reported, `{"a":2}`, 3, 1, 2, false, `{"a":2}`},
		}},
		{"tags bump only version", []step{
			{twin.Tags, `{"site":"x"}`, 1, 0, 0, false, `{"site":"x"}`},
			{twin.Tags, `{"site":null}`, 2, 0, 0, false, `{"site":null}`},
		}},
		{"same value is a noop", []step{
			{twin.Desired, `{"a":1,"b":{"c":true}}`, 1, 1, 0, false, `{"a":1,"b":{"c":true}}`},
			{twin.Desired, `{"a":1}`, 1, 1, 0, true, ``},
			{twin.Desired, `{"b":{"c":true}}`, 1, 1, 0, true, ``},
			{twin.Desired, `{"a":1.0}`, 1, 1, 0, true, ``},
		}},
		{"empty patch is a noop", []step{
			{twin.Reported, `{}`, 0, 0, 0, true, ``},
			{twin.Tags, ` { } `, 0, 0, 0, true, ``},
		}},
		{"deleting an absent member is a noop", []step{
			{twin.Desired, `{"nope":null}`, 0, 0, 0, true, ``},
			{twin.Desired, `{"a":{"b":1}}`, 1, 1, 0, false, `{"a":{"b":1}}`},
			{twin.Desired, `{"a":{"x":null}}`, 1, 1, 0, true, ``},
		}},
		{"data is the normalized patch", []step{
			{twin.Desired, `{"a":1,"b":{"c":1,"d":2}}`, 1, 1, 0, false, `{"a":1,"b":{"c":1,"d":2}}`},
			{twin.Desired, `{"a":1,"b":{"c":1,"d":3},"gone":null}`, 2, 2, 0, false, `{"b":{"d":3}}`},
			{twin.Desired, `{"b":{"c":null,"d":null}}`, 3, 3, 0, false, `{"b":{"c":null,"d":null}}`},
		}},
		{"integers print as integers", []step{
			{twin.Reported, `{"n":3.0,"big":1e6,"f":0.5}`, 1, 0, 1, false, `{"big":1000000,"f":0.5,"n":3}`},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := twin.New("d", "device")
			for i, st := range tc.steps {
				before := doc(t, tw)
				c := mustPatch(t, tw, st.sec, st.patch, t0.Add(time.Duration(i)*time.Second))
				if c.Version != st.version || tw.Version() != st.version {
					t.Errorf("step %d: version %d (twin %d), want %d", i, c.Version, tw.Version(), st.version)
				}
				if got := tw.SectionVersion(twin.Desired); got != st.desVer {
					t.Errorf("step %d: desired $version %d, want %d", i, got, st.desVer)
				}
				if got := tw.SectionVersion(twin.Reported); got != st.repVer {
					t.Errorf("step %d: reported $version %d, want %d", i, got, st.repVer)
				}
				if got := tw.SectionVersion(twin.Tags); got != 0 {
					t.Errorf("step %d: tags $version %d, want 0", i, got)
				}
				if want := tw.SectionVersion(st.sec); c.SectionVersion != want {
					t.Errorf("step %d: change section version %d, want %d", i, c.SectionVersion, want)
				}
				if c.Section != string(st.sec) || c.Noop != st.noop || string(c.Data) != st.data {
					t.Errorf("step %d: change %+v (data %s), want section %s noop %v data %s", i, c, c.Data, st.sec, st.noop, st.data)
				}
				if st.noop && doc(t, tw) != before {
					t.Errorf("step %d: noop changed the document", i)
				}
			}
		})
	}
}

func TestPatchRefused(t *testing.T) {
	small := twin.Limits{MaxSectionBytes: 40, MaxDepth: 3}
	for _, tc := range []struct {
		name  string
		sec   twin.Section
		patch string
		lim   twin.Limits
		want  error
	}{
		{"not JSON", twin.Desired, `{"a":`, lim, twin.ErrMalformed},
		{"empty", twin.Desired, ``, lim, twin.ErrMalformed},
		{"trailing garbage", twin.Desired, `{"a":1} x`, lim, twin.ErrMalformed},
		{"JSON array", twin.Desired, `[{"a":1}]`, lim, twin.ErrMalformed},
		{"JSON null", twin.Reported, `null`, lim, twin.ErrMalformed},
		{"JSON string", twin.Tags, `"a"`, lim, twin.ErrMalformed},
		{"JSON number", twin.Tags, `1`, lim, twin.ErrMalformed},
		{"$version", twin.Reported, `{"$version":5}`, lim, twin.ErrReservedKey},
		{"$metadata", twin.Desired, `{"$metadata":{}}`, lim, twin.ErrReservedKey},
		{"deleting $version", twin.Desired, `{"$version":null}`, lim, twin.ErrReservedKey},
		{"nested reserved key", twin.Desired, `{"a":{"b":{"$lastUpdated":"x"}}}`, lim, twin.ErrReservedKey},
		{"reserved key in tags", twin.Tags, `{"$x":1}`, lim, twin.ErrReservedKey},
		{"reserved key beside a valid change", twin.Reported, `{"ok":2,"$x":1}`, lim, twin.ErrReservedKey},
		{"too large", twin.Reported, `{"s":"` + strings.Repeat("x", 40) + `"}`, small, twin.ErrTooLarge},
		{"too large by growth", twin.Reported, `{"new":"123456789"}`, twin.Limits{MaxSectionBytes: 24}, twin.ErrTooLarge},
		{"too large default", twin.Reported, `{"s":"` + strings.Repeat("x", 32<<10) + `"}`, twin.Limits{}, twin.ErrTooLarge},
		{"too deep", twin.Desired, `{"a":{"b":{"c":{}}}}`, small, twin.ErrTooDeep},
		{"too deep below existing", twin.Desired, `{"o":{"p":{"q":1}}}`, twin.Limits{MaxDepth: 2}, twin.ErrTooDeep},
		{"too deep through array", twin.Desired, `{"a":[{"b":{"c":{}}}]}`, small, twin.ErrTooDeep},
		{"too deep default", twin.Desired, strings.Repeat(`{"a":`, 11) + `1` + strings.Repeat(`}`, 11), twin.Limits{}, twin.ErrTooDeep},
		{"unknown section", twin.Section("telemetry"), `{"a":1}`, lim, twin.ErrUnknownSection},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := twin.New("d", "device")
			mustPatch(t, tw, twin.Desired, `{"o":{"p":1}}`, t0)
			mustPatch(t, tw, twin.Reported, `{"r":1}`, t0)
			mustPatch(t, tw, twin.Tags, `{"t":1}`, t0)
			before := doc(t, tw)
			c, err := tw.Patch(tc.sec, []byte(tc.patch), t1, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !reflect.DeepEqual(c, twin.Change{}) {
				t.Errorf("change on error = %+v, want zero", c)
			}
			if after := doc(t, tw); after != before {
				t.Errorf("refused patch changed the twin\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestPatchLimitsBoundary(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch string
		lim   twin.Limits
	}{
		// {"s":"xxxxxxxxxx"} is 18 bytes.
		{"exactly max bytes", `{"s":"xxxxxxxxxx"}`, twin.Limits{MaxSectionBytes: 18, MaxDepth: 1}},
		{"exactly max depth", `{"a":{"b":{}}}`, twin.Limits{MaxDepth: 3}},
		{"arrays add no level", `{"a":[[[[1]]]]}`, twin.Limits{MaxDepth: 1}},
		{"deleting shrinks", `{"s":null,"t":"y"}`, twin.Limits{MaxSectionBytes: 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := twin.New("d", "device")
			if tc.name == "deleting shrinks" {
				mustPatch(t, tw, twin.Reported, `{"s":"a long value"}`, t0)
			}
			if _, err := tw.Patch(twin.Reported, []byte(tc.patch), t1, tc.lim); err != nil {
				t.Fatalf("Patch: %v", err)
			}
		})
	}
}

func TestPatchReservedInsideArrayAllowed(t *testing.T) {
	tw := twin.New("d", "device")
	mustPatch(t, tw, twin.Reported, `{"list":[{"$type":"x"}]}`, t0)
	jsonEq(t, tw.Section(twin.Reported), `{"list":[{"$type":"x"}]}`)
}

func TestMetadata(t *testing.T) {
	ts := func(tm time.Time) string { return tm.Format(time.RFC3339Nano) }
	stamp := func(tm time.Time, v int) string {
		return `"$lastUpdated":"` + ts(tm) + `","$lastUpdatedVersion":` + string(rune('0'+v))
	}
	for _, tc := range []struct {
		name    string
		patches []string // applied to desired at t0, t1, t2, …
		want    string   // metadata.desired
	}{
		{"flat", []string{`{"a":1,"b":2}`},
			`{` + stamp(t0, 1) + `,"a":{` + stamp(t0, 1) + `},"b":{` + stamp(t0, 1) + `}}`},
		{"only changed members restamped", []string{`{"a":1,"b":2}`, `{"a":1,"b":3}`},
			`{` + stamp(t1, 2) + `,"a":{` + stamp(t0, 1) + `},"b":{` + stamp(t1, 2) + `}}`},
		{"nested object stamps its path", []string{`{"o":{"x":1,"y":{"z":1}},"k":1}`, `{"o":{"y":{"z":2}}}`},
			`{` + stamp(t1, 2) + `,"k":{` + stamp(t0, 1) + `},"o":{` + stamp(t1, 2) + `,"x":{` + stamp(t0, 1) + `},` +
				`"y":{` + stamp(t1, 2) + `,"z":{` + stamp(t1, 2) + `}}}}`},
		{"delete removes metadata", []string{`{"o":{"x":1,"y":2},"k":1}`, `{"o":{"x":null},"k":null}`},
			`{` + stamp(t1, 2) + `,"o":{` + stamp(t1, 2) + `,"y":{` + stamp(t0, 1) + `}}}`},
		{"object replaced by leaf drops children", []string{`{"o":{"x":1}}`, `{"o":5}`},
			`{` + stamp(t1, 2) + `,"o":{` + stamp(t1, 2) + `}}`},
		{"leaf replaced by object gains children", []string{`{"o":5}`, `{"o":{"x":{"y":1}}}`},
			`{` + stamp(t1, 2) + `,"o":{` + stamp(t1, 2) + `,"x":{` + stamp(t1, 2) + `,"y":{` + stamp(t1, 2) + `}}}}`},
		{"emptied object keeps its node", []string{`{"o":{"x":1}}`, `{"o":{"x":null}}`},
			`{` + stamp(t1, 2) + `,"o":{` + stamp(t1, 2) + `}}`},
		{"arrays are leaves", []string{`{"l":[{"a":1}]}`},
			`{` + stamp(t0, 1) + `,"l":{` + stamp(t0, 1) + `}}`},
		{"noop leaves stamps", []string{`{"a":1}`, `{"a":1}`},
			`{` + stamp(t0, 1) + `,"a":{` + stamp(t0, 1) + `}}`},
		{"delete everything", []string{`{"a":1}`, `{"a":null}`},
			`{` + stamp(t1, 2) + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := twin.New("d", "device")
			for i, p := range tc.patches {
				mustPatch(t, tw, twin.Desired, p, t0.Add(time.Duration(i)*time.Second))
			}
			jsonEq(t, member(t, tw, "metadata", "desired"), tc.want)
			jsonEq(t, member(t, tw, "metadata", "reported"), `{}`)
		})
	}
}

func TestMetadataTimeIsUTC(t *testing.T) {
	tw := twin.New("d", "device")
	now := time.Date(2025, 1, 1, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	mustPatch(t, tw, twin.Reported, `{"a":1}`, now)
	got := member(t, tw, "metadata", "reported", "a", "$lastUpdated")
	if got != "2025-01-01T11:00:00.123456789Z" {
		t.Errorf("$lastUpdated = %v", got)
	}
}

func TestDelta(t *testing.T) {
	for _, tc := range []struct{ name, desired, reported, want string }{
		{"empty", `{}`, `{}`, `{}`},
		{"in sync", `{"a":1,"o":{"b":"x"}}`, `{"a":1,"o":{"b":"x"},"extra":true}`, `{}`},
		{"absent in reported", `{"a":1}`, `{}`, `{"a":1}`},
		{"different value", `{"a":1,"b":2}`, `{"a":1,"b":3}`, `{"b":2}`},
		{"different type", `{"a":"1"}`, `{"a":1}`, `{"a":"1"}`},
		{"nested", `{"o":{"x":1,"y":2,"z":{"w":1}}}`, `{"o":{"x":1,"y":3,"z":{"w":1}}}`, `{"o":{"y":2}}`},
		{"object vs leaf", `{"o":{"x":1}}`, `{"o":1}`, `{"o":{"x":1}}`},
		{"empty object vs object", `{"o":{}}`, `{"o":{"x":1}}`, `{}`},
		{"empty object vs leaf", `{"o":{}}`, `{"o":1}`, `{"o":{}}`},
		{"arrays whole", `{"l":[1,2]}`, `{"l":[1,3]}`, `{"l":[1,2]}`},
		{"arrays equal", `{"l":[1,{"a":2}]}`, `{"l":[1,{"a":2}]}`, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := twin.New("d", "device")
			mustPatch(t, tw, twin.Desired, tc.desired, t0)
			mustPatch(t, tw, twin.Reported, tc.reported, t0)
			jsonEq(t, tw.Delta(), tc.want)
			jsonEq(t, member(t, tw, "delta"), tc.want)
		})
	}
}

// populated returns a twin with something in every part of the document.
func populated(t testing.TB) *twin.Twin {
	t.Helper()
	tw := twin.New("dev-1", "device")
	mustPatch(t, tw, twin.Tags, `{"site":"a","floor":{"n":2}}`, t0)
	mustPatch(t, tw, twin.Desired, `{"fan":"on","cfg":{"rate":5,"list":[1,"x",{"k":null}]},"u":"é<>&\u2028"}`, t0)
	mustPatch(t, tw, twin.Desired, `{"cfg":{"mode":"eco"}}`, t1)
	mustPatch(t, tw, twin.Reported, `{"fan":"off","cfg":{"rate":5},"big":12345678901,"neg":-0.25}`, t2)
	tw.SetTelemetry(map[string]any{"temp": 21.5, "on": true, "label": "x", "count": 3}, t2)
	tw.SetConnection(twin.Connection{State: "connected", Since: t1, Node: "n1"})
	tw.SetRollup(map[string]any{"devices": 3, "connected": 2.0, "by": map[string]any{"k": []any{1, "a"}}}, t2)
	tw.SetAlerts(json.RawMessage(`[{"id":"a1","state":"active","severity":"major"}]`), t1)
	tw.AttributesChanged(t0)
	return tw
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		tw   func(testing.TB) *twin.Twin
	}{
		{"new", func(testing.TB) *twin.Twin { return twin.New("r", "room") }},
		{"populated", populated},
		{"after deletes", func(t testing.TB) *twin.Twin {
			tw := populated(t)
			mustPatch(t, tw, twin.Desired, `{"cfg":null,"fan":null}`, t2)
			tw.SetAlerts(nil, t2)
			tw.SetConnection(twin.Connection{State: "disconnected"})
			return tw
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := tc.tw(t)
			first := doc(t, tw)
			back := twin.New("other", "other")
			if err := back.UnmarshalJSON([]byte(first)); err != nil {
				t.Fatalf("UnmarshalJSON: %v", err)
			}
			if second := doc(t, back); second != first {
				t.Fatalf("round trip differs\nfirst  %s\nsecond %s", first, second)
			}
			for _, s := range []twin.Section{twin.Desired, twin.Reported, twin.Tags} {
				if !reflect.DeepEqual(back.Section(s), tw.Section(s)) || back.SectionVersion(s) != tw.SectionVersion(s) {
					t.Errorf("%s differs after round trip", s)
				}
			}
			if back.ID() != tw.ID() || back.Kind() != tw.Kind() || back.Version() != tw.Version() {
				t.Errorf("identity differs: %s %s %d", back.ID(), back.Kind(), back.Version())
			}
			if !reflect.DeepEqual(back.Telemetry(), tw.Telemetry()) || back.Connection() != tw.Connection() ||
				!reflect.DeepEqual(back.Rollup(), tw.Rollup()) || string(back.Alerts()) != string(tw.Alerts()) {
				t.Errorf("telemetry, connection, rollup or alerts differ after round trip")
			}
			if !back.RollupUpdated().Equal(tw.RollupUpdated()) || !back.AlertsUpdated().Equal(tw.AlertsUpdated()) ||
				!back.AttributesUpdated().Equal(tw.AttributesUpdated()) {
				t.Errorf("live-state or attribute times differ after round trip: %v %v %v",
					back.RollupUpdated(), back.AlertsUpdated(), back.AttributesUpdated())
			}
			// A loaded twin goes on like the original.
			c1 := mustPatch(t, tw, twin.Desired, `{"after":1}`, t2)
			c2 := mustPatch(t, back, twin.Desired, `{"after":1}`, t2)
			if !reflect.DeepEqual(c1, c2) || doc(t, tw) != doc(t, back) {
				t.Errorf("loaded twin diverges after a patch")
			}
		})
	}
}

func TestUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     error
		check    func(t *testing.T, tw *twin.Twin)
	}{
		{"not JSON", `{`, twin.ErrMalformed, nil},
		{"array", `[]`, twin.ErrMalformed, nil},
		{"section not an object", `{"desired":[1]}`, twin.ErrMalformed, nil},
		{"bad $version", `{"desired":{"$version":"x"}}`, twin.ErrMalformed, nil},
		{"fractional $version", `{"reported":{"$version":1.5}}`, twin.ErrMalformed, nil},
		{"reserved key in section", `{"reported":{"a":{"$x":1}}}`, twin.ErrReservedKey, nil},
		{"$version in tags", `{"tags":{"$version":1}}`, twin.ErrReservedKey, nil},
		{"alerts not an array", `{"alerts":{}}`, twin.ErrMalformed, nil},
		{"bad time", `{"telemetry":{"t":{"value":1,"ts":"yesterday"}}}`, twin.ErrMalformed, nil},
		{"minimal keeps id and kind", `{}`, nil, func(t *testing.T, tw *twin.Twin) {
			if tw.ID() != "keep" || tw.Kind() != "device" || tw.Connection().State != "disconnected" {
				t.Errorf("got %s %s %+v", tw.ID(), tw.Kind(), tw.Connection())
			}
			if string(tw.Alerts()) != "[]" {
				t.Errorf("alerts = %s", tw.Alerts())
			}
		}},
		{"delta ignored and recomputed", `{"desired":{"$version":2,"a":1},"reported":{"$version":1,"a":1},"delta":{"a":9}}`, nil,
			func(t *testing.T, tw *twin.Twin) {
				if d := tw.Delta(); len(d) != 0 {
					t.Errorf("delta = %v", d)
				}
				if tw.SectionVersion(twin.Desired) != 2 || tw.SectionVersion(twin.Reported) != 1 {
					t.Errorf("$versions = %d, %d", tw.SectionVersion(twin.Desired), tw.SectionVersion(twin.Reported))
				}
			}},
		{"old document keeps its version", oldDoc, nil, func(t *testing.T, tw *twin.Twin) {
			if tw.Version() != 12 || tw.SectionVersion(twin.Desired) != 1 {
				t.Errorf("version %d, desired $version %d, want 12, 1", tw.Version(), tw.SectionVersion(twin.Desired))
			}
			if !tw.RollupUpdated().IsZero() || !tw.AlertsUpdated().IsZero() || !tw.AttributesUpdated().IsZero() {
				t.Errorf("old document has live-state times: %v %v %v", tw.RollupUpdated(), tw.AlertsUpdated(), tw.AttributesUpdated())
			}
			jsonEq(t, member(t, tw, "metadata"), `{"desired":{"$lastUpdated":"2025-03-01T10:00:00Z","$lastUpdatedVersion":1,`+
				`"a":{"$lastUpdated":"2025-03-01T10:00:00Z","$lastUpdatedVersion":1}},"reported":{}}`)
			// It goes on from its version: live state leaves it, a patch
			// adds one.
			tw.SetTelemetry(map[string]any{"t": 2.0}, t1)
			tw.SetConnection(twin.Connection{State: "disconnected", Since: t1})
			tw.SetRollup(map[string]any{"devices": 2}, t1)
			tw.SetAlerts(json.RawMessage(`[{"id":"x"}]`), t1)
			if tw.Version() != 12 {
				t.Errorf("version %d after live state, want 12", tw.Version())
			}
			if c := mustPatch(t, tw, twin.Desired, `{"a":2}`, t1); c.Version != 13 || c.SectionVersion != 2 {
				t.Errorf("patch: %+v, want version 13, $version 2", c)
			}
		}},
		{"live-state times loaded in UTC", `{"metadata":{"rollup":{"$lastUpdated":"2025-03-01T11:00:00+01:00"},` +
			`"alerts":{"$lastUpdated":"2025-03-01T10:00:01.5Z","x":1},"attributes":{"$lastUpdated":"2025-03-01T10:00:02Z"}}}`, nil,
			func(t *testing.T, tw *twin.Twin) {
				if !tw.RollupUpdated().Equal(t0) || tw.RollupUpdated().Location() != time.UTC ||
					!tw.AlertsUpdated().Equal(t1.Add(500*time.Millisecond)) || !tw.AttributesUpdated().Equal(t2) {
					t.Errorf("times %v %v %v", tw.RollupUpdated(), tw.AlertsUpdated(), tw.AttributesUpdated())
				}
				jsonEq(t, member(t, tw, "metadata"), `{"alerts":{"$lastUpdated":"2025-03-01T10:00:01.5Z"},`+
					`"attributes":{"$lastUpdated":"2025-03-01T10:00:02Z"},"desired":{},"reported":{},`+
					`"rollup":{"$lastUpdated":"2025-03-01T10:00:00Z"}}`)
			}},
		{"bad live-state times dropped", `{"metadata":{"rollup":{"$lastUpdated":"yesterday"},"alerts":{"$lastUpdated":1},` +
			`"attributes":[],"desired":null}}`, nil, func(t *testing.T, tw *twin.Twin) {
			if !tw.RollupUpdated().IsZero() || !tw.AlertsUpdated().IsZero() || !tw.AttributesUpdated().IsZero() {
				t.Errorf("times %v %v %v", tw.RollupUpdated(), tw.AlertsUpdated(), tw.AttributesUpdated())
			}
			jsonEq(t, member(t, tw, "metadata"), `{"desired":{},"reported":{}}`)
		}},
		{"metadata pruned to the section", `{"desired":{"a":{"b":1}},"metadata":{"desired":{"a":{"$lastUpdated":"x","$lastUpdatedVersion":1,"b":{},"gone":{}},"zz":{}}}}`, nil,
			func(t *testing.T, tw *twin.Twin) {
				jsonEq(t, member(t, tw, "metadata", "desired"), `{"a":{"$lastUpdated":"x","$lastUpdatedVersion":1,"b":{}}}`)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := twin.New("keep", "device")
			mustPatch(t, tw, twin.Desired, `{"prior":1}`, t0)
			before := doc(t, tw)
			err := tw.UnmarshalJSON([]byte(tc.in))
			if !errors.Is(err, tc.want) || (tc.want != nil) != (err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil {
				if doc(t, tw) != before {
					t.Errorf("failed UnmarshalJSON changed the twin")
				}
				return
			}
			tc.check(t, tw)
		})
	}
}

// oldDoc is a twin document as written before live state stopped moving
// the version: one desired patch and eleven changes of telemetry,
// connection, rollup and alerts gave it version 12, and its metadata has
// no live-state times.
const oldDoc = `{"id":"d","kind":"device","version":12,"tags":{},"desired":{"$version":1,"a":1},` +
	`"reported":{"$version":0},"delta":{"a":1},"telemetry":{"t":{"value":1,"ts":"2025-03-01T10:00:00Z"}},` +
	`"connection":{"state":"connected","since":"2025-03-01T10:00:00Z","node":"n1"},"rollup":{"devices":1},` +
	`"alerts":[{"id":"a"}],"metadata":{"desired":{"$lastUpdated":"2025-03-01T10:00:00Z","$lastUpdatedVersion":1,` +
	`"a":{"$lastUpdated":"2025-03-01T10:00:00Z","$lastUpdatedVersion":1}},"reported":{}}}`

// TestIsolation checks that nothing handed in or out reaches the twin's
// state, and that clones are independent.
func TestIsolation(t *testing.T) {
	tw := populated(t)
	before := doc(t, tw)

	t.Run("returned values", func(t *testing.T) {
		for _, s := range []twin.Section{twin.Desired, twin.Reported, twin.Tags} {
			m := tw.Section(s)
			for k := range m {
				m[k] = "changed"
			}
			m["added"] = 1
		}
		tw.Section(twin.Desired)["cfg"].(map[string]any)["list"].([]any)[0] = "changed"
		tw.Delta()["cfg"].(map[string]any)["mode"] = "changed"
		tw.Delta()["cfg"].(map[string]any)["list"].([]any)[0] = "changed"
		tel := tw.Telemetry()
		tel["temp"] = twin.Point{Value: "changed"}
		tw.Rollup()["by"].(map[string]any)["k"].([]any)[0] = "changed"
		tw.Alerts()[1] = ' '
		if doc(t, tw) != before {
			t.Errorf("twin changed through a returned value")
		}
	})
	t.Run("values handed in", func(t *testing.T) {
		tel := map[string]any{"x": 1.0}
		tw2 := tw.Clone()
		tw2.SetTelemetry(tel, t2)
		roll := map[string]any{"nested": map[string]any{"n": 1.0}}
		tw2.SetRollup(roll, t2)
		alerts := json.RawMessage(`[1]`)
		tw2.SetAlerts(alerts, t2)
		want := doc(t, tw2)
		tel["x"] = 2.0
		roll["nested"].(map[string]any)["n"] = 2.0
		alerts[1] = '2'
		if doc(t, tw2) != want {
			t.Errorf("twin changed through a value handed in")
		}
	})
	t.Run("clone", func(t *testing.T) {
		c := tw.Clone()
		mustPatch(t, c, twin.Desired, `{"cfg":{"rate":6}}`, t2)
		mustPatch(t, c, twin.Reported, `{"cfg":null}`, t2)
		mustPatch(t, c, twin.Tags, `{"floor":{"n":3}}`, t2)
		c.SetTelemetry(map[string]any{"temp": 30.0}, t2.Add(time.Hour))
		c.SetConnection(twin.Connection{State: "disconnected"})
		c.SetRollup(nil, t2)
		c.SetAlerts(nil, t2)
		c.AttributesChanged(t2)
		if doc(t, tw) != before {
			t.Errorf("original changed through a clone")
		}
		c2 := tw.Clone()
		if doc(t, c2) != before {
			t.Errorf("clone differs from original")
		}
		mustPatch(t, tw, twin.Desired, `{"cfg":{"rate":7}}`, t2)
		if doc(t, c2) != before {
			t.Errorf("clone changed through the original")
		}
	})
}

func TestZeroTwin(t *testing.T) {
	var tw twin.Twin
	doc(t, &tw)
	mustPatch(t, &tw, twin.Reported, `{"a":"b"}`, t0)
	tw.SetTelemetry(map[string]any{"x": 1.0}, t0)
	tw.SetConnection(twin.Connection{State: "connected", Since: t0})
	tw.SetRollup(map[string]any{"n": 1}, t0)
	tw.SetAlerts(json.RawMessage(`[1]`), t0)
	roundTrip(t, doc(t, &tw))
	if tw.Version() != 1 {
		t.Errorf("version %d, want 1", tw.Version())
	}
	tw.AttributesChanged(t1)
	roundTrip(t, doc(t, &tw))
	if tw.Version() != 2 {
		t.Errorf("version %d, want 2", tw.Version())
	}
}
