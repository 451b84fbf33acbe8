// Package strictjson checks that a JSON document means the same to every
// reader before it is accepted: encoding/json silently keeps the last of
// two members with one name, accepts an empty name, rounds integers beyond
// 2^53 when it decodes them into float64, and replaces invalid UTF-8 with
// U+FFFD. A twin patch or an API body with any of these would be stored
// differently from what its sender meant (issue 12), so it is refused.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrAmbiguous is wrapped by every error of Check.
var ErrAmbiguous = errors.New("ambiguous JSON")

// maxExactInt is the largest integer every IEEE 754 double holds exactly.
const maxExactInt = 1 << 53

// Check returns nil for a document without duplicate or empty member
// names, integers beyond ±2^53 or invalid UTF-8, and otherwise an error
// wrapping ErrAmbiguous that says what and where (byte offset). Syntax
// errors are left to the decoder that follows: Check reports none.
func Check(doc []byte) error { return check(doc) }

// checkTokens is Check through encoding/json's tokenizer: slower (a token
// allocated per value), kept as the reference the fast scanner is tested
// against.
func checkTokens(doc []byte) error {
	if err := checkUTF8(doc); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next token of an object is a member name
	}
	var stack []*frame
	for {
		off := dec.InputOffset()
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return nil // a syntax error: the decoder that follows reports it
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			name, _ := tok.(string)
			switch {
			case name == "":
				return fmt.Errorf("%w: empty member name at byte %d", ErrAmbiguous, off)
			case top.keys[name]:
				return fmt.Errorf("%w: member %q appears twice in one object (byte %d)", ErrAmbiguous, name, off)
			}
			top.keys[name] = true
			top.key = false
			continue
		}
		if top != nil && top.object {
			top.key = true // after this value, a name or the end
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
			case '[':
				stack = append(stack, &frame{})
			case ']', '}':
				stack = stack[:len(stack)-1]
			}
		case json.Number:
			if s := t.String(); !strings.ContainsAny(s, ".eE") {
				if n, err := strconv.ParseInt(s, 10, 64); err != nil || n > maxExactInt || n < -maxExactInt {
					return fmt.Errorf("%w: integer %s at byte %d is beyond ±2^53 and would lose precision", ErrAmbiguous, s, off)
				}
			}
		}
	}
}
