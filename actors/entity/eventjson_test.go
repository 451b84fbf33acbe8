package entity

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

// The hand-written encoder must write what encoding/json writes: stored
// contributions written by either are compared as strings.
func TestContributionEncodeMatchesEncodingJSON(t *testing.T) {
	cases := []Contribution{
		{},
		{Devices: 1, Connected: 1},
		{Devices: 3, Alerts: 2, Worst: 4},
		{Devices: 1, Points: map[string]PointAgg{}},
		{Devices: 2, Connected: 1, Points: map[string]PointAgg{
			"temperature": {Min: 20.5, Max: 21.25, Sum: 41.75, Count: 2},
			"humidity":    {Min: -3, Max: 1e21, Sum: 1e-7, Count: 2},
			"seq":         {Min: 0, Max: 123456789012, Sum: 0.000001, Count: 1},
			"a.b-c_d:e":   {Min: math.MaxFloat64, Max: -math.SmallestNonzeroFloat64, Sum: 1.5e-300, Count: 9},
		}},
		{Devices: 1, Points: map[string]PointAgg{"x<y": {Min: 1}}},         // escaped by encoding/json
		{Devices: 1, Points: map[string]PointAgg{"température": {Max: 2}}}, // non-ASCII
		{Devices: 1, Points: map[string]PointAgg{`q"uote`: {Sum: 3}}},
		{Devices: 1, Points: map[string]PointAgg{"nan": {Min: math.NaN()}}}, // refused by both: ""
	}
	for _, c := range cases {
		want, _ := json.Marshal(c)
		if got := c.encode(); got != string(want) {
			t.Errorf("encode(%+v)\n got %s\nwant %s", c, got, want)
		}
	}
}

func FuzzContributionEncode(f *testing.F) {
	f.Add(int64(1), int64(0), "temperature", 20.5, 21.0, 41.5, int64(2), "humidity", 1e-7)
	f.Add(int64(0), int64(5), "a<b", -1e21, 0.0, 3.25, int64(1), "", 1e300)
	f.Fuzz(func(t *testing.T, devices, alerts int64, k1 string, min, max, sum float64, count int64, k2 string, v2 float64) {
		c := Contribution{Devices: int(devices), Alerts: int(alerts), Worst: int(alerts % 5),
			Points: map[string]PointAgg{
				k1: {Min: min, Max: max, Sum: sum, Count: int(count)},
				k2: {Min: v2, Max: -v2, Sum: v2 * 3, Count: 1},
			}}
		want, _ := json.Marshal(c)
		if got := c.encode(); got != string(want) {
			t.Fatalf("encode(%+v)\n got %s\nwant %s", c, got, want)
		}
	})
}

func TestTelemetryEventJSONMatchesEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 12, 2, 23, 1, 2, 345678900, time.UTC)
	cases := []map[string]any{
		{},
		{"temperature": 21.5, "humidity": 40.0, "seq": 12345.0},
		{"on": true, "off": false, "mode": "eco", "tiny": 1e-9, "huge": 1e22},
		{"name": "a<b"},                      // escaped by encoding/json
		{"naïve": 1.0},                       // non-ASCII name
		{"q": `say "hi"`},                    // escaped text
		{"nan": math.NaN()},                  // refused by both
		{"nested": map[string]any{"x": 1.0}}, // not a point value
	}
	for _, pts := range cases {
		want, _ := json.Marshal(struct {
			TS     time.Time      `json:"ts"`
			Points map[string]any `json:"points"`
		}{ts, pts})
		if got := telemetryEventJSON(ts, pts); string(got) != string(want) {
			t.Errorf("telemetryEventJSON(%v)\n got %s\nwant %s", pts, got, want)
		}
	}
}

func FuzzTelemetryEventJSON(f *testing.F) {
	f.Add(int64(1764716462), int64(5), "temperature", 21.5, "mode", "eco", true)
	f.Add(int64(0), int64(0), "a&b", -1e-300, "", "x\u2028y", false)
	f.Fuzz(func(t *testing.T, sec, nsec int64, k1 string, v1 float64, k2, v2 string, v3 bool) {
		ts := time.Unix(sec%(1<<34), nsec%1e9).UTC()
		pts := map[string]any{k1: v1, k2: v2, k1 + k2 + "!": v3}
		want, _ := json.Marshal(struct {
			TS     time.Time      `json:"ts"`
			Points map[string]any `json:"points"`
		}{ts, pts})
		if got := telemetryEventJSON(ts, pts); string(got) != string(want) {
			t.Fatalf("telemetryEventJSON(%v)\n got %s\nwant %s", pts, got, want)
		}
	})
}
