package twin

import (
	"encoding/json"
	"testing"
)

func decode(t testing.TB, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return v
}

func encode(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	return string(b)
}

// TestMergePatchRFC7396 runs the examples of RFC 7396 appendix A.
func TestMergePatchRFC7396(t *testing.T) {
	for _, tc := range []struct{ name, target, patch, want string }{
		{"replace member", `{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{"add member", `{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{"delete member", `{"a":"b"}`, `{"a":null}`, `{}`},
		{"delete one of two", `{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{"array replaced by string", `{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{"string replaced by array", `{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{"nested merge", `{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{"array of objects replaced", `{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{"array replaced by array", `["a","b"]`, `["c","d"]`, `["c","d"]`},
		{"object replaced by array", `{"a":"b"}`, `["c"]`, `["c"]`},
		{"object replaced by null", `{"a":"foo"}`, `null`, `null`},
		{"object replaced by string", `{"a":"foo"}`, `"bar"`, `"bar"`},
		{"null member of target kept", `{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{"array target becomes object", `[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{"nulls inside new object dropped", `{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, patch := decode(t, tc.target), decode(t, tc.patch)
			got := encode(t, MergePatch(target, patch))
			if want := encode(t, decode(t, tc.want)); got != want {
				t.Errorf("MergePatch(%s, %s) = %s, want %s", tc.target, tc.patch, got, want)
			}
			if encode(t, target) != encode(t, decode(t, tc.target)) {
				t.Errorf("target mutated: %s", encode(t, target))
			}
			if encode(t, patch) != encode(t, decode(t, tc.patch)) {
				t.Errorf("patch mutated: %s", encode(t, patch))
			}
		})
	}
}

func TestMergePatchSharesNothing(t *testing.T) {
	target := decode(t, `{"keep":{"x":[1,{"y":2}]},"over":1}`)
	patch := decode(t, `{"over":{"z":[3]},"new":[{"w":4}]}`)
	got := MergePatch(target, patch).(map[string]any)
	got["keep"].(map[string]any)["x"].([]any)[1].(map[string]any)["y"] = "changed"
	got["over"].(map[string]any)["z"].([]any)[0] = "changed"
	got["new"].([]any)[0].(map[string]any)["w"] = "changed"
	if s := encode(t, target); s != `{"keep":{"x":[1,{"y":2}]},"over":1}` {
		t.Errorf("target changed through the result: %s", s)
	}
	if s := encode(t, patch); s != `{"new":[{"w":4}],"over":{"z":[3]}}` {
		t.Errorf("patch changed through the result: %s", s)
	}
}

// diffObject returns the smallest merge patch that turns old into new, or an
// empty map when they are equal. Objects in new have no null members (merge
// removes them), so applying the result to old gives exactly new.
func diffObject(old, new map[string]any) map[string]any {
	d := map[string]any{}
	for k := range old {
		if _, ok := new[k]; !ok {
			d[k] = nil
		}
	}
	for k, nv := range new {
		ov, ok := old[k]
		if !ok {
			d[k] = nv
			continue
		}
		om, oIsObj := ov.(map[string]any)
		nm, nIsObj := nv.(map[string]any)
		if oIsObj && nIsObj {
			if sub := diffObject(om, nm); len(sub) > 0 {
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

func TestDiffPatch(t *testing.T) {
	for _, tc := range []struct{ name, old, patch, want string }{
		{"equal", `{"a":1,"b":{"c":[1,2]}}`, `{"a":1,"b":{"c":[1,2]}}`, `{}`},
		{"changed leaf", `{"a":1,"b":2}`, `{"a":1,"b":3}`, `{"b":3}`},
		{"deleted", `{"a":1,"b":2}`, `{"b":null}`, `{"b":null}`},
		{"deleting absent", `{"a":1}`, `{"b":null}`, `{}`},
		{"nested", `{"a":{"b":1,"c":2}}`, `{"a":{"b":1,"c":3,"d":4}}`, `{"a":{"c":3,"d":4}}`},
		{"emptied object", `{"a":{"b":1}}`, `{"a":{"b":null}}`, `{"a":{"b":null}}`},
		{"leaf to object", `{"a":1}`, `{"a":{}}`, `{"a":{}}`},
		{"leaf to object dropping nulls", `{"a":1}`, `{"a":{"x":null,"y":1}}`, `{"a":{"y":1}}`},
		{"object to leaf", `{"a":{"b":1}}`, `{"a":1}`, `{"a":1}`},
		{"array changed", `{"a":[1]}`, `{"a":[1,2]}`, `{"a":[1,2]}`},
		{"escaped keys", `{"<":"\u2028"}`, `{"<":"\u2029","\u00e9":1}`, `{"<":"\u2029","\u00e9":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, p := decode(t, tc.old).(map[string]any), decode(t, tc.patch).(map[string]any)
			new := mergeObject(old, p)
			d := diffPatch(old, new, p)
			if got := encode(t, d); got != encode(t, decode(t, tc.want)) {
				t.Errorf("diff = %s, want %s", got, tc.want)
			}
			if got, want := encode(t, d), encode(t, diffObject(old, new)); got != want {
				t.Errorf("diffPatch = %s, diffObject = %s", got, want)
			}
			if got := encode(t, MergePatch(old, d)); got != encode(t, new) {
				t.Errorf("old+diff = %s, want %s", got, encode(t, new))
			}
			if got, want := size(old)+sizeChange(old, new, p), len(encode(t, new)); got != want {
				t.Errorf("size by change = %d, want %d", got, want)
			}
		})
	}
}

// FuzzDiff holds diffPatch and sizeChange, which look only at the members a
// patch names, to the whole-document diffObject and size.
func FuzzDiff(f *testing.F) {
	f.Add(`{"a":{"b":1,"c":[1]},"d":"x"}`, `{"a":{"b":null,"c":{"e":null}},"f":{"g":null}}`)
	f.Add(`{"a":1}`, `{"a":{"b":{"c":null}}}`)
	f.Fuzz(func(t *testing.T, oldIn, patchIn string) {
		var o, p any
		if json.Unmarshal([]byte(oldIn), &o) != nil || json.Unmarshal([]byte(patchIn), &p) != nil {
			t.Skip()
		}
		old, ok1 := o.(map[string]any)
		pm, ok2 := p.(map[string]any)
		if !ok1 || !ok2 {
			t.Skip()
		}
		new := mergeObject(old, pm)
		d := diffPatch(old, new, pm)
		if got, want := encode(t, d), encode(t, diffObject(old, new)); got != want {
			t.Fatalf("diffPatch = %s, diffObject = %s", got, want)
		}
		if got, want := size(old)+sizeChange(old, new, pm), len(encode(t, new)); got != want {
			t.Fatalf("size by change = %d, want %d", got, want)
		}
	})
}
