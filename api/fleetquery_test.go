package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

type queryPage struct {
	Items        []map[string]any `json:"items"`
	Continuation string           `json:"continuation"`
}

// TestQueryEndpoint: POST /api/v1/query over a real store: filters,
// projections, paging with continuation tokens in the body and in the
// x-ms-continuation header, TOP, GROUP BY, and 400 with the position.
func TestQueryEndpoint(t *testing.T) {
	c := newServer(t)
	ctx := context.Background()
	c.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building","tags":{"site":"b1"}}`, 201)
	c.MustDo(t, "PUT", "/api/v1/entities/b2", `{"kind":"building","tags":{"site":"b2"}}`, 201)
	c.MustDo(t, "PUT", "/api/v1/entities/r1", `{"kind":"room","parent":"b1"}`, 201)
	for i := range 12 {
		parent := "r1"
		if i%3 == 0 {
			parent = "b2"
		}
		id := fmt.Sprintf("d%02d", i)
		c.MustDo(t, "PUT", "/api/v1/devices/"+id, `{"parent":"`+parent+`"}`, 201)
		site := map[bool]string{true: "b2", false: "b1"}[i%3 == 0]
		c.MustDo(t, "PATCH", "/api/v1/twins/"+id, fmt.Sprintf(`{"tags":{"site":%q,"n":%d},"desired":{"fw":"2.%d"}}`, site, i, i%4), 200)
	}
	c.MustDo(t, "PATCH", "/api/v1/devices/d05", `{"status":"disabled"}`, 200)

	ask := func(body any, headers ...string) (queryPage, string) {
		t.Helper()
		st, h, out, err := c.Do(ctx, "POST", "/api/v1/query", body, headers...)
		if err != nil || st != 200 {
			t.Fatalf("query %v: %d %s %v", body, st, out, err)
		}
		var p queryPage
		if err := json.Unmarshal(out, &p); err != nil {
			t.Fatal(err)
		}
		if h.Get("x-ms-continuation") != p.Continuation {
			t.Fatalf("header continuation %q, body %q", h.Get("x-ms-continuation"), p.Continuation)
		}
		return p, p.Continuation
	}
	// all runs a query to its end, pageSize at a time, and returns the
	// deviceId (or the whole item) of every result and the page count.
	all := func(q string, pageSize int, viaHeader bool) ([]any, int) {
		t.Helper()
		var out []any
		pages, tok := 0, ""
		for {
			body := map[string]any{"query": q, "pageSize": pageSize}
			var headers []string
			if tok != "" && viaHeader {
				headers = []string{"x-ms-continuation", tok}
			} else if tok != "" {
				body["continuation"] = tok
			}
			p, next := ask(body, headers...)
			pages++
			for _, it := range p.Items {
				if id, ok := it["deviceId"]; ok && len(it) == 1 {
					out = append(out, id)
				} else {
					out = append(out, it)
				}
			}
			if next == "" {
				return out, pages
			}
			tok = next
		}
	}
	ids := func(s ...string) []any {
		out := make([]any, len(s))
		for i, v := range s {
			out[i] = v
		}
		return out
	}
	for _, tc := range []struct {
		query    string
		pageSize int
		header   bool
		want     []any
		pages    int
	}{
		{"SELECT deviceId FROM devices WHERE tags.site = 'b2' AND kind = 'device'", 2, false, ids("d00", "d03", "d06", "d09"), 2},
		{"SELECT deviceId FROM devices WHERE tags.site = 'b2' AND kind = 'device'", 3, true, ids("d00", "d03", "d06", "d09"), 2},
		{"SELECT deviceId FROM devices WHERE UNDER('r1') AND properties.desired.fw >= '2.2'", 100, false, ids("d02", "d07", "d10", "d11"), 1},
		{"SELECT deviceId FROM devices WHERE status = 'disabled'", 1, false, ids("d05"), 1},
		{"SELECT deviceId FROM devices WHERE kind = 'building' OR kind = 'room'", 1, false, ids("b1", "b2", "r1"), 3},
		{"SELECT TOP 5 deviceId FROM devices WHERE kind = 'device'", 2, false, ids("d00", "d01", "d02", "d03", "d04"), 3},
		{"SELECT deviceId FROM devices WHERE tags.n IN [1, 4] AND connectionState = 'Disconnected'", 100, false, ids("d01", "d04"), 1},
		{"SELECT deviceId, tags.n AS n FROM devices WHERE STARTS_WITH(deviceId, 'd1')", 100, false,
			[]any{map[string]any{"deviceId": "d10", "n": 10.0}, map[string]any{"deviceId": "d11", "n": 11.0}}, 1},
		{"SELECT tags.site AS site, COUNT() AS n FROM devices WHERE kind = 'device' GROUP BY tags.site", 1, false,
			[]any{map[string]any{"site": "b1", "n": 8.0}, map[string]any{"site": "b2", "n": 4.0}}, 1},
		{"SELECT COUNT() AS n FROM devices WHERE UNDER('b1')", 1, false, []any{map[string]any{"n": 9.0}}, 1},
	} {
		t.Run(tc.query, func(t *testing.T) {
			got, pages := all(tc.query, tc.pageSize, tc.header)
			if !reflect.DeepEqual(got, tc.want) || pages != tc.pages {
				t.Fatalf("got %v in %d pages, want %v in %d", got, pages, tc.want, tc.pages)
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		out := c.MustDo(t, "POST", "/api/v1/query", `{"query":"SELECT * FROM devices WHERE tags.site = "}`, 400)
		var e struct {
			Error struct {
				Code     string `json:"code"`
				Message  string `json:"message"`
				Position int    `json:"position"`
			} `json:"error"`
		}
		if err := json.Unmarshal(out, &e); err != nil || e.Error.Code != "bad_request" || e.Error.Position != 41 {
			t.Fatalf("answer %s", out)
		}
		_, tok := ask(map[string]any{"query": "SELECT deviceId FROM devices", "pageSize": 1})
		c.MustDo(t, "POST", "/api/v1/query", map[string]any{"query": "SELECT * FROM devices", "continuation": tok}, 400)
		c.MustDo(t, "POST", "/api/v1/query", map[string]any{"query": "SELECT * FROM devices", "continuation": "garbage"}, 400)
		c.MustDo(t, "POST", "/api/v1/query", map[string]any{"query": "SELECT * FROM devices", "pageSize": 5000}, 400)
		c.MustDo(t, "POST", "/api/v1/query", map[string]any{"query": "SELECT * FROM devices WHERE UNDER('nowhere')"}, 200)
	})

	t.Run("SELECT * is the IoT Hub twin shape", func(t *testing.T) {
		p, _ := ask(map[string]any{"query": "SELECT * FROM devices WHERE deviceId = 'd05'"})
		if len(p.Items) != 1 {
			t.Fatalf("items %v", p.Items)
		}
		it := p.Items[0]
		props, _ := it["properties"].(map[string]any)
		desired, _ := props["desired"].(map[string]any)
		if it["deviceId"] != "d05" || it["status"] != "disabled" || it["connectionState"] != "Disconnected" ||
			it["parent"] != "r1" || desired["fw"] != "2.1" || it["etag"] == nil {
			t.Fatalf("item %v", it)
		}
	})
}
