package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestFleetBasics: GET /devices (paged, filtered), DELETE /devices/{id},
// PUT /twins/{id} with If-Match, and 405 with Allow (CONTRACT section 9).
func TestFleetBasics(t *testing.T) {
	c := newServer(t)
	ctx := context.Background()
	c.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201)
	c.MustDo(t, "PUT", "/api/v1/entities/b2", `{"kind":"building"}`, 201)
	for i := range 5 {
		parent := "b1"
		if i >= 3 {
			parent = "b2"
		}
		c.MustDo(t, "PUT", fmt.Sprintf("/api/v1/devices/d%d", i), `{"parent":"`+parent+`"}`, 201)
	}
	c.MustDo(t, "PATCH", "/api/v1/devices/d1", `{"status":"disabled"}`, 200)

	type page struct {
		Items []struct {
			ID         string `json:"id"`
			Status     string `json:"status"`
			PrimaryKey string `json:"primaryKey"`
		} `json:"items"`
		Next string `json:"next"`
	}
	list := func(query string) (ids []string) {
		cursor := ""
		for {
			q := query
			if cursor != "" {
				q += "&cursor=" + cursor
			}
			var p page
			if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/devices?"+q, nil, 200), &p); err != nil {
				t.Fatal(err)
			}
			for _, it := range p.Items {
				if it.PrimaryKey == "" {
					t.Fatalf("device %s listed without its keys", it.ID)
				}
				ids = append(ids, it.ID)
			}
			if p.Next == "" {
				return ids
			}
			cursor = p.Next
		}
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"limit=2", []string{"d0", "d1", "d2", "d3", "d4"}},
		{"limit=1&status=disabled", []string{"d1"}},
		{"limit=2&status=enabled", []string{"d0", "d2", "d3", "d4"}},
		{"limit=2&under=b2", []string{"d3", "d4"}},
		{"under=b1&status=enabled", []string{"d0", "d2"}},
	} {
		if got := list(tc.query); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("GET /devices?%s = %v, want %v", tc.query, got, tc.want)
		}
	}
	c.MustDo(t, "GET", "/api/v1/devices?status=broken", nil, 400)

	t.Run("delete", func(t *testing.T) {
		c.MustDo(t, "DELETE", "/api/v1/devices/d4", nil, 204)
		c.MustDo(t, "GET", "/api/v1/devices/d4", nil, 404)
		c.MustDo(t, "GET", "/api/v1/twins/d4", nil, 404)
		c.MustDo(t, "DELETE", "/api/v1/devices/d4", nil, 404)
		c.MustDo(t, "DELETE", "/api/v1/devices/b1", nil, 404) // a building has no identity
		c.MustDo(t, "GET", "/api/v1/entities/b1", nil, 200)
	})

	t.Run("replace twin", func(t *testing.T) {
		c.MustDo(t, "PATCH", "/api/v1/twins/d0", `{"desired":{"a":1,"obj":{"x":1,"y":2}},"tags":{"site":"s1","old":true}}`, 200)
		st, h, _, err := c.Do(ctx, "GET", "/api/v1/twins/d0", nil)
		if err != nil || st != 200 {
			t.Fatal(st, err)
		}
		etag := h.Get("ETag")
		// A stale version is refused and changes nothing.
		c.MustDo(t, "PUT", "/api/v1/twins/d0", `{"desired":{"b":2}}`, 412, "If-Match", `"1"`)
		out := c.MustDo(t, "PUT", "/api/v1/twins/d0", `{"desired":{"b":2,"obj":{"y":3},"$version":99},"tags":{"site":"s2"}}`, 200, "If-Match", etag)
		var tw struct {
			Desired map[string]any `json:"desired"`
			Tags    map[string]any `json:"tags"`
		}
		if err := json.Unmarshal(out, &tw); err != nil {
			t.Fatal(err)
		}
		delete(tw.Desired, "$version")
		if want := map[string]any{"b": 2.0, "obj": map[string]any{"y": 3.0}}; !reflect.DeepEqual(tw.Desired, want) {
			t.Errorf("desired after PUT = %v, want %v", tw.Desired, want)
		}
		if want := map[string]any{"site": "s2"}; !reflect.DeepEqual(tw.Tags, want) {
			t.Errorf("tags after PUT = %v, want %v", tw.Tags, want)
		}
		// The same ETag is now stale.
		c.MustDo(t, "PUT", "/api/v1/twins/d0", `{"desired":{}}`, 412, "If-Match", etag)
		// Without If-Match the replacement is unconditional; a section left
		// out stays.
		out = c.MustDo(t, "PUT", "/api/v1/twins/d0", `{"desired":{}}`, 200)
		if !strings.Contains(string(out), `"tags":{"site":"s2"}`) || strings.Contains(string(out), `"b":2`) {
			t.Errorf("PUT {desired:{}}: %s", out)
		}
		for _, bad := range []string{`{}`, `{"reported":{}}`, `{"desired":[1]}`, `{"desired":null}`} {
			c.MustDo(t, "PUT", "/api/v1/twins/d0", bad, 400)
		}
		c.MustDo(t, "PUT", "/api/v1/twins/nope", `{"desired":{}}`, 404)
	})

	t.Run("405 with Allow", func(t *testing.T) {
		for _, tc := range []struct{ method, path, allow string }{
			{"POST", "/api/v1/twins/d0", "GET, HEAD, PATCH, PUT"},
			{"PATCH", "/api/v1/devices", "GET, HEAD"},
			{"GET", "/api/v1/devices/d0/methods/reboot", "POST"},
			{"PUT", "/api/v1/alerts/r/e", "GET, HEAD"},
		} {
			st, h, body, err := c.Do(ctx, tc.method, tc.path, nil)
			if err != nil || st != 405 || h.Get("Allow") != tc.allow || !strings.Contains(string(body), `"method_not_allowed"`) {
				t.Errorf("%s %s: %d Allow %q %s %v, want 405 Allow %q", tc.method, tc.path, st, h.Get("Allow"), body, err, tc.allow)
			}
		}
		c.MustDo(t, "GET", "/api/v1/nothing/here", nil, 404)
	})
}
