package api

// The REST routes and what each requires of its caller (CONTRACT section
// 13): every route is declared here, once, with its role and the entities
// it touches, and guard checks them through package authz before the
// handler runs. Handlers add only what depends on the request's body
// (where a new entity goes, a twin patch that changes tags) and the scope
// of lists, through the helpers at the foot of this file.

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/authz"
	"github.com/twinmesh/twinmesh/persistence"
)

// locator names an entity a request touches (a path parameter).
type locator struct {
	what string // for Routes: "{id}", "{grantee}", "alert's entity"
	of   func(r *http.Request) string
}

func param(name string) locator {
	return locator{what: "{" + name + "}", of: func(r *http.Request) string { return r.PathValue(name) }}
}

// alertEntity is the entity of the alert a request names: the part of
// "<rule>/<entity>" after the last slash (entity IDs have none).
var alertEntity = locator{what: "the alert's entity", of: func(r *http.Request) string {
	id := alertID(r)
	if i := strings.LastIndexByte(id, '/'); i >= 0 {
		return id[i+1:]
	}
	return ""
}}

// route is one REST route and what it requires.
type route struct {
	pattern string
	need    authz.Need
	// touches are the entities the request touches; each must be in the
	// caller's scope.
	touches []locator
	// upsert: touches[0] may not exist yet (PUT creates it); it is checked
	// only if it exists, and the handler checks where the body puts it
	// (checkPlacement).
	upsert bool
	// list: the handler filters what it answers by the caller's scope.
	list bool
	// query names the query parameters the route reads; a name ending in
	// "." admits every parameter with that prefix ("tag."). Others are
	// refused with 400, so that a mistyped filter (?knd=) does not answer
	// everything.
	query []string
	// stream: the handler reads the body as a stream with its own bounds,
	// so Config.MaxBody does not apply (bulk import).
	stream bool
	h      func(http.ResponseWriter, *http.Request) error
}

// everywhere are the query parameters every route accepts: the access
// token, for clients that cannot set a header.
var everywhere = []string{"access_token"}

// checkQuery refuses a request with a query parameter its route does not
// read.
func checkQuery(r *http.Request, accepted []string) error {
	for name := range r.URL.Query() {
		if !acceptedParam(name, accepted) && !acceptedParam(name, everywhere) {
			if len(accepted) == 0 {
				return errcode.New(errcode.BadRequest, "unknown query parameter %q: %s takes none", name, r.URL.Path)
			}
			return errcode.New(errcode.BadRequest, "unknown query parameter %q: this route takes %s", name, strings.Join(describe(accepted), ", "))
		}
	}
	return nil
}

func acceptedParam(name string, accepted []string) bool {
	for _, a := range accepted {
		if prefix, ok := strings.CutSuffix(a, "."); ok {
			if rest, ok := strings.CutPrefix(name, prefix+"."); ok && rest != "" {
				return true
			}
		} else if name == a {
			return true
		}
	}
	return false
}

func describe(accepted []string) []string {
	out := make([]string, len(accepted))
	for i, a := range accepted {
		if strings.HasSuffix(a, ".") {
			a += "<name>"
		}
		out[i] = a
	}
	return out
}

var (
	viewer   = authz.Need{Role: authz.Viewer}
	operator = authz.Need{Role: authz.Operator}
	admin    = authz.Need{Role: authz.Admin}
	// whole is cluster-wide data: an admin token for the whole tree.
	whole = authz.Need{Role: authz.Admin, Whole: true}
	// anyone is any valid token.
	anyone = authz.Need{}
)

