package actors

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

func TestFlatPoints(t *testing.T) {
	tests := []struct {
		doc  string
		want map[string]any // nil: not flat, the general path decides
	}{
		{`{"temperature":21.5,"humidity":40,"seq":7}`, map[string]any{"temperature": 21.5, "humidity": 40.0, "seq": 7.0}},
		{` { "on" : true , "mode":"auto", "off":false, "e":-1.5e3 } `, map[string]any{"on": true, "mode": "auto", "off": false, "e": -1500.0}},
		{`{}`, map[string]any{}},
		{`{"a":{"b":1}}`, nil},
		{`{"a":[1]}`, nil},
		{`{"a":null}`, nil},
		{`{"a":"x\"y"}`, nil},
		{`{"a":1,"a":2}`, nil},
		{`{"a":01}`, nil},
		{`{"a":1.}`, nil},
		{`{"a":1e400}`, nil},
		{`{"a":1,}`, nil},
		{`{"a":1}x`, nil},
		{`{"a" 1}`, nil},
		{`{"a":tru}`, nil},
	}
	for _, tt := range tests {
		got, ok := flatPoints([]byte(tt.doc))
		if ok != (tt.want != nil) || (ok && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("flatPoints(%s) = %v, %v; want %v", tt.doc, got, ok, tt.want)
		}
	}
}

// FuzzFlatPoints: wherever the fast path accepts a document, encoding/json
// decodes it to the same points.
func FuzzFlatPoints(f *testing.F) {
	for _, s := range []string{`{"temperature":21.5,"humidity":40,"seq":7}`, `{"a":true,"b":"x","c":-0.5e-3}`, `{"a":{"b":1}}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		got, ok := flatPoints(doc)
		if !ok {
			return
		}
		var want map[string]any
		if err := json.Unmarshal(doc, &want); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", doc, err)
		}
		for k, v := range want {
			if f, isNum := v.(float64); isNum && (math.IsNaN(f) || math.IsInf(f, 0)) {
				delete(want, k)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast path %v, encoding/json %v", doc, got, want)
		}
	})
}

func BenchmarkDecodeTelemetry(b *testing.B) {
	payload := []byte(`{"temperature":21.37,"humidity":43.2,"seq":1234}`)
	b.ReportAllocs()
	for b.Loop() {
		DecodeTelemetry(payload, "", time.Time{}, nil)
	}
}
