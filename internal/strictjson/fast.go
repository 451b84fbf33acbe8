package strictjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// checkUTF8 names the first invalid UTF-8 byte of doc, if any.
func checkUTF8(doc []byte) error {
	if utf8.Valid(doc) {
		return nil
	}
	i := 0
	for i < len(doc) {
		r, n := utf8.DecodeRune(doc[i:])
		if r == utf8.RuneError && n <= 1 {
			break
		}
		i += n
	}
	return fmt.Errorf("%w: invalid UTF-8 at byte %d", ErrAmbiguous, i)
}

// check is Check's single pass over the bytes: no tokens are allocated,
// member names are compared in place (unescaped only when they hold a
// backslash), so the telemetry path pays a fraction of a decoder's cost.
// Syntax errors end the scan quietly (the decoder that follows reports
// them); the slow, token-based reference is checkTokens (tests).
func check(doc []byte) error {
	if err := checkUTF8(doc); err != nil {
		return err
	}
	type frame struct {
		object  bool
		wantKey bool
		keys    int // where the object's member names start in names
	}
	var stackBuf [16]frame
	stack := stackBuf[:0]
	// The member names of the open objects, each object's after its
	// parent's (a closed object's are dropped), without copies unless
	// a name holds an escape.
	var namesBuf [32][]byte
	names := namesBuf[:0]
	for i := 0; i < len(doc); {
		c := doc[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == ':':
			i++
		case c == '{':
			stack = append(stack, frame{object: true, wantKey: true, keys: len(names)})
			i++
		case c == '[':
			stack = append(stack, frame{})
			i++
		case c == '}' || c == ']':
			if len(stack) == 0 {
				return nil
			}
			if f := stack[len(stack)-1]; f.object {
				names = names[:f.keys]
			}
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].wantKey = true
			}
			i++
		case c == '"':
			start := i
			i++
			escaped := false
			for i < len(doc) && doc[i] != '"' {
				if doc[i] == '\\' {
					escaped = true
					i++
				}
				i++
			}
			if i >= len(doc) {
				return nil // unterminated: a syntax error
			}
			i++ // the closing quote
			if len(stack) == 0 || !stack[len(stack)-1].object {
				continue
			}
			top := &stack[len(stack)-1]
			if !top.wantKey {
				top.wantKey = true // a string value; a name comes next
				continue
			}
			name := doc[start+1 : i-1]
			if escaped {
				var u string
				if err := json.Unmarshal(doc[start:i], &u); err != nil {
					return nil
				}
				name = []byte(u)
			}
			if len(name) == 0 {
				return fmt.Errorf("%w: empty member name at byte %d", ErrAmbiguous, start)
			}
			for _, k := range names[top.keys:] {
				if bytes.Equal(k, name) {
					return fmt.Errorf("%w: member %q appears twice in one object (byte %d)", ErrAmbiguous, name, start)
				}
			}
			names = append(names, name)
			top.wantKey = false
		case c == '-' || (c >= '0' && c <= '9'):
			start := i
			integer := true
			for i < len(doc) && (doc[i] == '-' || doc[i] == '+' || doc[i] == '.' || doc[i] == 'e' || doc[i] == 'E' || (doc[i] >= '0' && doc[i] <= '9')) {
				if doc[i] == '.' || doc[i] == 'e' || doc[i] == 'E' {
					integer = false
				}
				i++
			}
			if integer && i-start > 15 { // 2^53 has 16 digits
				s := string(doc[start:i])
				if n, err := strconv.ParseInt(s, 10, 64); err != nil || n > maxExactInt || n < -maxExactInt {
					return fmt.Errorf("%w: integer %s at byte %d is beyond ±2^53 and would lose precision", ErrAmbiguous, s, start)
				}
			}
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].wantKey = true
			}
		default: // true, false, null, or a syntax error
			for i < len(doc) && doc[i] >= 'a' && doc[i] <= 'z' {
				i++
			}
			if i < len(doc) && !(doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r' || doc[i] == ',' || doc[i] == '}' || doc[i] == ']') {
				return nil
			}
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].wantKey = true
			}
		}
	}
	return nil
}
