package dtdl

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// seg is one step of a JSON path into a payload. Paths are linked lists on
// the stack and rendered only for an error, so a valid message allocates
// nothing for them.
type seg struct {
	up  *seg
	key string
	idx int // -1 for a member
}

func (s *seg) String() string {
	var parts []string
	for p := s; p != nil; p = p.up {
		if p.idx >= 0 {
			parts = append(parts, "["+strconv.Itoa(p.idx)+"]")
		} else {
			parts = append(parts, memberPath(p.key))
		}
	}
	var b strings.Builder
	b.WriteString("$")
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteString(parts[i])
	}
	return b.String()
}

func (s *seg) member(k string) seg { return seg{up: s, key: k, idx: -1} }

func decodeObject(payload []byte, what string) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, mismatch("$", "%s is not JSON: %v", what, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, mismatch("$", "%s has data after its JSON value", what)
	}
	o, ok := v.(map[string]any)
	if !ok {
		return nil, mismatch("$", "%s is a JSON object, not %s", what, describe(v))
	}
	return o, nil
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
	o, err := decodeObject(payload, "telemetry of a modelled device")
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(o) {
		p := seg{key: k, idx: -1}
		t := in.telemetry[k]
		if t == nil {
			return mismatch(p.String(), "%s", in.notTelemetry(k))
		}
		if err := check(t.Schema, o[k], &p, false); err != nil {
			return err
		}
	}
	return nil
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
	o, err := decodeObject(patch, "a reported patch")
	if err != nil {
		return err
	}
	return i.properties1(o, nil, false)
}

// ValidateDesired checks a desired-properties merge patch: only writable
// properties (of the interface or its components), each of its schema.
func (i *Interface) ValidateDesired(patch []byte) error {
	o, err := decodeObject(patch, "a desired patch")
	if err != nil {
		return err
	}
	return i.properties1(o, nil, true)
}

func (i *Interface) properties1(o map[string]any, up *seg, desired bool) error {
	for _, k := range sortedKeys(o) {
		v := o[k]
		p := up.member(k)
		if strings.HasPrefix(k, "$") || up != nil && k == "__t" {
			if up != nil && k == "__t" && v != "c" {
				return mismatch(p.String(), "the component marker is \"c\", not %s", describe(v))
			}
			continue
		}
		if pr := i.properties[k]; pr != nil {
			if v == nil {
				continue
			}
			if desired && !pr.Writable {
				return mismatch(p.String(), "property %q of %s is read-only (not writable)", k, i.ID)
			}
			if !desired && pr.Writable {
				if ack, ok := v.(map[string]any); ok && isAck(ack) {
					if err := checkAck(ack, &p); err != nil {
						return err
					}
					if val, ok := ack["value"]; ok {
						vp := p.member("value")
						if err := check(pr.Schema, val, &vp, true); err != nil {
							return err
						}
					}
					continue
				}
			}
			if err := check(pr.Schema, v, &p, true); err != nil {
				return err
			}
			continue
		}
		if up == nil {
			if c := i.components[k]; c != nil {
				if v == nil {
					continue
				}
				co, ok := v.(map[string]any)
				if !ok {
					return mismatch(p.String(), "component %q takes an object of its properties, not %s", k, describe(v))
				}
				if c.Interface == nil {
					return mismatch(p.String(), "component %q names %s, which is not registered", k, c.SchemaID)
				}
				if err := c.Interface.properties1(co, &p, desired); err != nil {
					return err
				}
				continue
			}
		}
		if i.telemetry[k] != nil {
			return mismatch(p.String(), "%q is telemetry of %s, not a property", k, i.ID)
		}
		return mismatch(p.String(), "%q is not a property of %s; its properties: %s", k, i.ID,
			names(i.Properties, func(p *Property) string { return p.Name }))
	}
	return nil
}

// isAck tells an IoT Plug and Play writable-property acknowledgement: an
// object with "ac" and only the members value, ac, av, ad.
func isAck(o map[string]any) bool {
	if _, ok := o["ac"]; !ok {
		return false
	}
	for k := range o {
		switch k {
		case "value", "ac", "av", "ad":
		default:
			return false
		}
	}
	return true
}

