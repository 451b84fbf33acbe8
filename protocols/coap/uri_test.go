package coap

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

func TestParsePath(t *testing.T) {
	seg := func(p string) []string { return strings.Split(p, "/") }
	for _, tc := range []struct {
		name string
		segs []string
		want Target
		err  bool
	}{
		{"telemetry", seg("devices/d1/messages/events"), Target{Resource: ResourceTelemetry, Device: "d1"}, false},
		{"trailing slash", seg("devices/d1/messages/events/"), Target{Resource: ResourceTelemetry, Device: "d1"}, false},
		{"twin", seg("devices/d1/twin"), Target{Resource: ResourceTwin, Device: "d1"}, false},
		{"desired", seg("devices/d1/twin/desired"), Target{Resource: ResourceDesired, Device: "d1"}, false},
		{"reported", seg("devices/d1/twin/reported"), Target{Resource: ResourceReported, Device: "d1"}, false},
		{"inbox", seg("devices/d1/messages/devicebound"), Target{Resource: ResourceInbox, Device: "d1"}, false},
		{"message", seg("devices/d1/messages/devicebound/m-9"), Target{Resource: ResourceMessage, Device: "d1", MessageID: "m-9"}, false},
		{"slash inside a segment", []string{"devices", "a/b", "twin"}, Target{Resource: ResourceTwin, Device: "a/b"}, false},
		{"no segments", nil, Target{}, true},
		{"root only", seg("devices"), Target{}, true},
		{"no device", seg("devices//twin"), Target{}, true},
		{"unknown", seg("devices/d1/methods"), Target{}, true},
		{"too deep", seg("devices/d1/twin/desired/x"), Target{}, true},
		{"empty message id", seg("devices/d1/messages/devicebound//"), Target{}, true},
		{"control character", seg("devices/d\x01/twin"), Target{}, true},
		{"invalid UTF-8", []string{"devices", "d\xff", "twin"}, Target{}, true},
		{"long id", seg("devices/" + strings.Repeat("x", 129) + "/twin"), Target{}, true},
		{"other root", seg("things/d1/twin"), Target{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePath(tc.segs)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParsePath(%q) = %+v, %v; want %+v, error %v", tc.segs, got, err, tc.want, tc.err)
			}
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatalf("error %v is not NotFound", err)
			}
		})
	}
}

func TestParseQuery(t *testing.T) {
	tok := "SharedAccessSignature sr=h%2Fdevices%2Fd1&sig=a%2Bb&se=9"
	for _, tc := range []struct {
		name string
		opts []string
		want string
		err  bool
	}{
		{"none", nil, "", false},
		{"decoded", []string{"sas=" + tok}, tok, false},
		{"still encoded", []string{"sas=SharedAccessSignature%20sr%3Dh%252Fdevices%252Fd1%26sig%3Da%252Bb%26se%3D9"}, tok, false},
		{"other options ignored", []string{"x=1", "sas=" + tok, "flag"}, tok, false},
		{"twice", []string{"sas=" + tok, "sas=" + tok}, "", true},
		{"empty", []string{"sas="}, "", true},
		{"bad escape", []string{"sas=SharedAccessSignature%20%zz"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ParseQuery(tc.opts)
			if (err != nil) != tc.err || q.SAS != tc.want {
				t.Fatalf("ParseQuery(%q) = %q, %v; want %q, error %v", tc.opts, q.SAS, err, tc.want, tc.err)
			}
			if err != nil && errcode.Of(err) != errcode.BadRequest {
				t.Fatalf("error %v is not BadRequest", err)
			}
		})
	}
}

// SASQuery's output, decoded the way clients turn a URI query into
// Uri-Query options, gives back the token.
func TestSASQueryRoundTrip(t *testing.T) {
	tok := "SharedAccessSignature sr=twinmesh.local%2Fdevices%2Fthermo-1&sig=ab%2Bc%3D&se=1767225600"
	q := SASQuery(tok)
	if strings.ContainsAny(strings.TrimPrefix(q, "sas="), " &=/+?#") {
		t.Fatalf("%q leaves reserved characters unescaped", q)
	}
	opt, err := url.PathUnescape(q)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseQuery([]string{opt})
	if err != nil || got.SAS != tok {
		t.Fatalf("ParseQuery(%q) = %q, %v; want %q", opt, got.SAS, err, tok)
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"devices/d1/messages/events", "devices/d1/twin/desired", "devices/d1/messages/devicebound/m1",
		"devices//twin", "devices/\xff/twin", "devices/d1/messages/devicebound/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		segs := strings.Split(path, "/")
		got, err := ParsePath(segs)
		if err != nil {
			if got != (Target{}) || !errors.Is(err, ErrNotFound) || !utf8.ValidString(err.Error()) {
				t.Fatalf("ParsePath(%q): %+v, %v", segs, got, err)
			}
			return
		}
		if got.Resource == ResourceUnknown || !validSegment(got.Device) {
			t.Fatalf("ParsePath(%q) accepted %+v", segs, got)
		}
		if (got.Resource == ResourceMessage) != (got.MessageID != "") {
			t.Fatalf("ParsePath(%q): message ID %q for %v", segs, got.MessageID, got.Resource)
		}
		// Parsing is a function of the segments.
		again, _ := ParsePath(segs)
		if again != got {
			t.Fatalf("ParsePath(%q) not deterministic", segs)
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"sas=SharedAccessSignature sr=a&sig=b&se=1", "sas=SharedAccessSignature%20x", "a=b\x00sas=", "sas=x\x00sas=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		opts := strings.Split(raw, "\x00")
		q, err := ParseQuery(opts)
		if err != nil {
			if q.SAS != "" || errcode.Of(err) != errcode.BadRequest {
				t.Fatalf("ParseQuery(%q): %q, %v", opts, q.SAS, err)
			}
			return
		}
		n := 0
		for _, o := range opts {
			if strings.HasPrefix(o, "sas=") {
				n++
			}
		}
		if n > 1 || (n == 1) != (q.SAS != "") {
			t.Fatalf("ParseQuery(%q) = %q with %d sas options", opts, q.SAS, n)
		}
	})
}