func (s *Server) routeTable() []route {
	id := param("id")
	listQuery := []string{"kind", "under", "tag.", "limit", "cursor"}
	on := func(l ...locator) []locator { return l }
	return []route{
		{pattern: "PUT /api/v1/entities/{id}", need: admin, touches: on(id), upsert: true, h: s.putEntity},
		{pattern: "GET /api/v1/entities/{id}", need: viewer, touches: on(id), h: s.getEntity},
		{pattern: "DELETE /api/v1/entities/{id}", need: admin, touches: on(id), query: []string{"recursive"}, h: s.deleteEntity},
		{pattern: "GET /api/v1/entities/{id}/children", need: viewer, touches: on(id), h: s.children},
		{pattern: "GET /api/v1/entities/{id}/tree", need: viewer, touches: on(id), h: s.tree},
		{pattern: "POST /api/v1/entities/{id}/ops/{name}", need: operator, touches: on(id), h: s.callOp},
		{pattern: "GET /api/v1/entities", need: viewer, list: true, query: listQuery, h: s.listEntities},

		{pattern: "GET /api/v1/devices", need: admin, list: true, query: []string{"status", "under", "limit", "cursor"}, h: s.listDevices},
		{pattern: "DELETE /api/v1/devices/{id}", need: admin, touches: on(id), h: s.deleteDevice},
		{pattern: "PUT /api/v1/devices/{id}", need: admin, touches: on(id), upsert: true, h: s.putDevice},
		{pattern: "GET /api/v1/devices/{id}", need: admin, touches: on(id), h: s.getDevice},
		{pattern: "PATCH /api/v1/devices/{id}", need: admin, touches: on(id), h: s.patchDevice},
		{pattern: "POST /api/v1/devices/{id}/token", need: admin, touches: on(id), query: []string{"ttl"}, h: s.deviceToken},
		{pattern: "POST /api/v1/devices/{id}/methods/{name}", need: operator, touches: on(id), h: s.invoke},
		{pattern: "GET /api/v1/devices/{id}/streams/{name}", need: operator, touches: on(id), h: s.openStream},
		{pattern: "POST /api/v1/devices/{id}/messages", need: operator, touches: on(id), h: s.sendMessage},
		{pattern: "GET /api/v1/devices/{id}/messages", need: viewer, touches: on(id), h: s.listMessages},
		{pattern: "GET /api/v1/devices/{id}/messages/{mid}", need: viewer, touches: on(id), h: s.getMessage},
		{pattern: "GET /api/v1/devices/{id}/grants", need: admin, touches: on(id), h: s.listGrants},
		{pattern: "PUT /api/v1/devices/{id}/grants/{grantee}", need: admin, touches: on(id, param("grantee")), h: s.putGrant},
		{pattern: "DELETE /api/v1/devices/{id}/grants/{grantee}", need: admin, touches: on(id, param("grantee")), h: s.deleteGrant},

		{pattern: "GET /api/v1/twins/{id}", need: viewer, touches: on(id), h: s.getTwin},
		{pattern: "PATCH /api/v1/twins/{id}", need: operator, touches: on(id), h: s.patchTwin},
		{pattern: "PUT /api/v1/twins/{id}", need: operator, touches: on(id), h: s.putTwin},
		{pattern: "GET /api/v1/twins", need: viewer, list: true, query: listQuery, h: s.queryTwins},
		{pattern: "POST /api/v1/query", need: viewer, list: true, h: s.query},
		{pattern: "GET /api/v1/twins/{id}/telemetry", need: viewer, touches: on(id), query: []string{"name", "from", "to", "limit"}, h: s.telemetry},

		{pattern: "PUT /api/v1/rules/{id}", need: whole, h: s.putRule},
		{pattern: "GET /api/v1/rules/{id}", need: whole, h: s.getRule},
		{pattern: "GET /api/v1/rules", need: whole, h: s.listRules},
		{pattern: "DELETE /api/v1/rules/{id}", need: whole, h: s.deleteRule},
		{pattern: "PUT /api/v1/models/{dtmi}", need: whole, h: s.putModel},
		{pattern: "GET /api/v1/models/{dtmi}", need: viewer, query: []string{"view"}, h: s.getModel},
		{pattern: "GET /api/v1/models", need: viewer, h: s.listModels},
		{pattern: "DELETE /api/v1/models/{dtmi}", need: whole, h: s.deleteModel},
		{pattern: "GET /api/v1/alerts", need: viewer, list: true, query: []string{"state", "under"}, h: s.listAlerts},
		{pattern: "GET /api/v1/alerts/{id}", need: viewer, touches: on(alertEntity), h: s.getAlert},
		{pattern: "POST /api/v1/alerts/{id}/ack", need: operator, touches: on(alertEntity), h: s.ackAlert},
		// Alert IDs are "<rule>/<entity>"; both the escaped form and this
		// two-segment form reach them.
		{pattern: "GET /api/v1/alerts/{rule}/{entity}", need: viewer, touches: on(alertEntity), h: s.getAlert},
		{pattern: "POST /api/v1/alerts/{rule}/{entity}/ack", need: operator, touches: on(alertEntity), h: s.ackAlert},

		{pattern: "POST /api/v1/tokens", need: whole, h: s.createToken},
		{pattern: "GET /api/v1/tokens", need: whole, h: s.listTokens},
		{pattern: "GET /api/v1/tokens/self", need: anyone, h: s.selfToken},
		{pattern: "DELETE /api/v1/tokens/{id}", need: whole, h: s.revokeToken},

		{pattern: "POST /api/v1/import", need: whole, query: []string{"dryRun"}, stream: true, h: s.importBody},
		{pattern: "GET /api/v1/export", need: whole, query: []string{"under"}, h: s.export},

		{pattern: "POST /api/v1/jobs", need: whole, h: s.createJob},
		{pattern: "GET /api/v1/jobs", need: whole, h: s.listJobs},
		{pattern: "GET /api/v1/jobs/{id}", need: whole, h: s.getJob},
		{pattern: "GET /api/v1/jobs/{id}/devices", need: whole, query: []string{"limit", "cursor"}, h: s.jobDevices},
		{pattern: "POST /api/v1/jobs/{id}/cancel", need: whole, h: s.cancelJob},

		{pattern: "GET /api/v1/cluster", need: whole, h: s.cluster},
		{pattern: "DELETE /api/v1/cluster/members/{node}", need: whole, h: s.forgetMember},
		{pattern: "GET /api/v1/backup", need: whole, h: s.backup},
	}
}

