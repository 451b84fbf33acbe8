package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/api"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/persistence"
)

// calc is a kind with operations, to test the ops route.
type calc struct{}

func (calc) Info() plugin.Info { return plugin.Info{Name: "calc"} }

func (calc) Operation(ctx *plugin.Ctx, name string, args json.RawMessage) (any, error) {
	switch name {
	case "add":
		var in struct{ A, B float64 }
		if err := json.Unmarshal(args, &in); err != nil {
			return nil, err
		}
		return in.A + in.B, nil
	case "echo":
		return args, nil
	case "nothing":
		return nil, nil
	case "busy":
		return nil, errcode.New(errcode.Conflict, "calculator %s is busy", ctx.ID())
	case "broken":
		return nil, errors.New("cannot compute")
	}
	return nil, plugin.UnknownOp(ctx.Kind(), name)
}

var _ plugin.Operator = calc{}

// newOpsServer is newServer with the calc kind added to the built-in ones.
func newOpsServer(t *testing.T) *testutil.Client {
	t.Helper()
	db, err := persistence.Open(filepath.Join(t.TempDir(), "twinmesh.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := tmcluster.NewProvider(tmcluster.Config{NodeName: "ops-test", GossipAddr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := plugin.Default().Clone()
	kinds.Register(calc{})
	reg := prometheus.NewRegistry()
	sys, err := actors.New(actors.Config{NodeName: "ops-test", Provider: prov, Store: db, Registerer: reg, Registry: kinds})
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Token: token, System: sys, Registerer: reg, Gatherer: reg, MaxBody: 1 << 10})
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

func TestOperations(t *testing.T) {
	c := newOpsServer(t)
	c.MustDo(t, "PUT", "/api/v1/entities/r1", `{"kind":"room"}`, 201)
	c.MustDo(t, "PUT", "/api/v1/entities/c1", `{"kind":"calc","parent":"r1"}`, 201)
	cases := []struct {
		name, path, body string
		status           int
		result, code     string // the result's JSON, or the error code
	}{
		{"a result", "c1/ops/add", `{"a":2,"b":3}`, 200, `5`, ""},
		{"arguments reach the operation as sent", "c1/ops/echo", ` {"x":[1,"two"]} `, 200, `{"x":[1,"two"]}`, ""},
		{"an empty body means no arguments", "c1/ops/echo", ``, 200, `null`, ""},
		{"no result is null", "c1/ops/nothing", `{}`, 200, `null`, ""},
		{"an operation's own code", "c1/ops/busy", `{}`, 409, "", "conflict"},
		{"an operation's plain error is a bad request", "c1/ops/broken", `{}`, 400, "", "bad_request"},
		{"an operation's argument error is a bad request", "c1/ops/add", `[1,2]`, 400, "", "bad_request"},
		{"unknown operation", "c1/ops/divide", `{}`, 404, "", "unknown_op"},
		{"a kind without operations", "r1/ops/add", `{}`, 404, "", "unknown_op"},
		{"unknown entity", "ghost/ops/add", `{}`, 404, "", "not_found"},
		{"malformed arguments", "c1/ops/add", `{"a":`, 400, "", "bad_request"},
		{"arguments over the body limit", "c1/ops/echo", `"` + strings.Repeat("x", 2<<10) + `"`, 413, "", "too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := c.MustDo(t, "POST", "/api/v1/entities/"+tc.path, tc.body, tc.status)
			if tc.code != "" {
				var e apiErr
				if err := json.Unmarshal(out, &e); err != nil || e.Error.Code != tc.code || e.Error.Message == "" {
					t.Fatalf("error %s, want code %s", out, tc.code)
				}
				return
			}
			var res map[string]json.RawMessage
			if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 || string(res["result"]) != tc.result {
				t.Fatalf("answer %s, want {\"result\":%s}", out, tc.result)
			}
		})
	}
	t.Run("only POST", func(t *testing.T) {
		// A wrong method gets 405 with Allow (CONTRACT section 9).
		st, h, _, err := c.Do(context.Background(), "GET", "/api/v1/entities/c1/ops/add", nil)
		if err != nil || st != 405 || h.Get("Allow") != "POST" {
			t.Fatalf("GET of an operation: %d, Allow %q, %v; want 405, Allow POST", st, h.Get("Allow"), err)
		}
	})
	t.Run("auth", func(t *testing.T) {
		anon := *c
		anon.Token = ""
		anon.MustDo(t, "POST", "/api/v1/entities/c1/ops/add", `{}`, 401)
	})
}
