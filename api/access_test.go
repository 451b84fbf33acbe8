package api_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"

	"github.com/twinmesh/twinmesh/api/authz"
)

// restCase is one request of the REST matrix. {w} in path and body is "in"
// or "out" (which building the request touches), {n} a fresh number, and
// {name} any var setup returns.
type restCase struct {
	route  string // the pattern in Server.Routes; "" for the catch-all and Extra
	need   string // "any", "viewer", "operator", "admin" or "whole"
	method string
	path   string
	body   string
	ok     int    // the status when allowed
	only   string // "in" or "out" runs only that side; "" both
	// setup prepares the state the request needs, as the admin token.
	setup func(t *testing.T, e *accessEnv, w, n string) map[string]string
	// after undoes what an allowed request changed, as the admin token.
	after func(t *testing.T, e *accessEnv, w, n string)
}

func putRoom(id string) func(t *testing.T, e *accessEnv, w, n string) map[string]string {
	return func(t *testing.T, e *accessEnv, w, n string) map[string]string {
		e.admin.MustDo(t, "PUT", "/api/v1/entities/"+expand(id, w, n, nil), expand(`{"kind":"room","parent":"{w}-r"}`, w, n, nil), 201)
		return nil
	}
}

func raiseAlert(t *testing.T, e *accessEnv, w, _ string) map[string]string {
	e.raise(t, w+"-d")
	return nil
}

const rule = `{"scope":{"kind":"device"},"when":"telemetry.temperature > 90","then":[{"alert":{"severity":"minor"}}]}`

// model is a DTDL interface whose @id is dtmi:t:m{n};1.
const model = `{"@context":"dtmi:dtdl:context;3","@id":"dtmi:t:m{n};1","@type":"Interface","contents":[{"@type":"Telemetry","name":"t","schema":"double"}]}`