func checkAck(o map[string]any, p *seg) error {
	for _, k := range []string{"ac", "av"} {
		if v, ok := o[k]; ok {
			if n, isNum := v.(json.Number); !isNum || !isInt(n, 64) {
				sp := p.member(k)
				return mismatch(sp.String(), "an integer (the acknowledgement's %s), not %s", map[string]string{"ac": "status code", "av": "desired version"}[k], describe(v))
			}
		}
	}
	if v, ok := o["ad"]; ok {
		if _, isStr := v.(string); !isStr {
			sp := p.member("ad")
			return mismatch(sp.String(), "a string (the acknowledgement's description), not %s", describe(v))
		}
	}
	return nil
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
	var v any
	if len(bytes.TrimSpace(payload)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return mismatch("$", "the request of %q is not JSON: %v", cmdName, err)
		}
	}
	if c.Request == nil {
		if m, ok := v.(map[string]any); v == nil || ok && len(m) == 0 {
			return nil
		}
		return mismatch("$", "command %q takes no request, got %s", cmdName, describe(v))
	}
	if v == nil {
		if c.Request.Nullable {
			return nil
		}
		return mismatch("$", "command %q needs its request %q (%s)", cmdName, c.Request.Name, c.Request.Schema.Kind)
	}
	return check(c.Request.Schema, v, nil, false)
}

// check validates v against s; in a patch (merge semantics) null deletes
// a member and is allowed inside objects and maps.
func check(s *Schema, v any, p *seg, patch bool) error {
	if v == nil {
		if patch {
			return nil
		}
		return mismatch(p.String(), "want %s, got null", s.want())
	}
	switch s.Kind {
	case Boolean:
		if _, ok := v.(bool); ok {
			return nil
		}
	case String:
		if _, ok := v.(string); ok {
			return nil
		}
	case Double, Decimal:
		if n, ok := v.(json.Number); ok {
			if _, err := strconv.ParseFloat(string(n), 64); err == nil {
				return nil
			}
			return mismatch(p.String(), "%s is out of range for %s", n, s.Kind)
		}
	case Float:
		if n, ok := v.(json.Number); ok {
			if _, err := strconv.ParseFloat(string(n), 32); err == nil {
				return nil
			}
			return mismatch(p.String(), "%s is out of range for float", n)
		}
	case Integer, Long, Short, Byte:
		if n, ok := v.(json.Number); ok {
			if isInt(n, map[Kind]int{Integer: 32, Long: 64, Short: 16, Byte: 8}[s.Kind]) {
				return nil
			}
			return mismatch(p.String(), "want %s, got %s (not an integer in range)", s.Kind, n)
		}
	case UnsignedByte, UnsignedShort, UnsignedInteger, UnsignedLong:
		if n, ok := v.(json.Number); ok {
			bits := map[Kind]int{UnsignedByte: 8, UnsignedShort: 16, UnsignedInteger: 32, UnsignedLong: 64}[s.Kind]
			if _, err := strconv.ParseUint(string(n), 10, bits); err == nil {
				return nil
			}
			return mismatch(p.String(), "want %s, got %s (not an integer in range)", s.Kind, n)
		}
	case Date, DateTime, Time, Duration, UUID, Bytes:
		str, ok := v.(string)
		if !ok {
			break
		}
		if textOK(s.Kind, str) {
			return nil
		}
		return mismatch(p.String(), "want %s, got %s", s.want(), describe(v))
	case Enum:
		for _, ev := range s.EnumValues {
			switch x := ev.Value.(type) {
			case string:
				if v == x {
					return nil
				}
			case int64:
				if n, ok := v.(json.Number); ok && string(n) == strconv.FormatInt(x, 10) {
					return nil
				}
			}
		}
		return mismatch(p.String(), "want one of %s, got %s", s.want(), describe(v))
	case Object:
		o, ok := v.(map[string]any)
		if !ok {
			break
		}
		for _, k := range sortedKeys(o) {
			fp := p.member(k)
			f := s.fields[k]
			if f == nil {
				return mismatch(fp.String(), "the object has no field %q; its fields: %s", k,
					names(s.Fields, func(f *Field) string { return f.Name }))
			}
			if err := check(f.Schema, o[k], &fp, patch); err != nil {
				return err
			}
		}
		return nil
	case Array:
		a, ok := v.([]any)
		if !ok {
			break
		}
		for k, x := range a {
			ep := seg{up: p, idx: k}
			if err := check(s.ElementSchema, x, &ep, false); err != nil {
				return err
			}
		}
		return nil
	case Map:
		o, ok := v.(map[string]any)
		if !ok {
			break
		}
		for _, k := range sortedKeys(o) {
			mp := p.member(k)
			if err := check(s.MapValue.Schema, o[k], &mp, patch); err != nil {
				return err
			}
		}
		return nil
	}
	return mismatch(p.String(), "want %s, got %s", s.want(), describe(v))
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

func isInt(n json.Number, bits int) bool {
	_, err := strconv.ParseInt(string(n), 10, bits)
	return err == nil
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

// sortedKeys makes the first error reported for a payload deterministic.
func sortedKeys(o map[string]any) []string {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	if len(keys) > 1 {
		sort.Strings(keys)
	}
	return keys
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
