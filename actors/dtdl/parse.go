package dtdl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The contexts and the extension this package reads.
const (
	ContextV3       = "dtmi:dtdl:context;3"
	ContextV2       = "dtmi:dtdl:context;2"
	ExtQuantitative = "dtmi:dtdl:extension:quantitativeTypes;1"
)

const (
	// maxSchemaDepth is DTDL v3's limit on the nesting of complex schemas.
	maxSchemaDepth = 8
	// maxNameLen is DTDL v3's limit on a name's length.
	maxNameLen = 512
	// maxContents bounds the contents of one interface (DTDL v3 allows
	// 100,000 across a model; one interface never needs more).
	maxContents = 10000
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$`)
	// dtmiRE is the DTMI grammar of DTDL v3: segments, and an optional
	// version with an optional minor version.
	dtmiRE = regexp.MustCompile(`^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*(?:;[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,5})?)?$`)
)

// ValidDTMI reports whether s is a digital twin model identifier.
func ValidDTMI(s string) bool { return len(s) <= 4096 && dtmiRE.MatchString(s) }

// Parse reads one DTDL interface document and checks it. Errors are a
// *[Error] wrapping [ErrInvalid] or [ErrUnsupported].
func Parse(doc []byte) (*Interface, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, invalid("$", "not a JSON document: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("$", "data after the interface")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		if _, isArray := v.([]any); isArray {
			return nil, unsupported("$", "an array of interfaces; store each interface under its own @id")
		}
		return nil, invalid("$", "an interface is a JSON object, not %s", describe(v))
	}
	p := &parser{raw: map[string]rawSchema{}, resolved: map[string]*Schema{}, resolving: map[string]bool{}}
	if err := p.context(obj); err != nil {
		return nil, err
	}
	return p.iface(obj, "$", true)
}

type rawSchema struct {
	v    any
	path string
}

type parser struct {
	version   int
	raw       map[string]rawSchema // interface-level schemas by @id
	resolved  map[string]*Schema
	resolving map[string]bool // cycle check
}

func (p *parser) context(obj map[string]any) error {
	c, ok := obj["@context"]
	if !ok {
		return invalid("$", "@context is missing; a DTDL v3 interface starts with \"@context\": %q", ContextV3)
	}
	var list []string
	switch c := c.(type) {
	case string:
		list = []string{c}
	case []any:
		for i, x := range c {
			s, ok := x.(string)
			if !ok {
				return invalid(fmt.Sprintf("$['@context'][%d]", i), "a context is a string, not %s", describe(x))
			}
			list = append(list, s)
		}
	default:
		return invalid("$['@context']", "a string or an array of strings, not %s", describe(c))
	}
	for i, s := range list {
		path := "$['@context']"
		if len(list) > 1 {
			path = fmt.Sprintf("$['@context'][%d]", i)
		}
		switch {
		case s == ContextV3:
			p.version = 3
		case s == ContextV2:
			p.version = 2
		case s == ExtQuantitative:
		case strings.HasPrefix(s, "dtmi:dtdl:context;"):
			return unsupported(path, "DTDL language version %q; this server reads %s (and %s)", s, ContextV3, ContextV2)
		case strings.HasPrefix(s, "dtmi:dtdl:extension:"):
			return unsupported(path, "the extension %s; only %s is supported", s, ExtQuantitative)
		default:
			return unsupported(path, "the context %q", s)
		}
	}
	if p.version == 0 {
		return invalid("$['@context']", "no DTDL language context; add %q", ContextV3)
	}
	return nil
}

// iface parses an Interface object; top is false for an interface declared
// inline as a component's schema.
func (p *parser) iface(obj map[string]any, path string, top bool) (*Interface, error) {
	allowed := []string{"@id", "@type", "comment", "contents", "description", "displayName", "schemas"}
	if top {
		allowed = append(allowed, "@context")
	} else if _, ok := obj["@context"]; ok {
		return nil, unsupported(path+"['@context']", "a context on an inline interface")
	}
	if err := members(obj, path, "Interface", allowed...); err != nil {
		return nil, err
	}
	if _, err := p.types(obj, path, "Interface", true); err != nil {
		return nil, err
	}
	id, err := dtmiOf(obj, "@id", path, true)
	if err != nil {
		return nil, err
	}
	i := &Interface{ID: id, Telemetry: []*Telemetry{}, Properties: []*Property{}, Commands: []*Command{}, Components: []*Component{},
		telemetry: map[string]*Telemetry{}, properties: map[string]*Property{}, commands: map[string]*Command{}, components: map[string]*Component{}}
	if i.DisplayName, err = text(obj, "displayName", path); err != nil {
		return nil, err
	}
	if i.Description, err = text(obj, "description", path); err != nil {
		return nil, err
	}
	if s, ok := obj["schemas"]; ok {
		list, ok := s.([]any)
		if !ok {
			return nil, invalid(path+".schemas", "an array of complex schemas, not %s", describe(s))
		}
		for k, x := range list {
			sp := fmt.Sprintf("%s.schemas[%d]", path, k)
			o, ok := x.(map[string]any)
			if !ok {
				return nil, invalid(sp, "a complex schema object, not %s", describe(x))
			}
			sid, err := dtmiOf(o, "@id", sp, true)
			if err != nil {
				return nil, err
			}
			if _, dup := p.raw[sid]; dup {
				return nil, invalid(sp+"['@id']", "schema %s is declared twice", sid)
			}
			p.raw[sid] = rawSchema{v: o, path: sp}
		}
		for k := range list {
			sp := fmt.Sprintf("%s.schemas[%d]", path, k)
			sid := list[k].(map[string]any)["@id"].(string)
			if _, err := p.ref(sid, sp, 0); err != nil {
				return nil, err
			}
		}
	}
	c, ok := obj["contents"]
	if !ok {
		return i, nil
	}
	list, ok := c.([]any)
	if !ok {
		return nil, invalid(path+".contents", "an array, not %s", describe(c))
	}
	if len(list) > maxContents {
		return nil, invalid(path+".contents", "%d contents; at most %d", len(list), maxContents)
	}
	names := map[string]string{}
	for k, x := range list {
		cp := fmt.Sprintf("%s.contents[%d]", path, k)
		o, ok := x.(map[string]any)
		if !ok {
			return nil, invalid(cp, "a content object, not %s", describe(x))
		}
		class, err := contentClass(o, cp)
		if err != nil {
			return nil, err
		}
		name, err := nameOf(o, cp)
		if err != nil {
			return nil, err
		}
		if prev, dup := names[name]; dup {
			return nil, invalid(cp+".name", "%q is already the name of %s", name, prev)
		}
		names[name] = cp
		switch class {
		case "Telemetry":
			t, err := p.telemetryContent(o, cp, name)
			if err != nil {
				return nil, err
			}
			i.Telemetry = append(i.Telemetry, t)
			i.telemetry[name] = t
		case "Property":
			pr, err := p.propertyContent(o, cp, name)
			if err != nil {
				return nil, err
			}
			i.Properties = append(i.Properties, pr)
			i.properties[name] = pr
		case "Command":
			cm, err := p.commandContent(o, cp, name)
			if err != nil {
				return nil, err
			}
			i.Commands = append(i.Commands, cm)
			i.commands[name] = cm
		case "Component":
			co, err := p.componentContent(o, cp, name)
			if err != nil {
				return nil, err
			}
			i.Components = append(i.Components, co)
			i.components[name] = co
		}
	}
	return i, nil
}

func contentClass(o map[string]any, path string) (string, error) {
	all, err := typeList(o, path)
	if err != nil {
		return "", err
	}
	if len(all) == 0 {
		return "", invalid(path, "@type is missing; one of Telemetry, Property, Command, Component")
	}
	class := ""
	for _, t := range all {
		switch t {
		case "Telemetry", "Property", "Command", "Component":
			if class != "" {
				return "", invalid(path+"['@type']", "both %s and %s", class, t)
			}
			class = t
		case "Relationship":
			return "", unsupported(path+"['@type']", "Relationship contents")
		}
	}
	if class == "" {
		return "", invalid(path+"['@type']", "%q names no content class; one of Telemetry, Property, Command, Component", strings.Join(all, ","))
	}
	return class, nil
}

func (p *parser) telemetryContent(o map[string]any, path, name string) (*Telemetry, error) {
	if err := members(o, path, "Telemetry", "@id", "@type", "comment", "description", "displayName", "name", "schema", "unit"); err != nil {
		return nil, err
	}
	t := &Telemetry{Name: name}
	var err error
	if t.SemanticTypes, err = p.types(o, path, "Telemetry", true); err != nil {
		return nil, err
	}
	if t.DisplayName, t.Description, t.Unit, err = labels(o, path); err != nil {
		return nil, err
	}
	if t.Schema, err = p.schemaOf(o, path, 0); err != nil {
		return nil, err
	}
	return t, nil
}

func (p *parser) propertyContent(o map[string]any, path, name string) (*Property, error) {
	if err := members(o, path, "Property", "@id", "@type", "comment", "description", "displayName", "name", "schema", "unit", "writable"); err != nil {
		return nil, err
	}
	pr := &Property{Name: name}
	var err error
	if pr.SemanticTypes, err = p.types(o, path, "Property", true); err != nil {
		return nil, err
	}
	if pr.DisplayName, pr.Description, pr.Unit, err = labels(o, path); err != nil {
		return nil, err
	}
	if w, ok := o["writable"]; ok {
		b, ok := w.(bool)
		if !ok {
			return nil, invalid(path+".writable", "true or false, not %s", describe(w))
		}
		pr.Writable = b
	}
	if pr.Schema, err = p.schemaOf(o, path, 0); err != nil {
		return nil, err
	}
	return pr, nil
}

func (p *parser) commandContent(o map[string]any, path, name string) (*Command, error) {
	allowed := []string{"@id", "@type", "comment", "description", "displayName", "name", "request", "response"}
	if p.version == 2 {
		allowed = append(allowed, "commandType") // deprecated in v2, ignored
	}
	if err := members(o, path, "Command", allowed...); err != nil {
		return nil, err
	}
	c := &Command{Name: name}
	var err error
	if _, err = p.types(o, path, "Command", false); err != nil {
		return nil, err
	}
	if c.DisplayName, err = text(o, "displayName", path); err != nil {
		return nil, err
	}
	if c.Description, err = text(o, "description", path); err != nil {
		return nil, err
	}
	if c.Request, err = p.commandPayload(o, "request", "CommandRequest", path); err != nil {
		return nil, err
	}
	if c.Response, err = p.commandPayload(o, "response", "CommandResponse", path); err != nil {
		return nil, err
	}
	return c, nil
}

func (p *parser) commandPayload(parent map[string]any, key, class, path string) (*CommandPayload, error) {
	v, ok := parent[key]
	if !ok {
		return nil, nil
	}
	path += "." + key
	o, ok := v.(map[string]any)
	if !ok {
		return nil, invalid(path, "a %s object, not %s", class, describe(v))
	}
	allowed := []string{"@id", "@type", "comment", "description", "displayName", "name", "schema", "unit"}
	if p.version == 3 {
		allowed = append(allowed, "nullable")
	}
	if err := members(o, path, class, allowed...); err != nil {
		return nil, err
	}
	name, err := nameOf(o, path)
	if err != nil {
		return nil, err
	}
	cp := &CommandPayload{Name: name}
	if cp.SemanticTypes, err = p.types(o, path, class, false); err != nil {
		return nil, err
	}
	if cp.DisplayName, cp.Description, cp.Unit, err = labels(o, path); err != nil {
		return nil, err
	}
	if n, ok := o["nullable"]; ok {
		b, ok := n.(bool)
		if !ok {
			return nil, invalid(path+".nullable", "true or false, not %s", describe(n))
		}
		cp.Nullable = b
	}
	if cp.Schema, err = p.schemaOf(o, path, 0); err != nil {
		return nil, err
	}
	return cp, nil
}

func (p *parser) componentContent(o map[string]any, path, name string) (*Component, error) {
	if err := members(o, path, "Component", "@id", "@type", "comment", "description", "displayName", "name", "schema"); err != nil {
		return nil, err
	}
	c := &Component{Name: name}
	var err error
	if _, err = p.types(o, path, "Component", false); err != nil {
		return nil, err
	}
	if c.DisplayName, err = text(o, "displayName", path); err != nil {
		return nil, err
	}
	if c.Description, err = text(o, "description", path); err != nil {
		return nil, err
	}
	switch s := o["schema"].(type) {
	case nil:
		return nil, invalid(path, "schema is missing; a component names an interface")
	case string:
		if !ValidDTMI(s) {
			return nil, invalid(path+".schema", "%q is not a DTMI (dtmi:com:example:Thermostat;1)", s)
		}
		c.SchemaID = s
	case map[string]any:
		in, err := p.iface(s, path+".schema", false)
		if err != nil {
			return nil, err
		}
		c.SchemaID, c.Interface, c.inline = in.ID, in, true
	default:
		return nil, invalid(path+".schema", "an interface's DTMI or an inline Interface, not %s", describe(s))
	}
	return c, nil
}

// schemaOf parses the required "schema" member of o.
func (p *parser) schemaOf(o map[string]any, path string, depth int) (*Schema, error) {
	v, ok := o["schema"]
	if !ok {
		return nil, invalid(path, "schema is missing")
	}
	return p.schema(v, path+".schema", depth)
}

func (p *parser) schema(v any, path string, depth int) (*Schema, error) {
	switch s := v.(type) {
	case string:
		if k, ok := primitives[s]; ok {
			return &Schema{Kind: k}, nil
		}
		if geospatial[s] {
			return nil, unsupported(path, "the geospatial schema %s", s)
		}
		if strings.HasPrefix(s, "dtmi:") {
			return p.ref(s, path, depth)
		}
		return nil, invalid(path, "unknown schema %q; a primitive (boolean, double, integer, string, …), a complex schema object, or the DTMI of one in schemas", s)
	case map[string]any:
		return p.complex(s, path, depth)
	default:
		return nil, invalid(path, "a schema name or a complex schema object, not %s", describe(v))
	}
}

// ref resolves a schema named by DTMI among the interface's schemas.
func (p *parser) ref(id, path string, depth int) (*Schema, error) {
	if s, ok := p.resolved[id]; ok {
		return s, nil
	}
	raw, ok := p.raw[id]
	if !ok {
		return nil, invalid(path, "schema %s is not declared in the interface's schemas", id)
	}
	if p.resolving[id] {
		return nil, invalid(path, "schema %s refers to itself; DTDL schemas may not be recursive", id)
	}
	p.resolving[id] = true
	defer delete(p.resolving, id)
	s, err := p.complex(raw.v.(map[string]any), raw.path, depth)
	if err != nil {
		return nil, err
	}
	p.resolved[id] = s
	return s, nil
}

func (p *parser) complex(o map[string]any, path string, depth int) (*Schema, error) {
	if depth >= maxSchemaDepth {
		return nil, invalid(path, "complex schemas nested deeper than %d levels", maxSchemaDepth)
	}
	all, err := typeList(o, path)
	if err != nil {
		return nil, err
	}
	var kind Kind
	for _, t := range all {
		switch Kind(t) {
		case Object, Enum, Array, Map:
			if kind != "" {
				return nil, invalid(path+"['@type']", "both %s and %s", kind, t)
			}
			kind = Kind(t)
		}
	}
	if kind == "" {
		if len(all) == 1 && all[0] != "" && geospatial[strings.ToLower(all[0][:1])+all[0][1:]] {
			return nil, unsupported(path+"['@type']", "the geospatial schema %s", all[0])
		}
		return nil, invalid(path, "@type of a complex schema is one of Object, Enum, Array, Map; got %q", strings.Join(all, ","))
	}
	s := &Schema{Kind: kind}
	if id, ok := o["@id"]; ok {
		sid, isStr := id.(string)
		if !isStr || !ValidDTMI(sid) {
			return nil, invalid(path+"['@id']", "a DTMI, not %s", describe(id))
		}
		s.ID = sid
	}
	if s.DisplayName, err = text(o, "displayName", path); err != nil {
		return nil, err
	}
	if _, err := text(o, "description", path); err != nil {
		return nil, err
	}
	common := []string{"@id", "@type", "comment", "description", "displayName"}
	switch kind {
	case Object:
		if err := members(o, path, "Object", append(common, "fields")...); err != nil {
			return nil, err
		}
		list, ok := o["fields"].([]any)
		if !ok {
			return nil, invalid(path+".fields", "an Object needs an array of fields")
		}
		s.fields = map[string]*Field{}
		s.Fields = []*Field{}
		for k, x := range list {
			fp := fmt.Sprintf("%s.fields[%d]", path, k)
			f, err := p.field(x, fp, "Field", depth+1)
			if err != nil {
				return nil, err
			}
			if _, dup := s.fields[f.Name]; dup {
				return nil, invalid(fp+".name", "field %q is declared twice", f.Name)
			}
			s.fields[f.Name] = f
			s.Fields = append(s.Fields, f)
		}
	case Enum:
		if err := members(o, path, "Enum", append(common, "enumValues", "valueSchema")...); err != nil {
			return nil, err
		}
		vs, _ := o["valueSchema"].(string)
		if vs != string(Integer) && vs != string(String) {
			return nil, invalid(path+".valueSchema", "an Enum's valueSchema is integer or string, not %s", describe(o["valueSchema"]))
		}
		s.ValueSchema = Kind(vs)
		list, ok := o["enumValues"].([]any)
		if !ok {
			return nil, invalid(path+".enumValues", "an Enum needs an array of enumValues")
		}
		names, values := map[string]bool{}, map[any]bool{}
		for k, x := range list {
			ep := fmt.Sprintf("%s.enumValues[%d]", path, k)
			ev, err := enumValue(x, ep, s.ValueSchema)
			if err != nil {
				return nil, err
			}
			if names[ev.Name] {
				return nil, invalid(ep+".name", "enum value %q is declared twice", ev.Name)
			}
			if values[ev.Value] {
				return nil, invalid(ep+".enumValue", "enum value %v is declared twice", ev.Value)
			}
			names[ev.Name], values[ev.Value] = true, true
			s.EnumValues = append(s.EnumValues, ev)
		}
	case Array:
		if err := members(o, path, "Array", append(common, "elementSchema")...); err != nil {
			return nil, err
		}
		v, ok := o["elementSchema"]
		if !ok {
			return nil, invalid(path, "an Array needs an elementSchema")
		}
		if s.ElementSchema, err = p.schema(v, path+".elementSchema", depth+1); err != nil {
			return nil, err
		}
	case Map:
		if err := members(o, path, "Map", append(common, "mapKey", "mapValue")...); err != nil {
			return nil, err
		}
		if s.MapKey, err = p.field(o["mapKey"], path+".mapKey", "MapKey", depth+1); err != nil {
			return nil, err
		}
		if s.MapKey.Schema.Kind != String {
			return nil, invalid(path+".mapKey.schema", "a map key's schema is string, not %s", s.MapKey.Schema.Kind)
		}
		if s.MapValue, err = p.field(o["mapValue"], path+".mapValue", "MapValue", depth+1); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (p *parser) field(x any, path, class string, depth int) (*Field, error) {
	o, ok := x.(map[string]any)
	if !ok {
		return nil, invalid(path, "a %s object, not %s", class, describe(x))
	}
	if err := members(o, path, class, "@id", "@type", "comment", "description", "displayName", "name", "schema", "unit"); err != nil {
		return nil, err
	}
	name, err := nameOf(o, path)
	if err != nil {
		return nil, err
	}
	f := &Field{Name: name}
	if f.SemanticTypes, err = p.types(o, path, class, false); err != nil {
		return nil, err
	}
	if f.DisplayName, f.Description, f.Unit, err = labels(o, path); err != nil {
		return nil, err
	}
	if f.Schema, err = p.schemaOf(o, path, depth); err != nil {
		return nil, err
	}
	return f, nil
}

func enumValue(x any, path string, vs Kind) (EnumValue, error) {
	o, ok := x.(map[string]any)
	if !ok {
		return EnumValue{}, invalid(path, "an EnumValue object, not %s", describe(x))
	}
	if err := members(o, path, "EnumValue", "@id", "@type", "comment", "description", "displayName", "enumValue", "name"); err != nil {
		return EnumValue{}, err
	}
	name, err := nameOf(o, path)
	if err != nil {
		return EnumValue{}, err
	}
	ev := EnumValue{Name: name}
	if ev.DisplayName, err = text(o, "displayName", path); err != nil {
		return EnumValue{}, err
	}
	switch v := o["enumValue"].(type) {
	case string:
		if vs != String {
			return EnumValue{}, invalid(path+".enumValue", "the Enum's valueSchema is integer, but %q is a string", v)
		}
		ev.Value = v
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 32)
		if vs != Integer || err != nil {
			return EnumValue{}, invalid(path+".enumValue", "the Enum's valueSchema is %s, but %s is not one", vs, v)
		}
		ev.Value = n
	default:
		return EnumValue{}, invalid(path+".enumValue", "an enumValue of schema %s is required", vs)
	}
	return ev, nil
}

// types checks @type: it must contain base (when required, or when
// present at all) and may carry semantic types, returned for display.
func (p *parser) types(o map[string]any, path, base string, required bool) ([]string, error) {
	all, err := typeList(o, path)
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		if required {
			return nil, invalid(path, "@type is missing; it must be %s", base)
		}
		return nil, nil
	}
	var sem []string
	found := false
	for _, t := range all {
		if t == base {
			found = true
			continue
		}
		if !nameRE.MatchString(t) {
			return nil, invalid(path+"['@type']", "%q is not a type name", t)
		}
		sem = append(sem, t)
	}
	if !found {
		return nil, invalid(path+"['@type']", "must include %s", base)
	}
	return sem, nil
}

func typeList(o map[string]any, path string) ([]string, error) {
	switch t := o["@type"].(type) {
	case nil:
		if _, present := o["@type"]; present {
			return nil, invalid(path+"['@type']", "null is not a type")
		}
		return nil, nil
	case string:
		return []string{t}, nil
	case []any:
		out := make([]string, 0, len(t))
		for k, x := range t {
			s, ok := x.(string)
			if !ok {
				return nil, invalid(fmt.Sprintf("%s['@type'][%d]", path, k), "a type is a string, not %s", describe(x))
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, invalid(path+"['@type']", "a string or an array of strings, not %s", describe(t))
	}
}

// members refuses any member of o not in allowed, naming it; "extends"
// is refused as unsupported rather than unknown.
func members(o map[string]any, path, class string, allowed ...string) error {
	var bad []string
	for k := range o {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
				break
			}
		}
		if !ok {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	if bad[0] == "extends" || len(bad) > 1 && contains(bad, "extends") {
		return unsupported(path+".extends", "extends (interface inheritance); copy the contents into the interface")
	}
	return invalid(path+memberPath(bad[0]), "%s has no member %q; it has %s", class, bad[0], strings.Join(allowed, ", "))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var identRE = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*$`)

