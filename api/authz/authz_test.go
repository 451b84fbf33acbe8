package authz

import (
	"context"
	"crypto/rand"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
)

type memTokens map[string]actors.AccessToken

func (m memTokens) Token(id string) (actors.AccessToken, bool) { t, ok := m[id]; return t, ok }

type parents map[string]string

func (p parents) Ancestors(_ context.Context, id string) ([]string, error) {
	if _, ok := p[id]; !ok {
		return nil, errcode.New(errcode.NotFound, "entity %s", id)
	}
	var out []string
	for x := p[id]; x != ""; x = p[x] {
		out = append(out, x)
	}
	return out, nil
}

func mint(t *testing.T, toks memTokens, role, under string, expires time.Time) (string, string) {
	t.Helper()
	tok, id, hash, err := Mint(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	toks[id] = actors.AccessToken{ID: id, Role: role, Under: under, Hash: hash, Expires: expires}
	return tok, id
}

func TestAuthenticate(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	toks := memTokens{}
	a := New(Config{AdminToken: "admin-secret", Tokens: toks, Now: func() time.Time { return now }})
	viewer, vid := mint(t, toks, "viewer", "b1", now.Add(time.Hour))
	expired, _ := mint(t, toks, "operator", "b1", now)
	revoked, rid := mint(t, toks, "admin", "", now.Add(time.Hour))
	r := toks[rid]
	r.Revoked = &now
	toks[rid] = r
	badRole, _ := mint(t, toks, "root", "", now.Add(time.Hour))
	forged := viewer[:len(viewer)-1] + map[bool]string{true: "1", false: "0"}[viewer[len(viewer)-1] == '0']
	unknown, _, _, _ := Mint(rand.Reader)

	p, err := a.AuthenticateToken(viewer)
	if err != nil || p.TokenID != vid || p.Role != Viewer || p.Under != "b1" || p.Whole() {
		t.Fatalf("viewer: %+v %v", p, err)
	}
	if p, err := a.AuthenticateToken("admin-secret"); err != nil || p.Role != Admin || !p.Whole() || p.TokenID != "" {
		t.Fatalf("admin token: %+v %v", p, err)
	}
	for name, tok := range map[string]string{"empty": "", "expired": expired, "revoked": revoked, "forged": forged,
		"unknown": unknown, "garbled": "tmk_zz", "unknown role": badRole, "admin prefix": "admin-secre"} {
		if _, err := a.AuthenticateToken(tok); errcode.Of(err) != errcode.Unauthorized {
			t.Errorf("%s: %v, want unauthorized", name, err)
		}
	}
	// The header and the query parameter.
	req := httptest.NewRequest("GET", "/api/v1/twins?access_token="+viewer, nil)
	if p, err := a.Authenticate(req); err != nil || p.TokenID != vid {
		t.Fatalf("query token: %+v %v", p, err)
	}
	req = httptest.NewRequest("GET", "/api/v1/twins", nil)
	req.Header.Set("Authorization", "bEaReR admin-secret")
	if _, err := a.Authenticate(req); err != nil {
		t.Fatalf("header token: %v", err)
	}
	// Valid follows the store.
	if !a.Valid(p) {
		t.Fatal("viewer not valid")
	}
	v := toks[vid]
	v.Revoked = &now
	toks[vid] = v
	if a.Valid(p) {
		t.Fatal("revoked viewer still valid")
	}
	if !a.Valid(Principal{Role: Admin}) {
		t.Fatal("admin token not valid")
	}
	if New(Config{}).Valid(p) {
		t.Fatal("valid without a token store")
	}
	if _, err := New(Config{}).AuthenticateToken(""); errcode.Of(err) != errcode.Unauthorized {
		t.Fatal("an empty admin token accepted the empty token")
	}
}

func TestAllowAndScope(t *testing.T) {
	tree := parents{"b1": "", "r1": "b1", "d1": "r1", "b2": "", "d2": "b2"}
	a := New(Config{Tree: tree})
	ctx := context.Background()
	viewer := Principal{TokenID: "v", Role: Viewer, Under: "r1"}
	op := Principal{TokenID: "o", Role: Operator, Under: "b1"}
	scopedAdmin := Principal{TokenID: "a", Role: Admin, Under: "b1"}
	admin := Principal{Role: Admin}
	cases := []struct {
		name   string
		p      Principal
		n      Need
		entity string
		want   errcode.Code
	}{
		{"viewer reads its root", viewer, Need{Role: Viewer}, "r1", errcode.OK},
		{"viewer reads below", viewer, Need{Role: Viewer}, "d1", errcode.OK},
		{"viewer reads above", viewer, Need{Role: Viewer}, "b1", errcode.Forbidden},
		{"viewer reads elsewhere", viewer, Need{Role: Viewer}, "d2", errcode.Forbidden},
		{"viewer reads a missing entity", viewer, Need{Role: Viewer}, "ghost", errcode.Forbidden},
		{"viewer patches", viewer, Need{Role: Operator}, "d1", errcode.Forbidden},
		{"operator patches", op, Need{Role: Operator}, "d1", errcode.OK},
		{"operator manages", op, Need{Role: Admin}, "d1", errcode.Forbidden},
		{"scoped admin manages inside", scopedAdmin, Need{Role: Admin}, "d1", errcode.OK},
		{"scoped admin manages outside", scopedAdmin, Need{Role: Admin}, "d2", errcode.Forbidden},
		{"scoped admin, cluster-wide", scopedAdmin, Need{Role: Admin, Whole: true}, "", errcode.Forbidden},
		{"admin, cluster-wide", admin, Need{Role: Admin, Whole: true}, "", errcode.OK},
		{"admin, missing entity", admin, Need{Role: Viewer}, "ghost", errcode.OK},
		{"no principal", Principal{}, Need{Role: Viewer}, "d1", errcode.Forbidden},
		{"no principal, no role needed", Principal{}, Need{}, "d1", errcode.Forbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ents []string
			if c.entity != "" {
				ents = append(ents, c.entity)
			}
			err := a.Check(ctx, c.p, c.n, ents...)
			if got := errcode.Of(err); (err == nil && c.want != errcode.OK) || (err != nil && got != c.want) {
				t.Fatalf("Check = %v, want %v", err, c.want)
			}
		})
	}
	if !InScopeOf(viewer, "d1", []string{"r1", "b1"}) || InScopeOf(viewer, "d2", []string{"b2"}) || !InScopeOf(admin, "x", nil) {
		t.Fatal("InScopeOf")
	}
	if FromContext(ctx).Whole() {
		t.Fatal("a context without a principal has the whole tree")
	}
	if p := FromContext(WithPrincipal(ctx, op)); p != op {
		t.Fatalf("FromContext = %+v", p)
	}
}