// Route describes a REST route's requirement (for documentation and the
// authorization tests): the least role, whether it needs a token for the
// whole tree, and the entities that must be in the caller's scope.
type Route struct {
	Pattern string
	Role    string // "" for any valid token
	Whole   bool
	Scope   []string
	// List: the answer is filtered by the caller's scope.
	List bool
}

// Routes lists every REST route with its requirement.
func (s *Server) Routes() []Route {
	var out []Route
	for _, rt := range s.routeTable() {
		r := Route{Pattern: rt.pattern, Whole: rt.need.Whole, List: rt.list}
		if rt.need.Role != 0 {
			r.Role = rt.need.Role.String()
		}
		for _, l := range rt.touches {
			r.Scope = append(r.Scope, l.what)
		}
		out = append(out, r)
	}
	return out
}

// guard authenticates the caller, checks the route's requirement, and
// hands the handler a request whose context carries the principal.
func (s *Server) guard(rt route, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authz.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="twinmesh"`)
			WriteError(w, err)
			return
		}
		if err := s.authz.Allow(p, rt.need); err != nil {
			WriteError(w, err)
			return
		}
		if rt.h != nil {
			if err := checkQuery(r, rt.query); err != nil {
				WriteError(w, err)
				return
			}
		}
		for i, l := range rt.touches {
			id := l.of(r)
			if i == 0 && rt.upsert && !p.Whole() && !s.exists(r.Context(), id) {
				continue // created by the request: checkPlacement decides
			}
			if err := s.authz.CheckEntity(r.Context(), p, id); err != nil {
				WriteError(w, err)
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(authz.WithPrincipal(r.Context(), p)))
	})
}

func (s *Server) exists(ctx context.Context, id string) bool {
	_, err := s.sys.GetEntity(ctx, id)
	return !errors.Is(err, actors.ErrNotFound)
}

// checkPlacement checks where a PUT of an entity or device puts it: a
// caller limited to a subtree may put entities only inside it (their
// parent, and the gateway they connect via, in its scope).
func (s *Server) checkPlacement(r *http.Request, spec actors.EntitySpec) error {
	p := authz.FromContext(r.Context())
	if p.Whole() {
		return nil
	}
	if spec.Parent == "" {
		return errcode.New(errcode.Forbidden, "this token is limited to the subtree of %s: give a \"parent\" inside it", p.Under)
	}
	if err := s.authz.CheckEntity(r.Context(), p, spec.Parent); err != nil {
		return err
	}
	if spec.ConnectedVia != "" {
		return s.authz.CheckEntity(r.Context(), p, spec.ConnectedVia)
	}
	return nil
}

// require checks that the caller has role for a part of a request that
// needs more than the route (what says which part).
func (s *Server) require(r *http.Request, role authz.Role, what string) error {
	p := authz.FromContext(r.Context())
	if p.Role < role {
		return errcode.New(errcode.Forbidden, "this is a %s token; %s needs the %s role", p.Role, what, role)
	}
	return nil
}

// scopeEntities narrows an entity filter to the caller's scope: an "under"
// outside it is refused (403), and without one only the scope is listed.
func (s *Server) scopeEntities(r *http.Request, f *persistence.EntityFilter) error {
	p := authz.FromContext(r.Context())
	if p.Whole() {
		return nil
	}
	if f.Under != "" {
		if err := s.authz.CheckEntity(r.Context(), p, f.Under); err != nil {
			return err
		}
	}
	f.Within = p.Under
	return nil
}

// scopeUnder is scopeEntities for filters whose "under" includes the
// entity itself (alerts): it returns the subtree to list.
func (s *Server) scopeUnder(r *http.Request, under string) (string, error) {
	p := authz.FromContext(r.Context())
	if p.Whole() {
		return under, nil
	}
	if under == "" {
		return p.Under, nil
	}
	return under, s.authz.CheckEntity(r.Context(), p, under)
}
