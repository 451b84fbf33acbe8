package authz

import (
	"context"
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Role is what a token may do; a higher role may do all a lower one may.
type Role int

// The roles, lowest first.
const (
	// Viewer reads twins, telemetry, alerts, entities and WebSocket events.
	Viewer Role = iota + 1
	// Operator also patches desired properties, invokes direct methods,
	// calls entity operations, sends cloud-to-device messages and
	// acknowledges alerts.
	Operator
	// Admin also manages entities, devices and their keys; for the whole
	// tree only, rules, routes, tokens, cluster membership and backups.
	Admin
)

// ParseRole reads "viewer", "operator" or "admin".
func ParseRole(s string) (Role, bool) {
	switch s {
	case "viewer":
		return Viewer, true
	case "operator":
		return Operator, true
	case "admin":
		return Admin, true
	}
	return 0, false
}

// String is the role's name in the API.
func (r Role) String() string {
	switch r {
	case Viewer:
		return "viewer"
	case Operator:
		return "operator"
	case Admin:
		return "admin"
	}
	return "none"
}

// Principal is an authenticated caller.
type Principal struct {
	// TokenID is the access token's ID; "" for the admin token.
	TokenID string
	Name    string
	Role    Role
	// Under is the root of the caller's scope; "" is the whole tree.
	Under string
	// Expires is when the token stops working; zero for the admin token.
	Expires time.Time
}

// Whole reports whether the principal's scope is the whole tree. The zero
// Principal (no role) has no scope at all.
func (p Principal) Whole() bool { return p.Role != 0 && p.Under == "" }

// Need is what a route or op requires of the caller, besides the entities
// it touches being in the caller's scope.
type Need struct {
	Role Role
	// Whole marks cluster-wide data (rules, tokens, cluster membership,
	// backups): only a principal for the whole tree may touch it.
	Whole bool
}

// Tokens looks up stored access tokens; the actors System implements it.
// Token must be safe for concurrent use and must not block on IO.
type Tokens interface {
	Token(id string) (actors.AccessToken, bool)
}

// Tree gives the parent chain of an entity, nearest first, and an error
// carrying errcode.NotFound for an entity that does not exist; the actors
// System implements it. It must be safe for concurrent use.
type Tree interface {
	Ancestors(ctx context.Context, id string) ([]string, error)
}

// Config configures an Authorizer.
type Config struct {
	// AdminToken is the node's admin token (--api-token): role admin for
	// the whole tree, never expiring. "" accepts no admin token.
	AdminToken string
	// Tokens holds the access tokens; nil accepts only the admin token.
	Tokens Tokens
	// Tree answers scope checks; nil makes every scoped check fail.
	Tree Tree
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authorizer authenticates callers and checks what they may do. It is safe
// for concurrent use.
type Authorizer struct {
	admin  []byte
	tokens Tokens
	tree   Tree
	now    func() time.Time
}

// New builds an Authorizer; New(Config{}) accepts no one.
func New(cfg Config) *Authorizer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Authorizer{admin: []byte(cfg.AdminToken), tokens: cfg.Tokens, tree: cfg.Tree, now: cfg.Now}
}

// BearerToken returns the token of a request: the bearer credentials of
// its Authorization header (the scheme is case-insensitive, RFC 7235) or,
// for WebSocket clients that cannot set headers, its access_token query
// parameter.
func BearerToken(r *http.Request) string {
	if scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(cred)
	}
	return r.URL.Query().Get("access_token")
}

// Authenticate returns the principal of r's token, or an errcode
// Unauthorized error.
func (a *Authorizer) Authenticate(r *http.Request) (Principal, error) {
	return a.AuthenticateToken(BearerToken(r))
}

var errNoToken = errcode.New(errcode.Unauthorized, "missing or invalid bearer token")

