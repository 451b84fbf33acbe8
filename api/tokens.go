package api

import (
	"crypto/rand"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/authz"
)

// Access tokens (CONTRACT section 13): POST, GET and DELETE /api/v1/tokens
// for admins of the whole tree, GET /api/v1/tokens/self for any token.

// DefaultTokenTTL is the lifetime of an access token created without a
// ttl (bounded by Config.MaxTokenLifetime).
const DefaultTokenTTL = 30 * 24 * time.Hour

// TokenInfo is an access token as the API shows it: never its secret.
type TokenInfo struct {
	ID      string    `json:"id,omitempty"`
	Name    string    `json:"name,omitempty"`
	Role    string    `json:"role"`
	Under   string    `json:"under,omitempty"`
	Created time.Time `json:"created,omitzero"`
	Expires time.Time `json:"expires,omitzero"`
}

// NewToken is the answer to POST /tokens: the token, shown this once, and
// its record.
type NewToken struct {
	Token string `json:"token"`
	TokenInfo
}

func tokenView(t actors.AccessToken) TokenInfo {
	return TokenInfo{ID: t.ID, Name: t.Name, Role: t.Role, Under: t.Under, Created: t.Created, Expires: t.Expires}
}

type tokenRequest struct {
	Role  string `json:"role"`
	Under string `json:"under"`
	TTL   string `json:"ttl"`
	Name  string `json:"name"`
}

// createToken answers POST /api/v1/tokens: 201 with the new token. The
// role is required; "under" is required except for admin tokens (whole
// tree) and must name an existing entity; ttl (a Go duration such as
// "720h", default 30 days) may not exceed --max-token-lifetime.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req tokenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	role, ok := authz.ParseRole(req.Role)
	if !ok {
		return errcode.New(errcode.BadRequest, `role must be "viewer", "operator" or "admin", not %q`, req.Role)
	}
	if req.Under == "" && role != authz.Admin {
		return errcode.New(errcode.BadRequest, `a %s token needs "under": the entity whose subtree it may see`, role)
	}
	if req.Under != "" && !actors.ValidID(req.Under) {
		return errcode.New(errcode.BadRequest, "under: no entity %q", req.Under)
	}
	if len(req.Name) > 200 || !utf8.ValidString(req.Name) {
		return errcode.New(errcode.BadRequest, "name must be UTF-8 text of at most 200 bytes")
	}
	ttl := min(DefaultTokenTTL, s.cfg.MaxTokenLifetime)
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Second || d > s.cfg.MaxTokenLifetime {
			return errcode.New(errcode.BadRequest, "ttl must be a duration between 1s and %s (--max-token-lifetime), such as \"720h\"", s.cfg.MaxTokenLifetime)
		}
		ttl = d
	}
	tok, id, hash, err := authz.Mint(rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	rec := actors.AccessToken{ID: id, Name: req.Name, Role: role.String(), Under: req.Under, Hash: hash,
		Created: now, Expires: now.Add(ttl)}
	if err := s.sys.PutToken(r.Context(), rec); err != nil {
		return err
	}
	s.log.Info("access token created", "token", id, "role", rec.Role, "under", rec.Under, "expires", rec.Expires)
	writeJSON(w, http.StatusCreated, NewToken{Token: tok, TokenInfo: tokenView(rec)})
	return nil
}

// listTokens answers GET /api/v1/tokens: the active tokens, oldest first.
func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	list := s.sys.Tokens(r.Context())
	out := make([]TokenInfo, len(list))
	for i, t := range list {
		out[i] = tokenView(t)
	}
	writeJSON(w, 200, items[TokenInfo]{Items: out})
	return nil
}

// selfToken answers GET /api/v1/tokens/self: what the caller's token is
// (the dashboard shows only the controls its role may use).
func (s *Server) selfToken(w http.ResponseWriter, r *http.Request) error {
	p := authz.FromContext(r.Context())
	info := TokenInfo{ID: p.TokenID, Name: p.Name, Role: p.Role.String(), Under: p.Under, Expires: p.Expires}
	if p.TokenID != "" {
		if t, ok := s.sys.Token(p.TokenID); ok {
			info = tokenView(t)
		}
	}
	writeJSON(w, 200, info)
	return nil
}

// revokeToken answers DELETE /api/v1/tokens/{id}: 204 once the token no
// longer works on this node; its open WebSockets are closed on every
// member as the revocation reaches it.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.sys.RevokeToken(r.Context(), id); err != nil {
		return err
	}
	s.log.Info("access token revoked", "token", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
