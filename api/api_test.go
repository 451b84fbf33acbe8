package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors"
	_ "github.com/twinmesh/twinmesh/actors/kinds"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/api"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/persistence"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

const token = "test-admin-token"

func newServer(t *testing.T) *testutil.Client {
	t.Helper()
	db, err := persistence.Open(filepath.Join(t.TempDir(), "twinmesh.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := tmcluster.NewProvider(tmcluster.Config{NodeName: "api-test", GossipAddr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sys, err := actors.New(actors.Config{NodeName: "api-test", Provider: prov, Store: db, Registerer: reg,
		Limits: twin.Limits{MaxSectionBytes: 1024, MaxDepth: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Token: token, System: sys, Registerer: reg, Gatherer: reg, MaxBody: 64 << 10,
		SignToken: func(id, key string, ttl time.Duration) (string, time.Time, error) {
			exp := time.Now().Add(ttl)
			tok, err := sas.Sign("test.local/devices/"+id, key, exp)
			return tok, exp, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		sys.Stop(false)
		_ = db.Close()
	})
	return &testutil.Client{Base: hs.URL, Token: token, HTTP: hs.Client()}
}

type apiErr struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func TestRESTContract(t *testing.T) {
	c := newServer(t)
	ctx := context.Background()

	// Issue 12, item 12: documents that encoding/json would read one way
	// among several are refused, not silently changed.
	t.Run("ambiguous JSON", func(t *testing.T) {
		c.MustDo(t, "PUT", "/api/v1/devices/strict-1", nil, 201)
		for _, body := range []string{
			`{"desired":{"a":1,"a":2}}`,
			`{"desired":{"":1}}`,
			`{"desired":{"n":9007199254740993}}`,
			"{\"desired\":{\"s\":\"\xff\"}}",
		} {
			st, _, out, err := c.Do(ctx, "PATCH", "/api/v1/twins/strict-1", []byte(body))
			if err != nil || st != 400 {
				t.Errorf("PATCH %q: %d %s %v, want 400", body, st, out, err)
			}
		}
		c.MustDo(t, "PATCH", "/api/v1/twins/strict-1", `{"desired":{"n":9007199254740992}}`, 200)
		st, _, _, _ := c.Do(ctx, "PUT", "/api/v1/entities/strict-2", []byte(`{"kind":"room","kind":"device"}`))
		if st != 400 {
			t.Errorf("PUT entity with a duplicate member: %d, want 400", st)
		}
	})

	t.Run("auth", func(t *testing.T) {
		for _, tok := range []string{"", "wrong"} {
			anon := *c
			anon.Token = tok
			st, _, body, err := anon.Do(ctx, "GET", "/api/v1/twins", nil)
			if err != nil || st != 401 {
				t.Fatalf("token %q: %d %v", tok, st, err)
			}
			var e apiErr
			if json.Unmarshal(body, &e) != nil || e.Error.Code != "unauthorized" {
				t.Fatalf("error body %s", body)
			}
		}
		// The scheme is case-insensitive (RFC 7235); the token is not.
		for _, h := range []struct {
			header string
			want   int
		}{{"bearer " + c.Token, 200}, {"BEARER " + c.Token, 200}, {"Bearer " + strings.ToUpper(c.Token), 401}, {"Basic " + c.Token, 401}} {
			anon := *c
			anon.Token = ""
			st, _, _, err := anon.Do(ctx, "GET", "/api/v1/twins", nil, "Authorization", h.header)
			if err != nil || st != h.want {
				t.Fatalf("Authorization %.12q…: %d %v, want %d", h.header, st, err, h.want)
			}
		}
		st, _, _, _ := c.Do(ctx, "GET", "/healthz", nil)
		if st != 200 {
			t.Fatalf("healthz %d", st)
		}
		st, _, _, _ = c.Do(ctx, "GET", "/readyz", nil)
		if st != 200 {
			t.Fatalf("readyz %d", st)
		}
	})

	t.Run("topology", func(t *testing.T) {
		c.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building","tags":{"city":"Oslo"}}`, 201)
		c.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building","tags":{"city":"Bergen"}}`, 200)
		c.MustDo(t, "PUT", "/api/v1/entities/f1", `{"kind":"floor","parent":"b1"}`, 201)
		c.MustDo(t, "PUT", "/api/v1/entities/r1", `{"kind":"room","parent":"f1"}`, 201)
		c.MustDo(t, "PUT", "/api/v1/entities/gw1", `{"kind":"gateway","parent":"r1"}`, 201)
		var ent api.Entity
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/entities/b1", nil, 200), &ent)
		if ent.Tags["city"] != "Bergen" {
			t.Fatalf("entity %+v", ent)
		}
		var list struct{ Items []api.Entity }
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/entities/b1/children", nil, 200), &list)
		if len(list.Items) != 1 || list.Items[0].ID != "f1" {
			t.Fatalf("children %+v", list)
		}
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/entities/b1/tree", nil, 200), &list)
		if len(list.Items) != 4 || list.Items[0].ID != "b1" {
			t.Fatalf("tree %+v", list)
		}
		c.MustDo(t, "GET", "/api/v1/entities/nope", nil, 404)
		c.MustDo(t, "PUT", "/api/v1/entities/x1", `{"kind":"spaceship"}`, 400)
		c.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building","parent":"r1"}`, 409)
		c.MustDo(t, "DELETE", "/api/v1/entities/f1", nil, 409)
	})

	t.Run("devices", func(t *testing.T) {
		var d struct{ ID, PrimaryKey, SecondaryKey, Status string }
		_ = json.Unmarshal(c.MustDo(t, "PUT", "/api/v1/devices/d1", `{"parent":"r1","connectedVia":"gw1"}`, 201), &d)
		if d.PrimaryKey == "" || d.SecondaryKey == "" || d.PrimaryKey == d.SecondaryKey || d.Status != "enabled" {
			t.Fatalf("identity %+v", d)
		}
		c.MustDo(t, "PUT", "/api/v1/devices/d1", nil, 200) // idempotent: keys kept
		c.MustDo(t, "PUT", "/api/v1/devices/d2", nil, 201)
		c.MustDo(t, "PATCH", "/api/v1/devices/d2", `{"status":"disabled"}`, 200)
		c.MustDo(t, "PATCH", "/api/v1/devices/d2", `{"status":"sleepy"}`, 400)
		c.MustDo(t, "PUT", "/api/v1/devices/b1", nil, 409) // a building cannot hold an identity
		var tok struct{ Token string }
		_ = json.Unmarshal(c.MustDo(t, "POST", "/api/v1/devices/d1/token?ttl=60", nil, 200), &tok)
		if err := sas.Verify(tok.Token, "d1", []string{d.PrimaryKey}, time.Now()); err != nil {
			t.Fatalf("minted token does not verify: %v", err)
		}
		c.MustDo(t, "POST", "/api/v1/devices/nobody/token", nil, 404)
		c.MustDo(t, "POST", "/api/v1/devices/d1/token?ttl=abc", nil, 400)
	})

	t.Run("twins", func(t *testing.T) {
		st, hdr, body, err := c.Do(ctx, "GET", "/api/v1/twins/d1", nil)
		if err != nil || st != 200 {
			t.Fatalf("get %d %v", st, err)
		}
		var tw struct {
			Version int64
			Desired map[string]any
		}
		_ = json.Unmarshal(body, &tw)
		if hdr.Get("ETag") != fmt.Sprintf(`"%d"`, tw.Version) {
			t.Fatalf("ETag %q for version %d", hdr.Get("ETag"), tw.Version)
		}
		c.MustDo(t, "PATCH", "/api/v1/twins/d1", `{"desired":{"fan":"on"}}`, 412, "If-Match", `"999"`)
		out := c.MustDo(t, "PATCH", "/api/v1/twins/d1", `{"desired":{"fan":"on"}}`, 200, "If-Match", hdr.Get("ETag"))
		_ = json.Unmarshal(out, &tw)
		if tw.Desired["fan"] != "on" {
			t.Fatalf("patched %s", out)
		}
		before := c.MustDo(t, "GET", "/api/v1/twins/d1", nil, 200)
		for name, tc := range map[string]struct {
			body string
			code int
		}{
			"malformed":      {`{"desired":`, 400},
			"not an object":  {`[1,2]`, 400},
			"reported":       {`{"reported":{"x":1}}`, 400},
			"reserved key":   {`{"desired":{"$version":9}}`, 400},
			"section limit":  {fmt.Sprintf(`{"desired":{"blob":%q}}`, strings.Repeat("x", 2000)), 413},
			"depth limit":    {`{"desired":{"a":{"b":{"c":{"d":{"e":1}}}}}}`, 413},
			"body limit":     {fmt.Sprintf(`{"desired":{"blob":%q}}`, strings.Repeat("x", 70<<10)), 413},
			"empty":          {``, 400},
			"unknown device": {`{"desired":{"x":1}}`, 404},
		} {
			t.Run(name, func(t *testing.T) {
				path := "/api/v1/twins/d1"
				if name == "unknown device" {
					path = "/api/v1/twins/ghost"
				}
				st, _, body, err := c.Do(ctx, "PATCH", path, tc.body)
				if err != nil || st != tc.code {
					t.Fatalf("status %d want %d: %s %v", st, tc.code, body, err)
				}
				var e apiErr
				if json.Unmarshal(body, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
					t.Fatalf("error body %s", body)
				}
			})
		}
		after := c.MustDo(t, "GET", "/api/v1/twins/d1", nil, 200)
		if string(before) != string(after) {
			t.Fatalf("refused patches changed the twin:\n%s\n%s", before, after)
		}
	})

	t.Run("query paging", func(t *testing.T) {
		for i := 0; i < 7; i++ {
			c.MustDo(t, "PUT", fmt.Sprintf("/api/v1/entities/q%d", i), fmt.Sprintf(`{"kind":"device","parent":"r1","tags":{"batch":"q","n":%d}}`, i), 201)
		}
		seen := map[string]bool{}
		cursor := ""
		pages := 0
		for {
			var page struct {
				Items []struct{ ID string }
				Next  string
			}
			_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins?tag.batch=q&limit=3&cursor="+cursor, nil, 200), &page)
			pages++
			for _, it := range page.Items {
				if seen[it.ID] {
					t.Fatalf("%s twice", it.ID)
				}
				seen[it.ID] = true
			}
			if page.Next == "" {
				break
			}
			cursor = page.Next
		}
		if len(seen) != 7 || pages != 3 {
			t.Fatalf("paging saw %d twins in %d pages", len(seen), pages)
		}
		var under struct{ Items []struct{ ID string } }
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins?under=b1&kind=gateway", nil, 200), &under)
		if len(under.Items) != 1 || under.Items[0].ID != "gw1" {
			t.Fatalf("under/kind query %+v", under)
		}
		c.MustDo(t, "GET", "/api/v1/twins?limit=-1", nil, 400)
	})

	t.Run("rollup and delete", func(t *testing.T) {
		testutil.Eventually(t, 10*time.Second, "building rollup", func() bool {
			var tw struct{ Rollup map[string]any }
			_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins/b1", nil, 200), &tw)
			return tw.Rollup["devices"] == float64(9) // gw1, d1, q0..q6
		})
		c.MustDo(t, "DELETE", "/api/v1/entities/d1", nil, 200)
		c.MustDo(t, "GET", "/api/v1/twins/d1", nil, 404)
		c.MustDo(t, "GET", "/api/v1/devices/d1", nil, 404)
		c.MustDo(t, "DELETE", "/api/v1/entities/f1?recursive=true", nil, 200)
		c.MustDo(t, "GET", "/api/v1/twins/q3", nil, 404)
	})

	t.Run("metrics and cluster", func(t *testing.T) {
		m := string(c.MustDo(t, "GET", "/metrics", nil, 200))
		for _, want := range []string{"twinmesh_http_requests_total", "twinmesh_grain_activations_total", "twinmesh_grain_request_seconds"} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		c.MustDo(t, "GET", "/api/v1/cluster", nil, 200)
		c.MustDo(t, "GET", "/api/v1/nothing-here", nil, 404)
	})
}
