package actors

import (
	"encoding/json"
	"testing"
)

// TestReplacement: the merge patch that turns one object into another.
func TestReplacement(t *testing.T) {
	for _, tc := range []struct {
		name, old, want, patch string
	}{
		{"same", `{"a":1,"$version":3}`, `{"a":1}`, `{}`},
		{"removed and added", `{"a":1,"b":2,"$version":3}`, `{"b":2,"c":3}`, `{"a":null,"c":3}`},
		{"nested", `{"o":{"x":1,"y":2}}`, `{"o":{"y":3}}`, `{"o":{"x":null,"y":3}}`},
		{"object to scalar", `{"o":{"x":1}}`, `{"o":5}`, `{"o":5}`},
		{"scalar to object", `{"o":5}`, `{"o":{"x":1}}`, `{"o":{"x":1}}`},
		{"new object drops nulls", `{}`, `{"o":{"x":null,"y":1}}`, `{"o":{"y":1}}`},
		{"null deletes", `{"a":1}`, `{"a":null}`, `{"a":null}`},
		{"emptied", `{"a":1,"b":{"c":2}}`, `{}`, `{"a":null,"b":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var old, want map[string]any
			if err := json.Unmarshal([]byte(tc.old), &old); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(Replacement(old, want))
			if string(got) != tc.patch {
				t.Fatalf("patch %s, want %s", got, tc.patch)
			}
		})
	}
}
