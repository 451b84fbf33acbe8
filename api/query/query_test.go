package query

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func doc(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

var twins = []string{
	`{"deviceId":"d1","kind":"device","status":"enabled","connectionState":"Connected","version":3,
	  "tags":{"site":"b1","floor":2,"owner":{"team":"ops"}},
	  "properties":{"desired":{"fw":"2.1"},"reported":{"fw":"1.9","temp":21.5,"ok":true,"note":null}}}`,
	`{"deviceId":"d2","kind":"device","status":"disabled","connectionState":"Disconnected","version":1,
	  "tags":{"site":"b2","floor":3},
	  "properties":{"desired":{},"reported":{"fw":"2.0","temp":30}}}`,
	`{"deviceId":"sensor-3","kind":"sensor","status":"enabled","connectionState":"Disconnected","version":7,
	  "tags":{"site":"b1"},
	  "properties":{"desired":{},"reported":{}}}`,
	`{"deviceId":"r1","kind":"room","version":1,"tags":{},"properties":{"desired":{},"reported":{}}}`,
}

// TestMatch: which twins each condition selects.
func TestMatch(t *testing.T) {
	docs := make([]map[string]any, len(twins))
	for i, s := range twins {
		docs[i] = doc(t, s)
	}
	for _, tc := range []struct {
		where string
		want  []string
	}{
		{"tags.site = 'b1'", []string{"d1", "sensor-3"}},
		{"tags.site = 'b1' AND properties.reported.fw < '2.0'", []string{"d1"}},
		{"tags.site = 'b1' or tags.site = \"b2\"", []string{"d1", "d2", "sensor-3"}},
		{"NOT tags.site = 'b1'", []string{"d2"}}, // r1 has no site: undefined stays undefined
		{"tags.floor >= 2", []string{"d1", "d2"}},
		{"tags.floor > 2", []string{"d2"}},
		{"tags.floor <= 2.0", []string{"d1"}},
		{"tags.floor != 2", []string{"d2"}},
		{"tags.floor <> 2", []string{"d2"}},
		{"tags.floor = '2'", nil}, // a number is not a string
		{"properties.reported.temp > 25", []string{"d2"}},
		{"properties.reported.temp > -1e3", []string{"d1", "d2"}},
		{"properties.reported.ok = true", []string{"d1"}},
		{"properties.reported.note = null", []string{"d1"}},
		{"IS_NULL(properties.reported.note)", []string{"d1"}},
		{"properties.reported.fw != null", []string{"d1", "d2"}},
		{"tags.owner.team = 'ops'", []string{"d1"}},
		{"tags.owner = 'ops'", nil},
		{"tags.site IN ['b2', 'b9']", []string{"d2"}},
		{"tags.site in ('b1')", []string{"d1", "sensor-3"}},
		{"tags.site NIN ['b1']", []string{"d2"}},
		{"tags.site NOT IN ['b1']", []string{"d2"}},
		{"IS_DEFINED(properties.reported.fw)", []string{"d1", "d2"}},
		{"NOT IS_DEFINED(tags.site)", []string{"r1"}},
		{"STARTS_WITH(deviceId, 'sen')", []string{"sensor-3"}},
		{"ENDS_WITH(deviceId, '2')", []string{"d2"}},
		{"starts_with(tags.floor, '2')", nil},
		{"status = 'enabled' AND connectionState = 'Connected'", []string{"d1"}},
		{"kind = 'room' OR version > 5", []string{"sensor-3", "r1"}},
		{"(tags.site = 'b1' OR tags.site = 'b2') AND NOT (status = 'disabled')", []string{"d1", "sensor-3"}},
		{"tags.site = 'b1' AND NOT properties.reported.fw >= '2.0'", []string{"d1"}},
		{"deviceId = 'd2'", []string{"d2"}},
		{"'d2' = deviceId", []string{"d2"}},
		{"tags['site'] = 'b2'", []string{"d2"}},
		{"properties.desired.fw = properties.reported.fw", nil},
		{"properties.desired.fw > properties.reported.fw", []string{"d1"}},
		{"tags.site = 'it''s'", nil},
	} {
		t.Run(tc.where, func(t *testing.T) {
			q, err := Parse("SELECT * FROM devices WHERE " + tc.where)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range docs {
				if q.Match(d) {
					got = append(got, d["deviceId"].(string))
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("matched %v, want %v", got, tc.want)
			}
		})
	}
}

// TestParseErrors: a malformed query is a SyntaxError at the right place.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		query string
		pos   int
		say   string
	}{
		{"", 1, "expected SELECT"},
		{"SELECT FROM devices", 8, "expected a property path"},
		{"SELECT * FROM modules", 15, "expected devices"},
		{"SELECT * FROM devices WHERE", 28, "expected a property path, found the end"},
		{"SELECT * FROM devices WHERE tags.a = ", 38, "expected a property path"},
		{"SELECT * FROM devices WHERE tags.a == 1", 37, "expected a property path"},
		{"SELECT * FROM devices WHERE tags.a = 'x", 38, "unterminated string"},
		{"SELECT * FROM devices WHERE foo = 1", 29, `unknown property "foo"`},
		{"SELECT * FROM devices WHERE properties.x = 1", 29, "properties must be followed by .desired or .reported"},
		{"SELECT * FROM devices WHERE tags.a = 1 tags.b = 2", 40, `unexpected "tags"`},
		{"SELECT * FROM devices WHERE tags.a IN 'x'", 39, "expected a list"},
		{"SELECT * FROM devices WHERE tags.a IN [tags.b]", 40, "literals, not paths"},
		{"SELECT * FROM devices WHERE (tags.a = 1", 40, `expected ")"`},
		{"SELECT * FROM devices WHERE tags.a = 1 #", 40, "unexpected character"},
		{"SELECT * FROM devices WHERE STARTS_WITH(deviceId, 3)", 51, "takes a string"},
		{"SELECT TOP 0 * FROM devices", 12, "TOP takes a positive"},
		{"SELECT tags.site FROM devices GROUP BY tags.site", 49, "GROUP BY needs COUNT()"},
		{"SELECT COUNT() AS n, tags.floor FROM devices GROUP BY tags.site", 64, "not in GROUP BY"},
		{"SELECT tags.a, properties.desired.a FROM devices", 49, `two columns are named "a"`},
		{"SELECT * FROM devices WHERE tags.a = 1 OR UNDER('b1')", 54, "UNDER"},
		{"SELECT * FROM devices WHERE UNDER('b1') AND UNDER('b2')", 56, "once"},
		{"SELECT * FROM devices WHERE " + strings.Repeat("(", 100) + "tags.a = 1" + strings.Repeat(")", 100), 0, "nested more than"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			_, err := Parse(tc.query)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %v, want a SyntaxError", err)
			}
			if (tc.pos != 0 && se.Pos != tc.pos) || !strings.Contains(se.Msg, tc.say) {
				t.Fatalf("%v, want position %d saying %q", err, tc.pos, tc.say)
			}
		})
	}
}

