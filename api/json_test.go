package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/twinmesh/twinmesh/api"
)

func TestUnescapeHTML(t *testing.T) {
	for in, want := range map[string]string{
		`"a\u0026b"`:                     `"a&b"`,
		`{"when":"x \u003c 3 \u003E 1"}`: `{"when":"x < 3 > 1"}`,
		`"\\u0026"`:                      `"\\u0026"`,        // an escaped backslash, then text
		`"\\\u0026"`:                     `"\\&"`,            // an escaped backslash, then an escape
		`"\u00e9\n\u2028"`:               `"\u00e9\n\u2028"`, // other escapes stay
		`"\u00`:                          `"\u00`,            // cut short
		`"plain"`:                        `"plain"`,
	} {
		if got := string(api.UnescapeHTML([]byte(in))); got != want {
			t.Errorf("UnescapeHTML(%s) = %s, want %s", in, got, want)
		}
	}
	raw := []byte(`"\u0026"`)
	_ = api.UnescapeHTML(raw)
	if string(raw) != `"\u0026"` {
		t.Fatal("the input was modified")
	}
	b, err := api.Marshal(map[string]any{"token": "sr=x&sig=y", "doc": json.RawMessage(`{"when":"a \u003c b"}`)})
	if err != nil || string(b) != `{"doc":{"when":"a < b"},"token":"sr=x&sig=y"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
}

// FuzzUnescapeHTML: whatever string encoding/json escaped, the unescaped
// document decodes to the same value and holds none of the HTML escapes.
func FuzzUnescapeHTML(f *testing.F) {
	for _, s := range []string{"a&b<c>", `\u0026`, `\\u003c`, "é\u2028", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		escaped, _ := json.Marshal(s)
		out := api.UnescapeHTML(escaped)
		var a, b string
		if err := json.Unmarshal(escaped, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("%s does not decode: %v", out, err)
		}
		if a != b {
			t.Fatalf("%q became %q", a, b)
		}
		for _, esc := range []string{`\u003c`, `\u003e`, `\u0026`} {
			if n := strings.Count(string(out), esc); n > strings.Count(string(out), `\`+esc) {
				t.Fatalf("%s still escapes HTML", out)
			}
		}
	})
}
