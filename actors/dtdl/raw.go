package dtdl

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// The validator reads payloads in place: json.Valid checks the syntax once,
// then these helpers walk the valid bytes without decoding them into maps,
// so a valid message costs no allocation beyond what a member's schema
// needs (a date parsed, an escaped key unquoted).

// skipWS returns the index of the first non-space byte at or after i.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the index just after the JSON value starting at i, in
// a document json.Valid accepted.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = stringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	case 't', 'n':
		return i + 4
	case 'f':
		return i + 5
	}
	j := i
	for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		j++
	}
	return j
}

// stringEnd returns the index just after the string starting at i.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// members calls fn for each member of the object b (a valid JSON object),
// in document order, with the key still quoted; it stops at fn's first
// error.
func eachMember(b []byte, fn func(key, value []byte) error) error {
	i := skipWS(b, 1)
	for i < len(b) && b[i] != '}' {
		ke := stringEnd(b, i)
		key := b[i:ke]
		i = skipWS(b, ke)
		i = skipWS(b, i+1) // ':'
		ve := valueEnd(b, i)
		if err := fn(key, b[i:ve]); err != nil {
			return err
		}
		i = skipWS(b, ve)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return nil
}

// eachElement calls fn for each element of the array b, with its index.
func eachElement(b []byte, fn func(k int, value []byte) error) error {
	i := skipWS(b, 1)
	for k := 0; i < len(b) && b[i] != ']'; k++ {
		ve := valueEnd(b, i)
		if err := fn(k, b[i:ve]); err != nil {
			return err
		}
		i = skipWS(b, ve)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return nil
}

// unquote returns the text of a JSON string; only one with escapes
// allocates beyond the conversion.
func unquote(q []byte) string {
	if bytes.IndexByte(q, '\\') < 0 {
		return string(q[1 : len(q)-1])
	}
	var s string
	_ = json.Unmarshal(q, &s)
	return s
}

// textEquals reports whether the JSON string q holds s.
func textEquals(q []byte, s string) bool {
	if bytes.IndexByte(q, '\\') < 0 {
		return string(q[1:len(q)-1]) == s
	}
	return unquote(q) == s
}

// describeRaw names a JSON value for an error message.
func describeRaw(v []byte) string {
	switch v[0] {
	case '"':
		return describe(unquote(v))
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "the boolean " + string(v)
	case 'n':
		return "null"
	}
	return "the number " + string(v)
}

func isNumber(v []byte) bool { return v[0] == '-' || v[0] >= '0' && v[0] <= '9' }

func isIntBits(v []byte, bits int) bool {
	_, err := strconv.ParseInt(string(v), 10, bits)
	return err == nil
}
