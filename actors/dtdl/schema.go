package dtdl

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

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