func restCases() []restCase {
	return []restCase{
		{route: "PUT /api/v1/entities/{id}", need: "admin", method: "PUT", path: "/api/v1/entities/{w}-new-{n}", body: `{"kind":"room","parent":"{w}-r"}`, ok: 201},
		// A scoped admin may not create a root, move an entity in from
		// outside, or move one of its own out.
		{route: "PUT /api/v1/entities/{id}", need: "admin", method: "PUT", path: "/api/v1/entities/out-top-{n}", body: `{"kind":"building"}`, ok: 201, only: "out"},
		{route: "PUT /api/v1/entities/{id}", need: "admin", method: "PUT", path: "/api/v1/entities/mvin-{n}", body: `{"kind":"room","parent":"in-r"}`, ok: 200, only: "out",
			setup: func(t *testing.T, e *accessEnv, _, n string) map[string]string {
				return putRoom("mvin-{n}")(t, e, "out", n)
			}},
		{route: "PUT /api/v1/entities/{id}", need: "admin", method: "PUT", path: "/api/v1/entities/mvout-{n}", body: `{"kind":"room","parent":"out-r"}`, ok: 200, only: "out",
			setup: func(t *testing.T, e *accessEnv, _, n string) map[string]string {
				return putRoom("mvout-{n}")(t, e, "in", n)
			},
			after: func(t *testing.T, e *accessEnv, _, n string) {
				_, _, _, _ = e.admin.Do(context.Background(), "DELETE", "/api/v1/entities/mvout-"+n, nil)
			}},
		{route: "GET /api/v1/entities/{id}", need: "viewer", method: "GET", path: "/api/v1/entities/{w}-d", ok: 200},
		{route: "DELETE /api/v1/entities/{id}", need: "admin", method: "DELETE", path: "/api/v1/entities/{w}-del-{n}", ok: 200, setup: putRoom("{w}-del-{n}")},
		{route: "GET /api/v1/entities/{id}/children", need: "viewer", method: "GET", path: "/api/v1/entities/{w}-r/children", ok: 200},
		{route: "GET /api/v1/entities/{id}/tree", need: "viewer", method: "GET", path: "/api/v1/entities/{w}-b/tree", ok: 200},
		{route: "POST /api/v1/entities/{id}/ops/{name}", need: "operator", method: "POST", path: "/api/v1/entities/{w}-calc/ops/nothing", ok: 200},
		{route: "GET /api/v1/entities", need: "viewer", method: "GET", path: "/api/v1/entities?under={w}-b", ok: 200},
		{route: "GET /api/v1/entities", need: "viewer", method: "GET", path: "/api/v1/entities", ok: 200, only: "in"},

		{route: "PUT /api/v1/devices/{id}", need: "admin", method: "PUT", path: "/api/v1/devices/{w}-dev-{n}", body: `{"parent":"{w}-r"}`, ok: 201},
		{route: "PUT /api/v1/devices/{id}", need: "admin", method: "PUT", path: "/api/v1/devices/out-nobody-{n}", ok: 201, only: "out"},
		{route: "GET /api/v1/devices", need: "admin", method: "GET", path: "/api/v1/devices?under={w}-b", ok: 200},
		{route: "GET /api/v1/devices", need: "admin", method: "GET", path: "/api/v1/devices?status=enabled", ok: 200, only: "in"},
		{route: "DELETE /api/v1/devices/{id}", need: "admin", method: "DELETE", path: "/api/v1/devices/{w}-deld-{n}", ok: 204,
			setup: func(t *testing.T, e *accessEnv, w, n string) map[string]string {
				e.admin.MustDo(t, "PUT", "/api/v1/devices/"+w+"-deld-"+n, `{"parent":"`+w+`-r"}`, 201)
				return nil
			}},
		{route: "GET /api/v1/devices/{id}", need: "admin", method: "GET", path: "/api/v1/devices/{w}-d", ok: 200},
		{route: "PATCH /api/v1/devices/{id}", need: "admin", method: "PATCH", path: "/api/v1/devices/{w}-d", body: `{"status":"enabled"}`, ok: 200},
		{route: "POST /api/v1/devices/{id}/token", need: "admin", method: "POST", path: "/api/v1/devices/{w}-d/token", ok: 200},
		{route: "POST /api/v1/devices/{id}/methods/{name}", need: "operator", method: "POST", path: "/api/v1/devices/{w}-d/methods/reboot", body: `{"payload":{}}`, ok: 200},
		// Allowed, a plain GET is refused as not a WebSocket upgrade.
		{route: "GET /api/v1/devices/{id}/streams/{name}", need: "operator", method: "GET", path: "/api/v1/devices/{w}-d/streams/ssh", ok: 400},
		{route: "POST /api/v1/devices/{id}/messages", need: "operator", method: "POST", path: "/api/v1/devices/{w}-d/messages", body: `{"payload":"x"}`, ok: 202},
		{route: "GET /api/v1/devices/{id}/messages", need: "viewer", method: "GET", path: "/api/v1/devices/{w}-d/messages", ok: 200},
		{route: "GET /api/v1/devices/{id}/messages/{mid}", need: "viewer", method: "GET", path: "/api/v1/devices/{w}-d/messages/{mid}", ok: 200},
		{route: "GET /api/v1/devices/{id}/grants", need: "admin", method: "GET", path: "/api/v1/devices/{w}-d/grants", ok: 200},
		{route: "PUT /api/v1/devices/{id}/grants/{grantee}", need: "admin", method: "PUT", path: "/api/v1/devices/{w}-d/grants/{w}-g", ok: 200},
		{route: "PUT /api/v1/devices/{id}/grants/{grantee}", need: "admin", method: "PUT", path: "/api/v1/devices/in-d/grants/out-g", ok: 200, only: "out",
			after: func(t *testing.T, e *accessEnv, _, _ string) {
				_, _, _, _ = e.admin.Do(context.Background(), "DELETE", "/api/v1/devices/in-d/grants/out-g", nil)
			}},
		{route: "DELETE /api/v1/devices/{id}/grants/{grantee}", need: "admin", method: "DELETE", path: "/api/v1/devices/{w}-d/grants/{w}-g", ok: 200,
			setup: func(t *testing.T, e *accessEnv, w, _ string) map[string]string {
				e.admin.MustDo(t, "PUT", "/api/v1/devices/"+w+"-d/grants/"+w+"-g", nil, 200)
				return nil
			}},

		{route: "GET /api/v1/twins/{id}", need: "viewer", method: "GET", path: "/api/v1/twins/{w}-d", ok: 200},
		{route: "PATCH /api/v1/twins/{id}", need: "operator", method: "PATCH", path: "/api/v1/twins/{w}-d", body: `{"desired":{"n":{n}}}`, ok: 200},
		{route: "PATCH /api/v1/twins/{id}", need: "admin", method: "PATCH", path: "/api/v1/twins/{w}-d", body: `{"tags":{"n":{n}}}`, ok: 200},
		{route: "PUT /api/v1/twins/{id}", need: "operator", method: "PUT", path: "/api/v1/twins/{w}-d", body: `{"desired":{"n":{n}}}`, ok: 200},
		{route: "PUT /api/v1/twins/{id}", need: "admin", method: "PUT", path: "/api/v1/twins/{w}-d", body: `{"tags":{"n":{n}}}`, ok: 200},
		{route: "GET /api/v1/twins", need: "viewer", method: "GET", path: "/api/v1/twins?under={w}-b", ok: 200},
		{route: "GET /api/v1/twins", need: "viewer", method: "GET", path: "/api/v1/twins", ok: 200, only: "in"},
		{route: "POST /api/v1/query", need: "viewer", method: "POST", path: "/api/v1/query", body: `{"query":"SELECT * FROM devices WHERE UNDER('{w}-b')"}`, ok: 200},
		{route: "POST /api/v1/query", need: "viewer", method: "POST", path: "/api/v1/query", body: `{"query":"SELECT deviceId, parent FROM devices"}`, ok: 200, only: "in"},
		{route: "GET /api/v1/twins/{id}/telemetry", need: "viewer", method: "GET", path: "/api/v1/twins/{w}-d/telemetry", ok: 200},

		{route: "PUT /api/v1/rules/{id}", need: "whole", method: "PUT", path: "/api/v1/rules/new-{n}", body: rule, ok: 201, only: "in"},
		{route: "GET /api/v1/rules/{id}", need: "whole", method: "GET", path: "/api/v1/rules/hot", ok: 200, only: "in"},
		{route: "GET /api/v1/rules", need: "whole", method: "GET", path: "/api/v1/rules", ok: 200, only: "in"},
		{route: "DELETE /api/v1/rules/{id}", need: "whole", method: "DELETE", path: "/api/v1/rules/del-{n}", ok: 200, only: "in",
			setup: func(t *testing.T, e *accessEnv, _, n string) map[string]string {
				e.admin.MustDo(t, "PUT", "/api/v1/rules/del-"+n, rule, 201)
				return nil
			}},
		{route: "PUT /api/v1/models/{dtmi}", need: "whole", method: "PUT", path: "/api/v1/models/dtmi:t:m{n};1", body: model, ok: 201, only: "in"},
		{route: "GET /api/v1/models/{dtmi}", need: "viewer", method: "GET", path: "/api/v1/models/dtmi:t:get{n};1", ok: 200, only: "in",
			setup: func(t *testing.T, e *accessEnv, _, n string) map[string]string {
				e.admin.MustDo(t, "PUT", "/api/v1/models/dtmi:t:get"+n+";1", strings.ReplaceAll(model, "m{n}", "get"+n), 201)
				return nil
			}},
		{route: "GET /api/v1/models", need: "viewer", method: "GET", path: "/api/v1/models", ok: 200, only: "in"},
		{route: "DELETE /api/v1/models/{dtmi}", need: "whole", method: "DELETE", path: "/api/v1/models/dtmi:t:del{n};1", ok: 200, only: "in",
			setup: func(t *testing.T, e *accessEnv, _, n string) map[string]string {
				e.admin.MustDo(t, "PUT", "/api/v1/models/dtmi:t:del"+n+";1", strings.ReplaceAll(model, "m{n}", "del"+n), 201)
				return nil
			}},
		{route: "GET /api/v1/alerts", need: "viewer", method: "GET", path: "/api/v1/alerts?under={w}-b", ok: 200},
		{route: "GET /api/v1/alerts", need: "viewer", method: "GET", path: "/api/v1/alerts?state=active", ok: 200, only: "in"},
		{route: "GET /api/v1/alerts/{id}", need: "viewer", method: "GET", path: "/api/v1/alerts/hot%2F{w}-d", ok: 200},
		{route: "POST /api/v1/alerts/{id}/ack", need: "operator", method: "POST", path: "/api/v1/alerts/hot%2F{w}-d/ack", ok: 200, setup: raiseAlert},
		{route: "GET /api/v1/alerts/{rule}/{entity}", need: "viewer", method: "GET", path: "/api/v1/alerts/hot/{w}-d", ok: 200},
		{route: "POST /api/v1/alerts/{rule}/{entity}/ack", need: "operator", method: "POST", path: "/api/v1/alerts/hot/{w}-d/ack", ok: 200, setup: raiseAlert},

		{route: "POST /api/v1/tokens", need: "whole", method: "POST", path: "/api/v1/tokens", body: `{"role":"viewer","under":"in-b","ttl":"1h"}`, ok: 201, only: "in"},
		{route: "GET /api/v1/tokens", need: "whole", method: "GET", path: "/api/v1/tokens", ok: 200, only: "in"},
		{route: "GET /api/v1/tokens/self", need: "any", method: "GET", path: "/api/v1/tokens/self", ok: 200, only: "in"},
		{route: "DELETE /api/v1/tokens/{id}", need: "whole", method: "DELETE", path: "/api/v1/tokens/{tok}", ok: 204, only: "in",
			setup: func(t *testing.T, e *accessEnv, _, _ string) map[string]string {
				_, id := e.mint(t, "viewer", "in-b", "1h")
				return map[string]string{"tok": id}
			}},

		{route: "POST /api/v1/import", need: "whole", method: "POST", path: "/api/v1/import", body: `{"entity":{"id":"imp-{n}","kind":"room","parent":"in-b"}}`, ok: 200, only: "in"},
		{route: "GET /api/v1/export", need: "whole", method: "GET", path: "/api/v1/export?under=in-b", ok: 200, only: "in"},
		{route: "POST /api/v1/jobs", need: "whole", method: "POST", path: "/api/v1/jobs", body: jobSpec, ok: 201, only: "in"},
		{route: "GET /api/v1/jobs", need: "whole", method: "GET", path: "/api/v1/jobs", ok: 200, only: "in"},
		{route: "GET /api/v1/jobs/{id}", need: "whole", method: "GET", path: "/api/v1/jobs/acc-{n}", ok: 200, only: "in", setup: createJob},
		{route: "GET /api/v1/jobs/{id}/devices", need: "whole", method: "GET", path: "/api/v1/jobs/acc-{n}/devices", ok: 200, only: "in", setup: createJob},
		{route: "POST /api/v1/jobs/{id}/cancel", need: "whole", method: "POST", path: "/api/v1/jobs/acc-{n}/cancel", ok: 200, only: "in", setup: createJob},
		{route: "GET /api/v1/cluster", need: "whole", method: "GET", path: "/api/v1/cluster", ok: 200, only: "in"},
		{route: "DELETE /api/v1/cluster/members/{node}", need: "whole", method: "DELETE", path: "/api/v1/cluster/members/n9", ok: 204, only: "in"},
		{route: "GET /api/v1/backup", need: "whole", method: "GET", path: "/api/v1/backup", ok: 200, only: "in"},
		{need: "any", method: "GET", path: "/api/v1/no-such-thing", ok: 404, only: "in"},
		{need: "any", method: "POST", path: "/api/v1/twins/{w}-d", ok: 405, only: "in"},
		{need: "whole", method: "GET", path: "/debug/extra", ok: 200, only: "in"},
	}
}