// TestProjectAndGroup: projections, COUNT() and GROUP BY.
func TestProjectAndGroup(t *testing.T) {
	docs := make([]map[string]any, len(twins))
	for i, s := range twins {
		docs[i] = doc(t, s)
	}
	run := func(t *testing.T, src string) []map[string]any {
		t.Helper()
		q, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		if q.Aggregate {
			g := q.NewGrouper()
			for _, d := range docs {
				if q.Match(d) {
					if err := g.Add(d); err != nil {
						t.Fatal(err)
					}
				}
			}
			return g.Rows()
		}
		var out []map[string]any
		for _, d := range docs {
			if q.Match(d) {
				out = append(out, q.Project(d))
			}
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  string
	}{
		{"SELECT deviceId, properties.reported.fw, tags.site AS where FROM devices WHERE kind = 'device'",
			`[{"deviceId":"d1","fw":"1.9","where":"b1"},{"deviceId":"d2","fw":"2.0","where":"b2"}]`},
		{"SELECT deviceId, properties.reported.fw FROM devices WHERE kind = 'room'", `[{"deviceId":"r1"}]`},
		{"SELECT COUNT() AS n FROM devices", `[{"n":4}]`},
		{"SELECT COUNT() FROM devices WHERE tags.site = 'none'", `[{"$1":0}]`},
		{"SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site",
			`[{"n":1},{"n":2,"site":"b1"},{"n":1,"site":"b2"}]`},
		{"select status, connectionState, count() as n from devices where kind != 'room' group by status, connectionState",
			`[{"connectionState":"Disconnected","n":1,"status":"disabled"},{"connectionState":"Connected","n":1,"status":"enabled"},{"connectionState":"Disconnected","n":1,"status":"enabled"}]`},
	} {
		t.Run(tc.query, func(t *testing.T) {
			got, _ := json.Marshal(run(t, tc.query))
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestHints: what the store may check before reading twins.
func TestHints(t *testing.T) {
	for _, tc := range []struct {
		where string
		want  Hints
	}{
		{"tags.site = 'b1' AND kind = 'device' AND UNDER('b1')", Hints{Kind: "device", Tags: map[string]string{"site": "b1"}, Under: "b1"}},
		{"'device' = kind", Hints{Kind: "device"}},
		{"tags.site = 'b1' OR kind = 'device'", Hints{}},
		{"NOT kind = 'device'", Hints{}},
		{"tags.floor = 2 AND tags.a.b = 'x' AND kind != 'room'", Hints{}},
		{"(tags.site = 'b1' AND status = 'enabled') AND properties.reported.x > 1", Hints{Tags: map[string]string{"site": "b1"}}},
	} {
		t.Run(tc.where, func(t *testing.T) {
			q, err := Parse("SELECT * FROM devices WHERE " + tc.where)
			if err != nil {
				t.Fatal(err)
			}
			if got := q.Hints(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("hints %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParse: no input panics the parser or the evaluator, an error is
// always a SyntaxError with a position inside the query (or just past it),
// and a query that parses evaluates against every sample twin.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"SELECT * FROM devices",
		"SELECT TOP 5 deviceId, tags.site AS s FROM devices WHERE tags.site = 'b1' AND properties.reported.fw < '2.0'",
		"SELECT COUNT() AS n, status FROM devices WHERE NOT (IS_DEFINED(tags.x) OR STARTS_WITH(deviceId, 'a')) GROUP BY status",
		"select * from devices where tags.a in [1, 'x', true, null] and UNDER('b')",
		"SELECT * FROM devices WHERE tags['a b'].c >= -1.5e3",
		"SELECT * FROM devices WHERE properties.desired.x = properties.reported.x",
	} {
		f.Add(s)
	}
	docs := make([]map[string]any, len(twins))
	for i, s := range twins {
		docs[i] = doc(f, s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		q, err := Parse(src)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Pos < 1 || se.Pos > len(src)+1 {
				t.Fatalf("Parse(%q): %v", src, err)
			}
			return
		}
		g := q.NewGrouper()
		for _, d := range docs {
			if q.Match(d) {
				if q.Aggregate {
					_ = g.Add(d)
				} else {
					q.Project(d)
				}
			}
		}
		g.Rows()
		q.Hints()
	})
}
