package actors

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// flatPoints decodes the common telemetry payload, a flat JSON object of
// numbers, booleans and strings without escapes, in one pass and without
// encoding/json's reflection (which cost 3 % of the node's CPU on the
// ingest path). ok is false for anything else — nested values, null,
// escapes, a repeated name, a syntax error — and the caller then takes
// the general path, so the two must agree wherever ok is true (FuzzFlatPoints).
func flatPoints(doc []byte) (points map[string]any, ok bool) {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return nil, false
	}
	points = make(map[string]any, 4)
	i = skipSpace(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return points, skipSpace(doc, i+1) == len(doc)
	}
	for {
		key, j, ok := plainString(doc, i)
		if !ok {
			return nil, false
		}
		if _, dup := points[key]; dup {
			return nil, false
		}
		i = skipSpace(doc, j)
		if i >= len(doc) || doc[i] != ':' {
			return nil, false
		}
		if i = skipSpace(doc, i+1); i >= len(doc) {
			return nil, false
		}
		switch c := doc[i]; {
		case c == '"':
			s, j, ok := plainString(doc, i)
			if !ok {
				return nil, false
			}
			points[key], i = s, j
		case c == 't' && len(doc)-i >= 4 && string(doc[i:i+4]) == "true":
			points[key], i = true, i+4
		case c == 'f' && len(doc)-i >= 5 && string(doc[i:i+5]) == "false":
			points[key], i = false, i+5
		case c == '-' || (c >= '0' && c <= '9'):
			j := numberEnd(doc, i)
			if j < 0 {
				return nil, false
			}
			f, err := strconv.ParseFloat(string(doc[i:j]), 64)
			if err != nil || math.IsInf(f, 0) {
				return nil, false
			}
			points[key], i = f, j
		default:
			return nil, false
		}
		i = skipSpace(doc, i)
		if i >= len(doc) {
			return nil, false
		}
		switch doc[i] {
		case ',':
			i = skipSpace(doc, i+1)
			continue
		case '}':
			return points, skipSpace(doc, i+1) == len(doc)
		}
		return nil, false
	}
}

func skipSpace(doc []byte, i int) int {
	for i < len(doc) && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string at doc[i] that has no escapes and no
// control characters; it returns the string and the index after it.
func plainString(doc []byte, i int) (string, int, bool) {
	if i >= len(doc) || doc[i] != '"' {
		return "", 0, false
	}
	ascii := true
	for j := i + 1; j < len(doc); j++ {
		switch c := doc[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(doc[i+1:j]) {
				return "", 0, false // encoding/json would replace bytes
			}
			return string(doc[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", 0, false
}

// numberEnd returns the index after the JSON number at doc[i], or -1 if
// there is none by the grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func numberEnd(doc []byte, i int) int {
	digits := func(i int) int {
		j := i
		for j < len(doc) && doc[j] >= '0' && doc[j] <= '9' {
			j++
		}
		return j
	}
	if i < len(doc) && doc[i] == '-' {
		i++
	}
	switch {
	case i < len(doc) && doc[i] == '0':
		i++
	case i < len(doc) && doc[i] >= '1' && doc[i] <= '9':
		i = digits(i)
	default:
		return -1
	}
	if i < len(doc) && doc[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(doc) && (doc[i] == 'e' || doc[i] == 'E') {
		i++
		if i < len(doc) && (doc[i] == '+' || doc[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}
