package twin

import "unicode/utf8"

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
}

// DefaultLimits returns the limits used when none are configured: 32 KiB per
// section and a depth of 10.
func DefaultLimits() Limits {
	return Limits{MaxSectionBytes: 32 << 10, MaxDepth: 10}
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
	return l
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
