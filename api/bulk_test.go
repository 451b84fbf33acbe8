package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

type importResult struct {
	DryRun  bool `json:"dryRun"`
	Lines   int  `json:"lines"`
	Created int  `json:"created"`
	Updated int  `json:"updated"`
	Failed  int  `json:"failed"`
	Errors  []struct {
		Line  int    `json:"line"`
		ID    string `json:"id"`
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"errors"`
}

const key16 = "AAECAwQFBgcICQoLDA0ODw==" // 16 bytes

// TestBulkImportExport: NDJSON import with per-line errors and a dry run,
// a body far over MaxBody, and an export that imports into another node
// as it is.
func TestBulkImportExport(t *testing.T) {
	c := newServer(t)
	imp := func(c interface {
		MustDo(testing.TB, string, string, any, int, ...string) []byte
	}, query, body string) importResult {
		t.Helper()
		var r importResult
		if err := json.Unmarshal(c.MustDo(t, "POST", "/api/v1/import"+query, body, 200), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	long := `{"entity":{"id":"big","kind":"room","tags":{"x":"` + strings.Repeat("y", 70<<10) + `"}}}`
	lines := []string{
		`{"entity":{"id":"b1","kind":"building","tags":{"site":"oslo"}}}`,
		`{"entity":{"id":"r1","kind":"room","parent":"b1"}}`,
		`{"entity":{"id":"gw1","kind":"gateway","parent":"r1"},"identity":{}}`,
		``,
		`{"entity":{"id":"d1","kind":"device","parent":"r1","connectedVia":"gw1"},"identity":{"primaryKey":"` + key16 + `","secondaryKey":"` + key16 + `","status":"disabled"},"twin":{"desired":{"fw":"2.0","cfg":{"a":1}},"tags":{"t":1}}}`,
		`{"entity":{"id":"d2","kind":"device","parent":"nowhere"}}`, // 6: unknown parent
		`{"entity":{"id":"d3","kind":"device"`,                      // 7: malformed
		long,                                                        // 8: too long
		`{"entity":{"id":"d4","kind":"device","parent":"r1"},"identity":{"primaryKey":"short"}}`, // 9: bad key
		`{"entity":{"id":"d5","kind":"device","parent":"r1"},"extra":1}`,                         // 10: unknown member
		`{"entity":{"id":"d6","kind":"spaceship","parent":"r1"}}`,                                // 11: unknown kind
		`{"entity":{"id":"d7","kind":"device","parent":"r1"},"twin":{"desired":{"n":7}}}`,
	}
	body := strings.Join(lines, "\n") + "\n"
	wantFailed := []int{6, 7, 8, 9, 10, 11}
	check := func(r importResult, dry bool) {
		t.Helper()
		var failed []int
		for _, e := range r.Errors {
			failed = append(failed, e.Line)
		}
		if r.DryRun != dry || r.Lines != 11 || r.Failed != 6 || r.Created != 5 || !reflect.DeepEqual(failed, wantFailed) {
			t.Fatalf("import (dry run %v): %+v", dry, r)
		}
		if r.Errors[0].ID != "d2" || !strings.Contains(r.Errors[0].Error.Message, "nowhere") || r.Errors[2].Error.Code != "too_large" {
			t.Fatalf("errors %+v", r.Errors)
		}
	}
	check(imp(c, "?dryRun=true", body), true)
	c.MustDo(t, "GET", "/api/v1/entities/b1", nil, 404) // a dry run changes nothing
	check(imp(c, "", body), false)

	var dev struct{ PrimaryKey, Status string }
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/devices/d1", nil, 200), &dev); err != nil || dev.PrimaryKey != key16 || dev.Status != "disabled" {
		t.Fatalf("d1 identity %+v %v", dev, err)
	}
	tw := c.MustDo(t, "GET", "/api/v1/twins/d1", nil, 200)
	if !strings.Contains(string(tw), `"cfg":{"a":1}`) || !strings.Contains(string(tw), `"tags":{"t":1}`) {
		t.Fatalf("d1 twin %s", tw)
	}
	c.MustDo(t, "GET", "/api/v1/devices/gw1", nil, 200)

	// Importing again changes nothing and updates every line.
	if r := imp(c, "", strings.Join(lines[:5], "\n")); r.Updated != 4 || r.Failed != 0 {
		t.Fatalf("re-import %+v", r)
	}
	if v := c.MustDo(t, "GET", "/api/v1/twins/d1", nil, 200); !bytes.Equal(stripLive(t, v), stripLive(t, tw)) {
		t.Fatalf("re-import changed d1:\n%s\n%s", tw, v)
	}

	// A body over 4 times MaxBody streams through.
	var big strings.Builder
	pad := strings.Repeat("p", 200)
	for i := range 1000 {
		fmt.Fprintf(&big, `{"entity":{"id":"m%04d","kind":"device","parent":"r1"},"identity":{},"twin":{"desired":{"i":%d,"pad":%q}}}`+"\n", i, i, pad)
	}
	if big.Len() < 4*(64<<10) {
		t.Fatalf("body of %d bytes", big.Len())
	}
	if r := imp(c, "", big.String()); r.Created != 1000 || r.Failed != 0 {
		t.Fatalf("big import %+v", r)
	}

	// The export imports into an empty node as it is, and exports the same.
	export := string(c.MustDo(t, "GET", "/api/v1/export", nil, 200))
	if n := strings.Count(export, "\n"); n != 1000+5 {
		t.Fatalf("export of %d lines", n)
	}
	c2 := newServer(t)
	if r := imp(c2, "", export); r.Created != 1005 || r.Failed != 0 {
		t.Fatalf("import of the export %+v", r)
	}
	if again := string(c2.MustDo(t, "GET", "/api/v1/export", nil, 200)); again != export {
		t.Fatalf("export after round trip differs")
	}
	sub := c.MustDo(t, "GET", "/api/v1/export?under=r1", nil, 200)
	sc := bufio.NewScanner(bytes.NewReader(sub))
	var first struct{ Entity struct{ ID string } }
	if !sc.Scan() || json.Unmarshal(sc.Bytes(), &first) != nil || first.Entity.ID != "r1" {
		t.Fatalf("export under r1 starts %q", sc.Text())
	}
	c.MustDo(t, "GET", "/api/v1/export?under=nowhere", nil, 404)
}

// stripLive drops what changes without a write (connection, telemetry
// times) from a twin document.
func stripLive(t *testing.T, doc []byte) []byte {
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"connection", "telemetry", "rollup", "metadata"} {
		delete(m, k)
	}
	b, _ := json.Marshal(m)
	return b
}