func memberPath(k string) string {
	if identRE.MatchString(k) {
		return "." + k
	}
	return "[" + strconv.Quote(k) + "]"
}

func nameOf(o map[string]any, path string) (string, error) {
	v, ok := o["name"]
	if !ok {
		return "", invalid(path, "name is missing")
	}
	s, ok := v.(string)
	if !ok {
		return "", invalid(path+".name", "a string, not %s", describe(v))
	}
	if len(s) > maxNameLen || !nameRE.MatchString(s) {
		return "", invalid(path+".name", "%q is not a DTDL name: letters, digits and underscores, starting with a letter, not ending with an underscore, at most %d characters", s, maxNameLen)
	}
	return s, nil
}

func dtmiOf(o map[string]any, key, path string, required bool) (string, error) {
	v, ok := o[key]
	if !ok {
		if required {
			return "", invalid(path, "%s is missing; a DTMI such as dtmi:com:example:Thermostat;1", key)
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok || !ValidDTMI(s) {
		return "", invalid(path+"['"+key+"']", "%s is not a DTMI (dtmi:<segment>:<segment>;<version>)", describe(v))
	}
	return s, nil
}

// text reads a localizable string: a plain string or a language map, from
// which English (or else the first language by tag) is kept.
func text(o map[string]any, key, path string) (string, error) {
	switch v := o[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case map[string]any:
		if s, ok := v["en"].(string); ok {
			return s, nil
		}
		langs := make([]string, 0, len(v))
		for l := range v {
			langs = append(langs, l)
		}
		sort.Strings(langs)
		for _, l := range langs {
			if _, ok := v[l].(string); !ok {
				return "", invalid(path+"."+key+memberPath(l), "a string, not %s", describe(v[l]))
			}
		}
		if len(langs) == 0 {
			return "", nil
		}
		return v[langs[0]].(string), nil
	default:
		return "", invalid(path+"."+key, "a string or a language map, not %s", describe(v))
	}
}

func labels(o map[string]any, path string) (display, desc, unit string, err error) {
	if display, err = text(o, "displayName", path); err != nil {
		return
	}
	if desc, err = text(o, "description", path); err != nil {
		return
	}
	if u, ok := o["unit"]; ok {
		s, isStr := u.(string)
		if !isStr || !nameRE.MatchString(s) {
			err = invalid(path+".unit", "a unit name such as degreeCelsius, not %s", describe(u))
			return
		}
		unit = s
	}
	return
}

// describe names a decoded JSON value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("the boolean %v", v)
	case json.Number:
		return "the number " + string(v)
	case float64:
		return "the number " + strconv.FormatFloat(v, 'g', -1, 64)
	case string:
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		return "the string " + strconv.Quote(v)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
