package dtdl

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"

	"strconv"
	"strings"
	"time"
)

// seg is one step of a JSON path into a payload. Paths are linked lists on
// the stack, holding the payload's own bytes, and rendered only for an
// error, so a valid message allocates nothing for them.
type seg struct {
	up  *seg
	key []byte // quoted, as in the payload
	idx int    // -1 for a member
}

func (s *seg) String() string {
	var parts []string
	for p := s; p != nil; p = p.up {
		if p.idx >= 0 {
			parts = append(parts, "["+strconv.Itoa(p.idx)+"]")
		} else {
			parts = append(parts, memberPath(unquote(p.key)))
		}
	}
	var b strings.Builder
	b.WriteString("$")
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteString(parts[i])
	}
	return b.String()
}

// keyName is a member's name for a lookup: the compiler turns a map index
// by string(bytes) into a lookup without allocation.
func keyName(key []byte) []byte {
	if bytes.IndexByte(key, '\\') < 0 {
		return key[1 : len(key)-1]
	}
	return []byte(unquote(key))
}

// object checks that payload is one JSON object and returns it trimmed.
func object(payload []byte, what string) ([]byte, error) {
	if !json.Valid(payload) {
		var v any
		err := json.Unmarshal(payload, &v)
		return nil, mismatch("$", "%s is not JSON: %v", what, err)
	}
	b := bytes.TrimSpace(payload)
	if b[0] != '{' {
		return nil, mismatch("$", "%s is a JSON object, not %s", what, describeRaw(b))
	}
	return b, nil
}

// ValidateTelemetry checks a telemetry message: a JSON object whose
// members are telemetry of the interface, or of its component named
// component (IoT Plug and Play's $.sub) when that is not "".
func (i *Interface) ValidateTelemetry(component string, payload []byte) error {
	in := i
	if component != "" {
		c := i.components[component]
		if c == nil {
			return mismatch("$", "%s has no component %q", i.ID, component)
		}
		if c.Interface == nil {
			return mismatch("$", "component %q names %s, which is not registered", component, c.SchemaID)
		}
		in = c.Interface
	}
	b, err := object(payload, "telemetry of a modelled device")
	if err != nil {
		return err
	}
	return eachMember(b, func(key, v []byte) error {
		t := in.telemetry[string(keyName(key))]
		if t == nil {
			p := seg{key: key, idx: -1}
			return mismatch(p.String(), "%s", in.notTelemetry(unquote(key)))
		}
		p := seg{key: key, idx: -1}
		return check(t.Schema, v, &p, false)
	})
}

func (i *Interface) notTelemetry(k string) string {
	if i.properties[k] != nil {
		return "\"" + k + "\" is a property of " + i.ID + ", not telemetry; report it as a twin property"
	}
	return "\"" + k + "\" is not telemetry of " + i.ID + "; its telemetry: " + names(i.Telemetry, func(t *Telemetry) string { return t.Name })
}

// ValidateReported checks a reported-properties merge patch from the
// device. null deletes and is always allowed; a writable property may be
// reported as an acknowledgement {"value":…,"ac":…,"av":…,"ad":…}.
func (i *Interface) ValidateReported(patch []byte) error {
	b, err := object(patch, "a reported patch")
	if err != nil {
		return err
	}
	return i.properties1(b, nil, false)
}

// ValidateDesired checks a desired-properties merge patch: only writable
// properties (of the interface or its components), each of its schema.
func (i *Interface) ValidateDesired(patch []byte) error {
	b, err := object(patch, "a desired patch")
	if err != nil {
		return err
	}
	return i.properties1(b, nil, true)
}

func (i *Interface) properties1(b []byte, up *seg, desired bool) error {
	return eachMember(b, func(key, v []byte) error {
		name := keyName(key)
		if len(name) > 0 && name[0] == '$' {
			return nil // metadata such as $version
		}
		if up != nil && string(name) == "__t" {
			if !bytes.Equal(v, []byte(`"c"`)) {
				p := seg{up: up, key: key, idx: -1}
				return mismatch(p.String(), "the component marker is \"c\", not %s", describeRaw(v))
			}
			return nil
		}
		null := v[0] == 'n'
		if pr := i.properties[string(name)]; pr != nil {
			if null {
				return nil
			}
			p := seg{up: up, key: key, idx: -1}
			if desired && !pr.Writable {
				return mismatch(p.String(), "property %q of %s is read-only (not writable)", pr.Name, i.ID)
			}
			if !desired && pr.Writable && v[0] == '{' && isAck(v) {
				return checkAck(pr.Schema, v, &p)
			}
			return check(pr.Schema, v, &p, true)
		}
		p := seg{up: up, key: key, idx: -1}
		if up == nil {
			if c := i.components[string(name)]; c != nil {
				if null {
					return nil
				}
				if v[0] != '{' {
					return mismatch(p.String(), "component %q takes an object of its properties, not %s", c.Name, describeRaw(v))
				}
				if c.Interface == nil {
					return mismatch(p.String(), "component %q names %s, which is not registered", c.Name, c.SchemaID)
				}
				return c.Interface.properties1(v, &p, desired)
			}
		}
		k := unquote(key)
		if i.telemetry[k] != nil {
			return mismatch(p.String(), "%q is telemetry of %s, not a property", k, i.ID)
		}
		return mismatch(p.String(), "%q is not a property of %s; its properties: %s", k, i.ID,
			names(i.Properties, func(p *Property) string { return p.Name }))
	})
}

