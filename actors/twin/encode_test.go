package twin

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// refDoc is the twin document built with encoding/json, the reference the
// hand-written encoder must match byte for byte.
type refDoc struct {
	ID         string           `json:"id"`
	Kind       string           `json:"kind"`
	Version    int64            `json:"version"`
	Tags       map[string]any   `json:"tags"`
	Desired    map[string]any   `json:"desired"`
	Reported   map[string]any   `json:"reported"`
	Delta      map[string]any   `json:"delta"`
	Telemetry  map[string]Point `json:"telemetry"`
	Connection Connection       `json:"connection"`
	Rollup     map[string]any   `json:"rollup"`
	Alerts     json.RawMessage  `json:"alerts"`
	Metadata   struct {
		Alerts     json.RawMessage `json:"alerts,omitempty"`
		Attributes json.RawMessage `json:"attributes,omitempty"`
		Desired    json.RawMessage `json:"desired"`
		Reported   json.RawMessage `json:"reported"`
		Rollup     json.RawMessage `json:"rollup,omitempty"`
	} `json:"metadata"`
}

// refStamp is the reference form of a live-state time in metadata: absent
// when unknown.
func refStamp(at time.Time) json.RawMessage {
	if at.IsZero() {
		return nil
	}
	b, _ := json.Marshal(map[string]time.Time{"$lastUpdated": at})
	return b
}

// refMarshal encodes t with encoding/json. There "$version" is an ordinary
// member of a section and sorts among the others instead of coming first,
// so the documents are compared as decoded values.
func refMarshal(t *Twin) ([]byte, error) {
	withVersion := func(s section) map[string]any {
		m := copyObject(s.doc)
		m["$version"] = s.ver
		return m
	}
	r := refDoc{ID: t.id, Kind: t.kind, Version: t.version, Tags: t.tags.doc,
		Desired: withVersion(t.desired), Reported: withVersion(t.reported),
		Delta: delta(t.desired.doc, t.reported.doc), Telemetry: t.telemetry, Connection: t.conn,
		Rollup: t.rollup, Alerts: t.alerts}
	r.Metadata.Desired = metaJSON(t.desired.meta)
	r.Metadata.Reported = metaJSON(t.reported.meta)
	r.Metadata.Rollup = refStamp(t.rollupAt)
	r.Metadata.Alerts = refStamp(t.alertsAt)
	r.Metadata.Attributes = refStamp(t.attrsAt)
	return json.Marshal(r)
}

// checkAgainstRef checks that MarshalJSON equals the encoding/json
// reference as a JSON value, and that each part of the document is encoded
// byte for byte as encoding/json encodes it.
func checkAgainstRef(t *testing.T, tw *Twin) {
	t.Helper()
	got, _ := tw.MarshalJSON()
	want, err := refMarshal(tw)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !equal(g, w) {
		t.Fatalf("output differs from encoding/json\n got %s\nwant %s", got, want)
	}
	// Byte for byte, section by section.
	for _, part := range []any{tw.tags.doc, tw.desired.doc, tw.reported.doc, tw.rollup, tw.telemetry, tw.conn,
		delta(tw.desired.doc, tw.reported.doc)} {
		w, _ := json.Marshal(part)
		if !strings.Contains(string(got), strings.TrimPrefix(strings.TrimSuffix(string(w), "}"), "{")) {
			t.Fatalf("output lacks the encoding/json form %s\n%s", w, got)
		}
	}
}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"null", nil},
		{"bools", []any{true, false}},
		{"integers", []any{0.0, 1.0, -1.0, 3.0, 1e6, 123456789.0, 1 << 53, -(1 << 62)}},
		{"fractions", []any{0.5, -0.25, 1.0 / 3, 0.1, 2.5e-5}},
		{"exponent cutoffs", []any{1e20, 1e21, 1e22, 1e-6, 1e-7, 9.99e-7, 1.5e300, -1e-9}},
		{"extremes", []any{math.MaxFloat64, math.SmallestNonzeroFloat64, -math.MaxFloat64, math.Copysign(0, -1)}},
		{"escapes", "quote\" backslash\\ nl\n cr\r tab\t bs\b ff\f nul\x00 us\x1f del\x7f"},
		{"html", "<script>&amp;</script>"},
		{"separators", "a\u2028b\u2029c"},
		{"unicode", "é 日本 🎉"},
		{"invalid utf-8", "a\xffb\xc3(c\xed\xa0\x80"},
		{"object keys sorted", map[string]any{"b": 1.0, "a": 2.0, "": 3.0, "B": 4.0, "é": 5.0, "a<": 6.0}},
		{"nested", map[string]any{"o": map[string]any{"l": []any{map[string]any{"x": nil}, []any{}, "s"}}, "e": map[string]any{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if got := appendValue(nil, tc.v); string(got) != string(want) {
				t.Errorf("appendValue = %s, want %s", got, want)
			}
			if got := size(tc.v); got != len(want) {
				t.Errorf("size = %d, want %d", got, len(want))
			}
		})
	}
}