// AuthenticateToken returns the principal of a token, or an errcode
// Unauthorized error: empty, unknown, garbled, forged, revoked, expired.
func (a *Authorizer) AuthenticateToken(tok string) (Principal, error) {
	if tok == "" {
		return Principal{}, errNoToken
	}
	if len(a.admin) > 0 && subtle.ConstantTimeCompare([]byte(tok), a.admin) == 1 {
		return Principal{Name: "admin token", Role: Admin}, nil
	}
	id, secret, ok := ParseToken(tok)
	if !ok || a.tokens == nil {
		return Principal{}, errNoToken
	}
	rec, ok := a.tokens.Token(id)
	if !ok || subtle.ConstantTimeCompare([]byte(HashSecret(secret)), []byte(rec.Hash)) != 1 {
		return Principal{}, errNoToken
	}
	role, ok := ParseRole(rec.Role)
	if !ok {
		return Principal{}, errNoToken
	}
	switch now := a.now(); {
	case rec.Revoked != nil:
		return Principal{}, errcode.New(errcode.Unauthorized, "token %s was revoked", id)
	case !now.Before(rec.Expires):
		return Principal{}, errcode.New(errcode.Unauthorized, "token %s expired at %s", id, rec.Expires.UTC().Format(time.RFC3339))
	}
	return Principal{TokenID: id, Name: rec.Name, Role: role, Under: rec.Under, Expires: rec.Expires}, nil
}

// Valid reports whether p's token still works: the admin token always; an
// access token while it is stored, not revoked and not expired.
func (a *Authorizer) Valid(p Principal) bool {
	if p.TokenID == "" {
		return true
	}
	if a.tokens == nil {
		return false
	}
	rec, ok := a.tokens.Token(p.TokenID)
	return ok && rec.Active(a.now())
}

// Allow checks p's role and, for cluster-wide data, that p's scope is the
// whole tree; it returns an errcode Forbidden error saying what is missing.
func (a *Authorizer) Allow(p Principal, n Need) error {
	if p.Role < n.Role {
		return errcode.New(errcode.Forbidden, "this is a %s token; this request needs the %s role", p.Role, n.Role)
	}
	if n.Whole && !p.Whole() {
		return errcode.New(errcode.Forbidden, "this token is limited to the subtree of %s; this request needs an admin token for the whole tree", p.Under)
	}
	return nil
}

// InScope reports whether entity id is in p's scope: p is for the whole
// tree, or id is p.Under or one of its descendants. An entity that does
// not exist is in no scope.
func (a *Authorizer) InScope(ctx context.Context, p Principal, id string) (bool, error) {
	if p.Whole() || id == p.Under {
		return true, nil
	}
	if a.tree == nil || id == "" {
		return false, nil
	}
	anc, err := a.tree.Ancestors(ctx, id)
	if errcode.Of(err) == errcode.NotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return slices.Contains(anc, p.Under), nil
}

// InScopeOf is InScope for a caller that knows the entity's ancestors
// (nearest first, as Tree returns them; the WebSocket hub caches them).
func InScopeOf(p Principal, id string, ancestors []string) bool {
	return p.Whole() || id == p.Under || slices.Contains(ancestors, p.Under)
}

// CheckEntity returns an errcode Forbidden error when entity id is not in
// p's scope (see InScope), whether or not it exists.
func (a *Authorizer) CheckEntity(ctx context.Context, p Principal, id string) error {
	ok, err := a.InScope(ctx, p, id)
	if err != nil {
		return err
	}
	if !ok {
		return errcode.New(errcode.Forbidden, "entity %q is outside this token's scope (the subtree of %s)", id, p.Under)
	}
	return nil
}

// Check is Allow, then CheckEntity for every entity the request touches.
func (a *Authorizer) Check(ctx context.Context, p Principal, n Need, entities ...string) error {
	if err := a.Allow(p, n); err != nil {
		return err
	}
	for _, id := range entities {
		if err := a.CheckEntity(ctx, p, id); err != nil {
			return err
		}
	}
	return nil
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p, for the handlers behind the check.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal WithPrincipal stored. A context
// without one yields a principal with no role, which Allow refuses.
func FromContext(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}