var errNotAck = errors.New("not an acknowledgement")

// isAck tells an IoT Plug and Play writable-property acknowledgement: an
// object with "ac" and only the members value, ac, av, ad.
func isAck(o []byte) bool {
	hasAC := false
	err := eachMember(o, func(key, _ []byte) error {
		switch string(keyName(key)) {
		case "ac":
			hasAC = true
		case "value", "av", "ad":
		default:
			return errNotAck
		}
		return nil
	})
	return err == nil && hasAC
}

func checkAck(s *Schema, o []byte, p *seg) error {
	return eachMember(o, func(key, v []byte) error {
		sp := seg{up: p, key: key, idx: -1}
		switch k := string(keyName(key)); k {
		case "ac", "av":
			if !isNumber(v) || !isIntBits(v, 64) {
				return mismatch(sp.String(), "an integer (the acknowledgement's %s), not %s", map[string]string{"ac": "status code", "av": "desired version"}[k], describeRaw(v))
			}
		case "ad":
			if v[0] != '"' {
				return mismatch(sp.String(), "a string (the acknowledgement's description), not %s", describeRaw(v))
			}
		case "value":
			return check(s, v, &sp, true)
		}
		return nil
	})
}

// ValidateCommand checks a direct method call against the command of that
// name ("component*command" for a component's): the request payload
// against its request schema. An empty payload is null.
func (i *Interface) ValidateCommand(name string, payload []byte) error {
	in, cmdName := i, name
	if comp, cmd, ok := strings.Cut(name, "*"); ok {
		c := i.components[comp]
		if c == nil {
			return mismatch("$", "%s has no component %q (command %q)", i.ID, comp, name)
		}
		if c.Interface == nil {
			return mismatch("$", "component %q names %s, which is not registered", comp, c.SchemaID)
		}
		in, cmdName = c.Interface, cmd
	}
	c := in.commands[cmdName]
	if c == nil {
		return mismatch("$", "%q is not a command of %s; its commands: %s", cmdName, in.ID,
			names(in.Commands, func(c *Command) string { return c.Name }))
	}
	v := bytes.TrimSpace(payload)
	if len(v) == 0 {
		v = []byte("null")
	} else if !json.Valid(v) {
		var x any
		err := json.Unmarshal(v, &x)
		return mismatch("$", "the request of %q is not JSON: %v", cmdName, err)
	}
	if c.Request == nil {
		if v[0] == 'n' || v[0] == '{' && skipWS(v, 1) < len(v) && v[skipWS(v, 1)] == '}' {
			return nil
		}
		return mismatch("$", "command %q takes no request, got %s", cmdName, describeRaw(v))
	}
	if v[0] == 'n' {
		if c.Request.Nullable {
			return nil
		}
		return mismatch("$", "command %q needs its request %q (%s)", cmdName, c.Request.Name, c.Request.Schema.Kind)
	}
	return check(c.Request.Schema, v, nil, false)
}

var intBits = map[Kind]int{Integer: 32, Long: 64, Short: 16, Byte: 8, UnsignedByte: 8, UnsignedShort: 16, UnsignedInteger: 32, UnsignedLong: 64}

