package entity

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"
)

// telemetryEventJSON returns the data of a telemetry event,
// {"ts":…,"points":{…}}, byte for byte what encoding/json writes for it.
// Every message publishes one; encoding/json's reflection over the points
// map was 5 % of the grain path's allocations. Names and texts JSON must
// escape, and non-finite numbers, take encoding/json's own path.
func telemetryEventJSON(ts time.Time, points map[string]any) []byte {
	var names [16]string
	keys := names[:0]
	for k, v := range points {
		plain := plainJSON(k)
		switch x := v.(type) {
		case float64:
			plain = plain && finite(x)
		case string:
			plain = plain && plainJSON(x)
		case bool:
		default:
			plain = false
		}
		if !plain {
			b, _ := json.Marshal(struct {
				TS     time.Time      `json:"ts"`
				Points map[string]any `json:"points"`
			}{ts, points})
			return b
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := make([]byte, 0, 64+32*len(keys))
	b = append(b, `{"ts":`...)
	tb, err := ts.MarshalJSON()
	if err != nil { // a year outside [0,9999]: encoding/json fails too
		return nil
	}
	b = append(b, tb...)
	b = append(b, `,"points":{`...)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':')
		switch x := points[k].(type) {
		case float64:
			b = appendJSONFloat(b, x)
		case string:
			b = append(b, '"')
			b = append(b, x...)
			b = append(b, '"')
		case bool:
			b = strconv.AppendBool(b, x)
		}
	}
	return append(b, '}', '}')
}

// plainJSON reports whether encoding/json writes s between quotes as it is.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= 0x80, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// appendJSONFloat appends f as encoding/json writes a float64.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// encoding/json writes e-09 as e-9.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