func TestMarshalMatchesEncodingJSON(t *testing.T) {
	tw := New("dev<1>", "dévice")
	now := time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC)
	for i, p := range []string{`{"a":1,"o":{"x":"<&>","l":[1,null,{"k":1e-7}]}}`, `{"o":{"x":null,"y":1e21}}`} {
		if _, err := tw.Patch(Desired, []byte(p), now.Add(time.Duration(i)), DefaultLimits()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tw.Patch(Reported, []byte(`{"a":2,"\u2028":"\u2029"}`), now, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	tw.SetTelemetry(map[string]any{"t": 1.5, "s": "x\ny", "b": false}, now)
	tw.SetConnection(Connection{State: "connected", Since: now, Node: "n&1", Protocol: "co\u2028ap"})
	tw.SetRollup(map[string]any{"devices": 2}, now)
	tw.SetAlerts(json.RawMessage(`[{"b":1,"a":"<"}]`), now.Add(time.Millisecond))
	checkAgainstRef(t, tw)
	tw.AttributesChanged(now.Add(time.Second))
	checkAgainstRef(t, tw)
	checkAgainstRef(t, New("", ""))
}

func FuzzEncode(f *testing.F) {
	f.Add(`{"a":[1,2.5,-1e-7,1e21,"x\u2028<>&\u0000"],"b":{"c":null,"d":true}}`)
	f.Add(`"\ud800\udc00\ud800"`)
	f.Add(`{"desired":{"$version":2,"a":{"b":1}},"reported":{"a":{"b":2}},"telemetry":{"t":{"value":1,"ts":"2025-01-01T00:00:00.5+01:00"}},` +
		`"connection":{"state":"c","since":"2025-01-01T00:00:00Z","node":"n"},"rollup":{"d":1},"alerts":[{"x":1}],` +
		`"metadata":{"desired":{"$lastUpdated":"t","$lastUpdatedVersion":2,"a":{"b":{}}}}}`)
	f.Add(`{"version":3,"metadata":{"rollup":{"$lastUpdated":"2025-01-01T00:00:00.123+01:00"},"alerts":{"$lastUpdated":"x"},` +
		`"attributes":{"$lastUpdated":"9999-12-31T23:59:59.999999999Z"}}}`)
	f.Fuzz(func(t *testing.T, in string) {
		var v any
		if json.Unmarshal([]byte(in), &v) == nil {
			want, _ := json.Marshal(v)
			if got := appendValue(nil, v); string(got) != string(want) {
				t.Fatalf("appendValue = %s, want %s", got, want)
			}
			if got := size(v); got != len(want) {
				t.Fatalf("size = %d, want %d (%s)", got, len(want), want)
			}
		}
		tw := New("id", "kind")
		if tw.UnmarshalJSON([]byte(in)) == nil {
			checkAgainstRef(t, tw)
		}
	})
}
