package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
)

// AccessToken is the stored record of an access token of the REST and
// WebSocket API (CONTRACT section 13). It holds the SHA-256 of the token's
// secret, never the secret itself. Tokens are cluster-wide catalog data:
// every member holds all of them, in its store and in memory.
type AccessToken struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Role is "viewer", "operator" or "admin"; the System stores it as
	// given and leaves its meaning to the API layer (package api/authz).
	Role string `json:"role"`
	// Under is the entity whose subtree the token may see and touch; ""
	// means the whole tree (admin tokens only).
	Under string `json:"under,omitempty"`
	// Hash is the hex SHA-256 of the secret.
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Revoked is when the token was revoked; a revoked record is kept
	// until it expires, so that a member that was away cannot bring the
	// token back when it copies the catalog (see persistence.BucketTokens).
	Revoked *time.Time `json:"revoked,omitempty"`
}

// Active reports whether the token may be used at now: not revoked and not
// expired.
func (t AccessToken) Active(now time.Time) bool {
	return t.Revoked == nil && now.Before(t.Expires)
}

// tokenSet is an immutable snapshot of the stored tokens, by ID.
type tokenSet struct{ byID map[string]AccessToken }

// OnTokensChanged adds a function called after the set of tokens changed,
// on this node or (through CatalogChanged) on another member: a token was
// created or revoked. It is called synchronously, possibly from several
// goroutines at once, so it must be safe for concurrent use and must not
// block for long; the WebSocket hub uses it to close the connections of
// revoked tokens at once. Add watchers before Start.
func (s *System) OnTokensChanged(fn func()) {
	s.tokenMu.Lock()
	s.tokenWatchers = append(s.tokenWatchers, fn)
	s.tokenMu.Unlock()
}

// loadTokens reads the stored tokens into memory and tells the watchers.
// Loads are serialized, so that a load that read the store earlier never
// replaces the set of a later one (a revoked token must not come back).
func (s *System) loadTokens() error {
	s.tokenLoadMu.Lock()
	docs, err := s.store.ListDocs(persistence.BucketTokens, "")
	if err != nil {
		s.tokenLoadMu.Unlock()
		return fmt.Errorf("load tokens: %w", err)
	}
	set := &tokenSet{byID: make(map[string]AccessToken, len(docs))}
	for id, doc := range docs {
		var t AccessToken
		if err := json.Unmarshal(doc, &t); err != nil || t.ID != id {
			s.log.Error("stored access token is unreadable; skipped", "token", id, "err", err)
			continue
		}
		set.byID[id] = t
	}
	s.tokens.Store(set)
	s.tokenLoadMu.Unlock()
	s.tokenMu.Lock()
	watchers := s.tokenWatchers
	s.tokenMu.Unlock()
	for _, fn := range watchers {
		fn()
	}
	return nil
}

// Token returns the stored record of token id, revoked or expired ones
// included (the caller checks Active). It reads memory only: it is cheap
// and never blocks.
func (s *System) Token(id string) (AccessToken, bool) {
	set := s.tokens.Load()
	if set == nil {
		return AccessToken{}, false
	}
	t, ok := set.byID[id]
	return t, ok
}

// Tokens returns the tokens that are active now, oldest first.
func (s *System) Tokens(_ context.Context) []AccessToken {
	now := s.cfg.Now()
	out := []AccessToken{}
	if set := s.tokens.Load(); set != nil {
		for _, t := range set.byID {
			if t.Active(now) {
				out = append(out, t)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// PutToken stores a new token cluster-wide. t.Under, when set, must name an
// existing entity (ErrBadRequest), t.ID must be new (ErrConflict) and
// t.Hash and t.Expires must be set. Records of tokens that have expired
// are removed in the same commit.
func (s *System) PutToken(ctx context.Context, t AccessToken) error {
	if t.ID == "" || t.Hash == "" || t.Expires.IsZero() || t.Revoked != nil {
		return fmt.Errorf("%w: a new token needs an id, a hash and an expiry", ErrBadRequest)
	}
	if t.Under != "" {
		if _, err := s.store.GetEntity(t.Under); errors.Is(err, persistence.ErrNotFound) {
			return fmt.Errorf("%w: under: no entity %q", ErrBadRequest, t.Under)
		} else if err != nil {
			return fmt.Errorf("look up %s: %w", t.Under, err)
		}
	}
	if _, ok := s.Token(t.ID); ok {
		return fmt.Errorf("%w: token %s exists", ErrConflict, t.ID)
	}
	doc, err := json.Marshal(t)
	if err != nil {
		return err
	}
	ops := []persistence.Op{persistence.PutDoc(persistence.BucketTokens, t.ID, doc)}
	now := s.cfg.Now()
	if set := s.tokens.Load(); set != nil {
		for id, old := range set.byID {
			if !now.Before(old.Expires) {
				ops = append(ops, persistence.DeleteDoc(persistence.BucketTokens, id))
			}
		}
	}
	if err := s.commitCatalog(ctx, ops...); err != nil {
		return fmt.Errorf("store token %s: %w", t.ID, err)
	}
	return s.loadTokens()
}

// RevokeToken revokes token id on every member: its record is marked
// revoked. The watchers are told once this node's copy changed; other
// members tell theirs when the change reaches them. Revoking a revoked
// token sends the revoked record to the members again (a retry after a
// failed copy); a token that does not exist or has expired is ErrNotFound.
func (s *System) RevokeToken(ctx context.Context, id string) error {
	t, ok := s.Token(id)
	if !ok || !s.cfg.Now().Before(t.Expires) {
		return fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	if t.Revoked == nil {
		at := s.cfg.Now().UTC()
		t.Revoked = &at
	}
	doc, err := json.Marshal(t)
	if err != nil {
		return err
	}
	// Mark this node's copy first, so that the token stops working here
	// even if the copy to the other members fails.
	if err := s.store.Commit(ctx, persistence.PutDoc(persistence.BucketTokens, id, doc)); err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if err := s.loadTokens(); err != nil {
		return err
	}
	if err := s.commitCatalog(ctx, persistence.PutDoc(persistence.BucketTokens, id, doc)); err != nil {
		return fmt.Errorf("revoke token %s on the other members: %w", id, err)
	}
	return nil
}
