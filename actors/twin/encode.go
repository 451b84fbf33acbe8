package twin

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// A small JSON encoder for decoded JSON values, producing exactly what
// encoding/json's Marshal produces for them (sorted object keys, HTML-safe
// string escaping, ES6 number formatting) without reflection. It makes
// Patch's size check and MarshalJSON several times faster;
// TestEncodeMatchesEncodingJSON and FuzzEncode hold it to encoding/json.

// appendValue appends the JSON encoding of the decoded JSON value v to b.
// Values of other types are encoded by encoding/json, or as null if that
// fails (they never occur inside a Twin).
func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, x)
	case string:
		return appendString(b, x)
	case float64:
		return appendFloat(b, x)
	case map[string]any:
		return appendObject(b, x)
	case []any:
		b = append(b, '[')
		for i, c := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, c)
		}
		return append(b, ']')
	}
	j, err := json.Marshal(v)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, j...)
}

// appendObject appends m as a JSON object with its keys in sorted order.
func appendObject(b []byte, m map[string]any) []byte {
	b = append(b, '{')
	b = appendMembers(b, m)
	return append(b, '}')
}

// appendMembers appends the members of m, in sorted order and separated by
// commas, without braces.
func appendMembers(b []byte, m map[string]any) []byte {
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendValue(b, m[k])
	}
	return b
}

// sortedKeys returns the keys of m in sorted order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendFloat appends f as encoding/json does: like ES6 number-to-string,
// integers without a fraction or exponent. NaN and ±Inf, which JSON cannot
// hold and which never occur inside a Twin, are written as null.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9.
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string escaped as encoding/json does:
// '"', '\\', control characters, '<', '>', '&', U+2028 and U+2029 are
// escaped; invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendTime appends t as encoding/json does for a time.Time. Times inside a
// Twin are always within years 0000–9999, where that is RFC 3339 with
// nanoseconds.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendConnection appends c as encoding/json does for a Connection.
func appendConnection(b []byte, c Connection) []byte {
	b = append(b, `{"state":`...)
	b = appendString(b, c.State)
	if !c.Since.IsZero() {
		b = append(b, `,"since":`...)
		b = appendTime(b, c.Since)
	}
	if c.Node != "" {
		b = append(b, `,"node":`...)
		b = appendString(b, c.Node)
	}
	if c.Protocol != "" {
		b = append(b, `,"protocol":`...)
		b = appendString(b, c.Protocol)
	}
	return append(b, '}')
}

// appendPoints appends telemetry points as encoding/json does for a
// map[string]Point.
func appendPoints(b []byte, points map[string]Point) []byte {
	b = append(b, '{')
	for i, k := range sortedKeys(points) {
		if i > 0 {
			b = append(b, ',')
		}
		p := points[k]
		b = appendString(b, k)
		b = append(b, `:{"value":`...)
		b = appendValue(b, p.Value)
		b = append(b, `,"ts":`...)
		b = appendTime(b, p.TS)
		b = append(b, '}')
	}
	return append(b, '}')
}
