package dtdl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
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
