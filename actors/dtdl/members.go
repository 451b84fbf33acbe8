package dtdl

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

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