// jobSpec is a job that starts in an hour and changes nothing meanwhile.
const jobSpec = `{"type":"updateTwin","condition":"tags.none = 1","twinPatch":{"tags":{"x":1}},"startTime":"2099-01-01T00:00:00Z"}`

// createJob creates job acc-<n> (jobSpec) for a case.
func createJob(t *testing.T, e *accessEnv, _, n string) map[string]string {
	e.admin.MustDo(t, "POST", "/api/v1/jobs", strings.Replace(jobSpec, "{", `{"jobId":"acc-`+n+`",`, 1), 201)
	return nil
}

func expand(s, w, n string, vars map[string]string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "{w}", w), "{n}", n)
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{"+k+"}", v)
	}
	return s
}

// want is the status a caller gets: 403 when its role is too low, when it
// is scoped and the route needs the whole tree, or when it is scoped and
// the request touches the other building.
func (c restCase) want(who caller, w string) int {
	rank := map[string]int{"any": 0, "viewer": 1, "operator": 2, "admin": 3, "whole": 3}[c.need]
	switch {
	case who.rank < rank, c.need == "whole" && !who.whole, w == "out" && !who.whole:
		return 403
	}
	return c.ok
}

// TestAccessMatrix sends every REST route, inside and outside the scope,
// as every kind of caller, and checks the exact status; a scoped caller's
// answers must never name an entity outside its scope. Issue 12, CONTRACT
// section 13.
func TestAccessMatrix(t *testing.T) {
	e := newAccessEnv(t)
	ctx := context.Background()
	cases := restCases()
	t.Run("every route is in the matrix, inside and outside the scope", func(t *testing.T) {
		sides := map[string]map[string]bool{}
		for _, c := range cases {
			if sides[c.route] == nil {
				sides[c.route] = map[string]bool{}
			}
			for _, w := range []string{"in", "out"} {
				if c.only == "" || c.only == w {
					sides[c.route][w] = true
				}
			}
		}
		for _, r := range e.srv.Routes() {
			switch {
			case !sides[r.Pattern]["in"]:
				t.Errorf("route %s is not in the matrix", r.Pattern)
			case (len(r.Scope) > 0 || r.List) && !sides[r.Pattern]["out"]:
				t.Errorf("route %s touches entities but the matrix does not try it outside the scope", r.Pattern)
			}
		}
	})
	for _, c := range cases {
		for _, w := range []string{"in", "out"} {
			if c.only != "" && c.only != w {
				continue
			}
			for _, who := range callers {
				name := fmt.Sprintf("%s %s/%s/%s", c.method, expand(c.path, w, "N", nil), w, who.name)
				t.Run(name, func(t *testing.T) {
					n := fmt.Sprint(e.next())
					var vars map[string]string
					if c.setup != nil {
						vars = c.setup(t, e, w, n)
					}
					if vars == nil {
						vars = map[string]string{}
					}
					vars["mid"] = e.mids[w+"-d"]
					var body any
					if c.body != "" {
						body = expand(c.body, w, n, vars)
					}
					st, _, out, err := e.as(who.name).Do(ctx, c.method, expand(c.path, w, n, vars), body)
					if err != nil {
						t.Fatal(err)
					}
					if want := c.want(who, w); st != want {
						t.Fatalf("status %d, want %d: %.300s", st, want, out)
					}
					if st < 300 && !who.whole {
						leak(t, who.name, c.method+" "+c.path, out)
					}
					if st == 403 && !strings.Contains(string(out), `"forbidden"`) {
						t.Errorf("403 without the forbidden code: %s", out)
					}
					if c.after != nil {
						c.after(t, e, w, n)
					}
				})
			}
		}
	}
	// What a scoped caller lists is its subtree, the root included.
	for _, path := range []string{"/api/v1/entities", "/api/v1/twins", "/api/v1/alerts"} {
		out := e.as("viewer").MustDo(t, "GET", path, nil, 200)
		if !strings.Contains(string(out), `"in-d"`) {
			t.Errorf("viewer's %s lacks in-d: %.300s", path, out)
		}
		if path != "/api/v1/alerts" && !strings.Contains(string(out), `"in-b"`) {
			t.Errorf("viewer's %s lacks its root in-b: %.300s", path, out)
		}
		leak(t, "viewer", path, out)
	}
	t.Run("refused tokens", func(t *testing.T) { refusedTokens(t, e, cases) })
}

