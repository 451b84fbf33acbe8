package twin

import (
	"fmt"
	"unicode/utf8"
)

// Limits bound the size and nesting of each patchable section (desired,
// reported, tags). A patch whose result would exceed them is refused whole.
type Limits struct {
	// MaxSectionBytes is the largest allowed length, in bytes, of the
	// compact JSON encoding of a section (without "$version"). Zero or
	// negative means the default, 32 KiB.
	MaxSectionBytes int
	// MaxDepth is the deepest allowed nesting of JSON objects in a section;
	// the section object itself is level 1, so a flat object has depth 1.
	// Arrays do not add a level, but objects inside them do. Zero or
	// negative means the default, 10.
	MaxDepth int
	// MaxPoints is how many telemetry point names a device may have;
	// MaxPointsPerMessage how many one message may carry; MaxPointName
	// the longest name, in bytes. Zero or negative means the defaults,
	// 64, 64 and 64: 20 messages of 5,000 distinct keys each once grew a
	// twin and its ancestors' rollups to 6 MB apiece (issue 12).
	MaxPoints, MaxPointsPerMessage, MaxPointName int
}

// DefaultLimits returns the limits used when none are configured: 32 KiB per
// section, a depth of 10, 64 telemetry points per device and per message,
// names of at most 64 bytes.
func DefaultLimits() Limits {
	return Limits{MaxSectionBytes: 32 << 10, MaxDepth: 10, MaxPoints: 64, MaxPointsPerMessage: 64, MaxPointName: 64}
}

// withDefaults replaces zero or negative fields with their defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxSectionBytes <= 0 {
		l.MaxSectionBytes = d.MaxSectionBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxPoints <= 0 {
		l.MaxPoints = d.MaxPoints
	}
	if l.MaxPointsPerMessage <= 0 {
		l.MaxPointsPerMessage = d.MaxPointsPerMessage
	}
	if l.MaxPointName <= 0 {
		l.MaxPointName = d.MaxPointName
	}
	return l
}

// CheckPoints tells whether the telemetry points of one message fit the
// limits: at most MaxPointsPerMessage of them, names of at most
// MaxPointName bytes, and no more than MaxPoints names for the device once
// the new ones are added. The error wraps ErrTooManyPoints or
// ErrPointName and says which limit, so the device can be told.
func (t *Twin) CheckPoints(points map[string]any, l Limits) error {
	l = l.withDefaults()
	if len(points) > l.MaxPointsPerMessage {
		return fmt.Errorf("%w: the message has %d telemetry points, at most %d are allowed", ErrTooManyPoints, len(points), l.MaxPointsPerMessage)
	}
	added := 0
	for k := range points {
		if len(k) > l.MaxPointName {
			return fmt.Errorf("%w: point name of %d bytes, at most %d are allowed", ErrPointName, len(k), l.MaxPointName)
		}
		if _, ok := t.telemetry[k]; !ok {
			added++
		}
	}
	if n := len(t.telemetry) + added; added > 0 && n > l.MaxPoints {
		return fmt.Errorf("%w: the device would have %d telemetry point names, at most %d are allowed", ErrTooManyPoints, n, l.MaxPoints)
	}
	return nil
}

// depth returns the number of nested object levels in v: 0 for a scalar or
// an array without objects, 1 for a flat object.
func depth(v any) int {
	switch x := v.(type) {
	case map[string]any:
		d := 0
		for _, c := range x {
			d = max(d, depth(c))
		}
		return d + 1
	case []any:
		d := 0
		for _, c := range x {
			d = max(d, depth(c))
		}
		return d
	}
	return 0
}

// size returns the length of the compact JSON encoding of v (as
// appendValue and encoding/json write it) without building it.
func size(v any) int {
	switch x := v.(type) {
	case nil:
		return len("null")
	case bool:
		if x {
			return len("true")
		}
		return len("false")
	case string:
		return stringSize(x)
	case float64:
		var buf [32]byte
		return len(appendFloat(buf[:0], x))
	case map[string]any:
		n := 2 + max(len(x)-1, 0) // braces and commas
		for k, c := range x {
			n += stringSize(k) + 1 + size(c)
		}
		return n
	case []any:
		n := 2 + max(len(x)-1, 0)
		for _, c := range x {
			n += size(c)
		}
		return n
	}
	return len(appendValue(nil, v))
}

// stringSize returns len(appendString(nil, s)).
func stringSize(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&':
				n++
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			default:
				n += len(`\u0000`)
			}
			i++
			continue
		}
		r, width := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && width == 1, r == '\u2028', r == '\u2029':
			n += len(`\ufffd`)
		default:
			n += width
		}
		i += width
	}
	return n
}
