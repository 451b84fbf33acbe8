package rules

import "testing"

func mustParse(tb testing.TB, doc string) *Rule {
	tb.Helper()
	r, err := Parse([]byte(doc))
	if err != nil {
		tb.Fatalf("Parse(%s): %v", doc, err)
	}
	return r
}
