package persistence

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

func TestRecordCodec(t *testing.T) {
	ts := time.Date(2026, 12, 2, 19, 4, 29, 123456789, time.UTC)
	ns := ts.UnixNano()
	recs := []TelemetryRecord{
		{TS: ts},
		{TS: ts, Points: map[string]any{"temperature": 21.37, "humidity": 40.0, "seq": 12345.0}, MessageID: "m-1-12345", ContentType: "application/json"},
		{TS: ts, Points: map[string]any{"half": 21.5, "neg": -7.0, "big": float64(1 << 53), "bigger": 1e300, "tiny": 5e-324, "nz": math.Copysign(0, -1)}},
		{TS: ts, Points: map[string]any{"on": true, "off": false, "mode": "auto", "empty": "", "utf": "ø≈"}},
		{TS: ts, Raw: []byte{0, 1, 2, 0xff}, ContentType: "application/octet-stream", Properties: map[string]string{"a": "1", "": "x"}},
	}
	for _, r := range recs {
		v, err := encodeRecord(r)
		if err != nil || v[0] != recordBinary {
			t.Fatalf("encode %+v: %x, %v", r, v, err)
		}
		got, err := decodeRecord(v, ns)
		if err != nil {
			t.Fatalf("decode %+v: %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
		if nz, ok := got.Points["nz"].(float64); ok && !math.Signbit(nz) {
			t.Error("-0 lost its sign")
		}
		// What members exchange is the record's JSON.
		j, err := recordJSON(v, ns)
		var back TelemetryRecord
		if err != nil || json.Unmarshal(j, &back) != nil || back.MessageID != r.MessageID || !back.TS.Equal(r.TS) {
			t.Errorf("recordJSON: %s, %v", j, err)
		}
	}
	// A point of a type the binary form does not cover: stored as JSON.
	odd := TelemetryRecord{TS: ts, Points: map[string]any{"list": []any{1.0}}}
	v, err := encodeRecord(odd)
	if err != nil || v[0] != '{' {
		t.Fatalf("record with a list: %s, %v", v, err)
	}
	// Records stored before schema 6 are JSON.
	old := []byte(`{"ts":"2026-12-02T19:04:29.123456789Z","points":{"t":1.5},"mid":"m"}`)
	if r, err := decodeRecord(old, ns); err != nil || r.MessageID != "m" || r.Points["t"] != 1.5 || !r.TS.Equal(ts) {
		t.Errorf("JSON record: %+v, %v", r, err)
	}
	full, _ := encodeRecord(recs[1])
	for _, bad := range [][]byte{full[:len(full)-1], append(full[:len(full):len(full)], 0), {recordBinary, 1, 1, 'a', 99}, {recordBinary, 0xff}} {
		if _, err := decodeRecord(bad, ns); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decode %x: %v, want ErrCorrupt", bad, err)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []TelemetryRecord{{Points: map[string]any{"t": 1.5, "s": "x", "b": true}, MessageID: "m"}, {Raw: []byte("x"), Properties: map[string]string{"k": "v"}}} {
		v, _ := encodeRecord(r)
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := decodeRecord(v, 1)
		if err != nil || len(v) == 0 || v[0] != recordBinary {
			return
		}
		again, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := decodeRecord(again, 1)
		if err != nil || !reflect.DeepEqual(bitsOf(r), bitsOf(r2)) {
			t.Fatalf("%x → %+v does not round trip: %+v, %v", v, r, r2, err)
		}
	})
}

// bitsOf replaces float points by their bits, so that NaN equals NaN.
func bitsOf(r TelemetryRecord) TelemetryRecord {
	if r.Points == nil {
		return r
	}
	p := make(map[string]any, len(r.Points))
	for k, v := range r.Points {
		if f, ok := v.(float64); ok {
			v = math.Float64bits(f)
		}
		p[k] = v
	}
	r.Points = p
	return r
}
