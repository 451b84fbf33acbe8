package api

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// TestLineReader: lines are split on \n (a \r before it dropped), the last
// one may lack its end, and a line over the bound is reported once and
// skipped whole, whatever the buffer size.
func TestLineReader(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 100)
	in := "a\r\n\nbb\n" + string(long) + "\nc"
	for _, buf := range []int{16, 64, 4096} {
		lr := &lineReader{r: bufio.NewReaderSize(bytes.NewReader([]byte(in)), buf), max: 50}
		type line struct {
			text    string
			tooLong bool
		}
		var got []line
		for {
			l, tooLong, err := lr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, line{string(l), tooLong})
		}
		want := []line{{"a", false}, {"", false}, {"bb", false}, {"", true}, {"c", false}}
		if len(got) != len(want) {
			t.Fatalf("buffer %d: %+v", buf, got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("buffer %d: line %d = %+v, want %+v", buf, i, got[i], want[i])
			}
		}
	}
}

// FuzzBulkLines: any body splits into lines no longer than the bound (or
// reported too long), and any line either parses into a valid entity or is
// refused with a bad-request or too-large error, never a panic.
func FuzzBulkLines(f *testing.F) {
	for _, s := range []string{
		`{"entity":{"id":"d1","kind":"device","parent":"r1"},"identity":{},"twin":{"desired":{"a":1},"tags":{"t":"x"}}}` + "\n",
		`{"entity":{"id":"d1","kind":"device"},"identity":{"primaryKey":"AAECAwQFBgcICQoLDA0ODw==","status":"disabled"}}`,
		"{\"entity\":{\"id\":\"\",\"kind\":\"x\"}}\r\n{}\n\n[1,2]\n",
		`{"entity":{"id":"a b","kind":"room"},"extra":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		lr := &lineReader{r: bufio.NewReaderSize(bytes.NewReader(body), 16), max: 256}
		total := 0
		for {
			raw, tooLong, err := lr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			total += len(raw)
			if tooLong {
				continue
			}
			if len(raw) > lr.max+1 {
				t.Fatalf("a line of %d bytes over the bound %d", len(raw), lr.max)
			}
			l, err := parseBulkLine(raw)
			if err != nil {
				if c := errcode.Of(err); c != errcode.BadRequest {
					t.Fatalf("line %q: error code %v: %v", raw, c, err)
				}
				continue
			}
			if l.Entity.ID == "" || l.Entity.Kind == "" {
				t.Fatalf("line %q parsed into %+v", raw, l)
			}
		}
		if total > len(body) {
			t.Fatalf("read %d bytes of a %d-byte body", total, len(body))
		}
	})
}
