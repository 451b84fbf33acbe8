package twin

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Values inside a Twin are decoded JSON (map[string]any, []any, string,
// float64, bool, nil) and are never mutated once stored: every change builds
// new maps along the changed path and shares the untouched subtrees. That is
// what makes Clone cheap. Values cross the package boundary only as deep
// copies.

// MergePatch applies the JSON merge patch patch to target as RFC 7396
// defines it and returns the result. Both are decoded JSON values
// (map[string]any for objects, []any for arrays, as json.Unmarshal produces
// into an any). A null member of an object patch deletes the member; a
// non-object patch replaces the target. MergePatch does not mutate its
// inputs, and the result shares no maps or slices with them.
func MergePatch(target, patch any) any {
	return copyValue(merge(target, patch))
}

// merge is MergePatch without the final copy: the result may share subtrees
// with target and patch, and neither is mutated.
func merge(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, _ := target.(map[string]any)
	return mergeObject(t, p)
}

// mergeObject applies the object patch p to the object t (nil is {}). It
// returns a new map; t and p are not mutated.
func mergeObject(t, p map[string]any) map[string]any {
	out := make(map[string]any, len(t)+len(p))
	for k, v := range t {
		out[k] = v
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = merge(out[k], v)
	}
	return out
}

// diffPatch returns the smallest merge patch that turns old into new, where
// new is mergeObject(old, patch): only members named in patch can differ.
// It returns an empty map when nothing changed. Objects in new have no null
// members (merge removes them), so applying the result to old gives exactly
// new.
func diffPatch(old, new, patch map[string]any) map[string]any {
	d := map[string]any{}
	for k, pv := range patch {
		ov, had := old[k]
		if pv == nil {
			if had {
				d[k] = nil
			}
			continue
		}
		nv := new[k]
		if !had {
			d[k] = nv
			continue
		}
		om, oIsObj := ov.(map[string]any)
		pm, pIsObj := pv.(map[string]any)
		if oIsObj && pIsObj {
			if sub := diffPatch(om, nv.(map[string]any), pm); len(sub) > 0 {
				d[k] = sub
			}
			continue
		}
		if !equal(ov, nv) {
			d[k] = nv
		}
	}
	return d
}

// sizeChange returns size(new) - size(old), where new is
// mergeObject(old, patch), looking only at the members patch names.
func sizeChange(old, new, patch map[string]any) int {
	commas := func(n int) int { return max(n-1, 0) }
	n := commas(len(new)) - commas(len(old))
	for k, pv := range patch {
		ov, had := old[k]
		nv, has := new[k]
		om, oIsObj := ov.(map[string]any)
		pm, pIsObj := pv.(map[string]any)
		if had && has && oIsObj && pIsObj {
			n += sizeChange(om, nv.(map[string]any), pm)
			continue
		}
		if had {
			n -= stringSize(k) + 1 + size(ov)
		}
		if has {
			n += stringSize(k) + 1 + size(nv)
		}
	}
	return n
}

// delta returns the members of desired whose value differs from reported:
// objects are compared member by member, a member absent from reported
// differs. The result shares subtrees with desired.
func delta(desired, reported map[string]any) map[string]any {
	d := map[string]any{}
	for k, dv := range desired {
		rv, ok := reported[k]
		if !ok {
			d[k] = dv
			continue
		}
		dm, dIsObj := dv.(map[string]any)
		rm, rIsObj := rv.(map[string]any)
		if dIsObj && rIsObj {
			if sub := delta(dm, rm); len(sub) > 0 {
				d[k] = sub
			}
			continue
		}
		if !equal(dv, rv) {
			d[k] = dv
		}
	}
	return d
}

// equal reports whether two decoded JSON values are deeply equal.
func equal(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, xv := range x {
			yv, ok := y[k]
			if !ok || !equal(xv, yv) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// copyValue returns a deep copy of a decoded JSON value. Values of other
// types are returned as they are.
func copyValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return copyObject(x)
	case []any:
		if x == nil {
			return x
		}
		out := make([]any, len(x))
		for i, c := range x {
			out[i] = copyValue(c)
		}
		return out
	}
	return v
}

// copyObject returns a deep copy of m; nil gives an empty map.
func copyObject(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = copyValue(v)
	}
	return out
}

// normalize turns a Go value handed in by a caller into the decoded-JSON
// form used inside a Twin (as if it had gone through json.Marshal and
// json.Unmarshal into an any), without sharing anything with it. Integers
// become float64, strings become valid UTF-8. It reports false for values
// JSON cannot represent (NaN, ±Inf, channels, ...); object members that
// cannot be represented are dropped.
func normalize(v any) (any, bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case bool:
		return x, true
	case string:
		return validString(x), true
	case float64:
		return x, !math.IsNaN(x) && !math.IsInf(x, 0)
	case float32:
		return normalize(float64(x))
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return nil, false
		}
		return normalize(f)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, c := range x {
			if n, ok := normalize(c); ok {
				out[validString(k)] = n
			}
		}
		return out, true
	case []any:
		out := make([]any, len(x))
		for i, c := range x {
			n, ok := normalize(c)
			if !ok {
				return nil, false
			}
			out[i] = n
		}
		return out, true
	}
	// Anything else (structs, typed maps and slices, json.RawMessage):
	// take the JSON round trip.
	b, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, false
	}
	return out, true
}

// validString replaces invalid UTF-8 the way encoding/json does.
func validString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// reservedKey returns the first member name in the object tree of v that
// starts with '$', or "" if there is none. Arrays are values and are not
// looked into.
func reservedKey(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	for k, c := range m {
		if strings.HasPrefix(k, "$") {
			return k
		}
		if r := reservedKey(c); r != "" {
			return r
		}
	}
	return ""
}