// check validates the JSON value v against s; in a patch (merge
// semantics) null deletes a member and is allowed inside objects and maps.
func check(s *Schema, v []byte, p *seg, patch bool) error {
	if v[0] == 'n' {
		if patch {
			return nil
		}
		return mismatch(p.String(), "want %s, got null", s.want())
	}
	switch s.Kind {
	case Boolean:
		if v[0] == 't' || v[0] == 'f' {
			return nil
		}
	case String:
		if v[0] == '"' {
			return nil
		}
	case Double, Decimal, Float:
		if isNumber(v) {
			bits := 64
			if s.Kind == Float {
				bits = 32
			}
			if _, err := strconv.ParseFloat(string(v), bits); err == nil {
				return nil
			}
			return mismatch(p.String(), "%s is out of range for %s", v, s.Kind)
		}
	case Integer, Long, Short, Byte:
		if isNumber(v) {
			if isIntBits(v, intBits[s.Kind]) {
				return nil
			}
			return mismatch(p.String(), "want %s, got %s (not an integer in range)", s.Kind, v)
		}
	case UnsignedByte, UnsignedShort, UnsignedInteger, UnsignedLong:
		if isNumber(v) {
			if _, err := strconv.ParseUint(string(v), 10, intBits[s.Kind]); err == nil {
				return nil
			}
			return mismatch(p.String(), "want %s, got %s (not an integer in range)", s.Kind, v)
		}
	case Date, DateTime, Time, Duration, UUID, Bytes:
		if v[0] != '"' {
			break
		}
		if textOK(s.Kind, unquote(v)) {
			return nil
		}
		return mismatch(p.String(), "want %s, got %s", s.want(), describeRaw(v))
	case Enum:
		for _, ev := range s.EnumValues {
			switch x := ev.Value.(type) {
			case string:
				if v[0] == '"' && textEquals(v, x) {
					return nil
				}
			case int64:
				if isNumber(v) && string(v) == strconv.FormatInt(x, 10) {
					return nil
				}
			}
		}
		return mismatch(p.String(), "want one of %s, got %s", s.want(), describeRaw(v))
	case Object:
		if v[0] != '{' {
			break
		}
		return eachMember(v, func(key, fv []byte) error {
			fp := seg{up: p, key: key, idx: -1}
			f := s.fields[string(keyName(key))]
			if f == nil {
				return mismatch(fp.String(), "the object has no field %q; its fields: %s", unquote(key),
					names(s.Fields, func(f *Field) string { return f.Name }))
			}
			return check(f.Schema, fv, &fp, patch)
		})
	case Array:
		if v[0] != '[' {
			break
		}
		return eachElement(v, func(k int, ev []byte) error {
			ep := seg{up: p, idx: k}
			return check(s.ElementSchema, ev, &ep, false)
		})
	case Map:
		if v[0] != '{' {
			break
		}
		return eachMember(v, func(key, mv []byte) error {
			mp := seg{up: p, key: key, idx: -1}
			return check(s.MapValue.Schema, mv, &mp, patch)
		})
	}
	return mismatch(p.String(), "want %s, got %s", s.want(), describeRaw(v))
}

// want says what a value of s looks like, for an error message.
func (s *Schema) want() string {
	switch s.Kind {
	case Enum:
		vals := make([]string, len(s.EnumValues))
		for i, ev := range s.EnumValues {
			if str, ok := ev.Value.(string); ok {
				vals[i] = strconv.Quote(str)
			} else {
				vals[i] = strconv.FormatInt(ev.Value.(int64), 10)
			}
		}
		return strings.Join(vals, ", ")
	case Object:
		return "an object"
	case Array:
		return "an array of " + s.ElementSchema.want()
	case Map:
		return "an object (map of " + s.MapValue.Schema.want() + ")"
	case Date:
		return "a date (2006-01-02)"
	case DateTime:
		return "a dateTime (RFC 3339, 2006-01-02T15:04:05Z)"
	case Time:
		return "a time (15:04:05)"
	case Duration:
		return "a duration (ISO 8601, PT5M)"
	case UUID:
		return "a uuid"
	case Bytes:
		return "bytes (base64)"
	}
	return string(s.Kind)
}

var timeLayouts = []string{"15:04:05", "15:04:05.999999999", "15:04:05Z07:00", "15:04:05.999999999Z07:00"}

func textOK(k Kind, s string) bool {
	switch k {
	case Date:
		_, err := time.Parse("2006-01-02", s)
		return err == nil
	case DateTime:
		_, err := time.Parse(time.RFC3339Nano, s)
		return err == nil
	case Time:
		for _, l := range timeLayouts {
			if _, err := time.Parse(l, s); err == nil {
				return true
			}
		}
		return false
	case Duration:
		return isDuration(s)
	case UUID:
		return isUUID(s)
	case Bytes:
		_, err := base64.StdEncoding.DecodeString(s)
		return err == nil
	}
	return false
}

// isDuration accepts ISO 8601 durations: P[nY][nM][nW][nD][T[nH][nM][n[.n]S]],
// at least one element, T only with a time element after it.
func isDuration(s string) bool {
	if len(s) < 2 || s[0] != 'P' {
		return false
	}
	s = s[1:]
	order, inTime, seen := "YMWD", false, false
	for len(s) > 0 {
		if s[0] == 'T' {
			if inTime || len(s) == 1 {
				return false
			}
			inTime, order, s = true, "HMS", s[1:]
			continue
		}
		j := 0
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
			j++
		}
		if j == 0 || j == len(s) {
			return false
		}
		if strings.Count(s[:j], ".") > 1 || s[0] == '.' || s[j-1] == '.' {
			return false
		}
		k := strings.IndexByte(order, s[j])
		if k < 0 {
			return false
		}
		order, s, seen = order[k+1:], s[j+1:], true
	}
	return seen
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func names[T any](list []T, name func(T) string) string {
	if len(list) == 0 {
		return "none"
	}
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = name(x)
	}
	return strings.Join(out, ", ")
}
