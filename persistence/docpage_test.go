package persistence

import (
	"errors"
	"slices"
	"testing"
)

// TestDocPage: DocPage pages a prefix of a doc bucket in key order.
func TestDocPage(t *testing.T) {
	db := openTemp(t, nil)
	for _, k := range []string{"a/1", "a/2", "a/3", "b/1"} {
		commit(t, db, PutDoc(BucketJobs, k, []byte(`{}`)))
	}
	for _, tc := range []struct {
		prefix, after string
		limit         int
		want          []string
	}{
		{"a/", "", 2, []string{"a/1", "a/2"}},
		{"a/", "a/2", 2, []string{"a/3"}},
		{"a/", "a/3", 2, nil},
		{"", "a/3", 0, []string{"b/1"}},
		{"c/", "", 10, nil},
	} {
		docs, err := db.DocPage(BucketJobs, tc.prefix, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range docs {
			got = append(got, d.Key)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("DocPage(%q, %q, %d) = %v, want %v", tc.prefix, tc.after, tc.limit, got, tc.want)
		}
	}
	if _, err := db.DocPage("nope", "", "", 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown bucket: %v", err)
	}
}