// refusedTokens: no token, a garbled, forged, unknown, revoked or expired
// one answers 401 on every route and on the WebSocket.
func refusedTokens(t *testing.T, e *accessEnv, cases []restCase) {
	valid := e.tokens["viewer"]
	last := valid[len(valid)-1]
	flip := map[bool]string{true: "1", false: "0"}[last == '0']
	unknown, _, _, err := authz.Mint(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	revoked, rid := e.mint(t, "operator", "in-b", "1h")
	e.admin.MustDo(t, "DELETE", "/api/v1/tokens/"+rid, nil, 204)
	bad := map[string]string{
		"none":      "",
		"garbled":   "tmk_" + strings.Repeat("z", 81),
		"truncated": valid[:len(valid)-1],
		"forged":    valid[:len(valid)-1] + flip,
		"unknown":   unknown,
		"revoked":   revoked,
		"admin-ish": token + "x",
	}
	ctx := context.Background()
	for name, tok := range bad {
		for _, c := range cases {
			st, hdr, out, err := e.as("viewer").Do(ctx, c.method, expand(c.path, "in", "0", map[string]string{"mid": "m", "tok": "t"}), nil,
				"Authorization", "Bearer "+tok)
			if err != nil || st != 401 || !strings.Contains(string(out), `"unauthorized"`) || hdr.Get("WWW-Authenticate") == "" {
				t.Errorf("%s token, %s %s: %d %v %s; want 401", name, c.method, c.path, st, err, out)
			}
		}
		if name == "none" {
			continue
		}
		if _, st := e.dial(t, tok); st != 401 {
			t.Errorf("%s token: WebSocket upgrade answered %d, want 401", name, st)
		}
	}
}
