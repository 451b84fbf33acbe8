package actors_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/persistence"
)

func TestAccessTokens(t *testing.T) {
	e := start(t, filepath.Join(t.TempDir(), "db"), options{})
	var changed atomic.Int32
	e.sys.OnTokensChanged(func() { changed.Add(1) })
	put(t, e.sys, "b1", "building", "")
	now := e.clock.Now()
	tok := actors.AccessToken{ID: "t1", Name: "lobby", Role: "viewer", Under: "b1", Hash: "ab",
		Created: now, Expires: now.Add(time.Hour)}

	t.Run("refused", func(t *testing.T) {
		for name, bad := range map[string]actors.AccessToken{
			"no such under": {ID: "x", Role: "viewer", Under: "nope", Hash: "ab", Expires: now.Add(time.Hour)},
			"no hash":       {ID: "x", Role: "viewer", Expires: now.Add(time.Hour)},
			"no expiry":     {ID: "x", Role: "viewer", Hash: "ab"},
		} {
			if err := e.sys.PutToken(ctx(t), bad); !errors.Is(err, actors.ErrBadRequest) {
				t.Errorf("%s: %v, want bad request", name, err)
			}
		}
	})
	t.Run("create, list, revoke", func(t *testing.T) {
		before := changed.Load()
		if err := e.sys.PutToken(ctx(t), tok); err != nil {
			t.Fatal(err)
		}
		if changed.Load() == before {
			t.Error("watchers not told of a new token")
		}
		if err := e.sys.PutToken(ctx(t), tok); !errors.Is(err, actors.ErrConflict) {
			t.Errorf("same id again: %v, want conflict", err)
		}
		if got, ok := e.sys.Token("t1"); !ok || got.Hash != "ab" || got.Under != "b1" {
			t.Fatalf("Token(t1) = %+v, %v", got, ok)
		}
		if l := e.sys.Tokens(ctx(t)); len(l) != 1 || l[0].ID != "t1" {
			t.Fatalf("Tokens = %+v", l)
		}
		before = changed.Load()
		if err := e.sys.RevokeToken(ctx(t), "t1"); err != nil {
			t.Fatal(err)
		}
		if changed.Load() == before {
			t.Error("watchers not told of a revocation")
		}
		if got, ok := e.sys.Token("t1"); !ok || got.Revoked == nil || got.Active(e.clock.Now()) {
			t.Fatalf("revoked token reads %+v, %v", got, ok)
		}
		if l := e.sys.Tokens(ctx(t)); len(l) != 0 {
			t.Fatalf("Tokens after revocation = %+v", l)
		}
		if err := e.sys.RevokeToken(ctx(t), "t1"); err != nil {
			t.Errorf("revoke twice: %v, want nil (the record is sent again)", err)
		}
		if err := e.sys.RevokeToken(ctx(t), "nope"); !errors.Is(err, actors.ErrNotFound) {
			t.Errorf("revoke an unknown token: %v, want not found", err)
		}
	})
	t.Run("another member's change is loaded on CatalogChanged", func(t *testing.T) {
		other := tok
		other.ID = "t2"
		doc, _ := json.Marshal(other)
		if err := e.db.Commit(ctx(t), persistence.PutDoc(persistence.BucketTokens, "t2", doc)); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.sys.Token("t2"); ok {
			t.Fatal("token visible before CatalogChanged")
		}
		before := changed.Load()
		e.sys.CatalogChanged([]string{string(persistence.BucketTokens)})
		if _, ok := e.sys.Token("t2"); !ok {
			t.Fatal("token not loaded")
		}
		if changed.Load() == before {
			t.Error("watchers not told")
		}
	})
	t.Run("expired tokens are not listed, and go at the next creation", func(t *testing.T) {
		e.clock.Add(2 * time.Hour)
		if l := e.sys.Tokens(ctx(t)); len(l) != 0 {
			t.Fatalf("Tokens = %+v", l)
		}
		if err := e.sys.RevokeToken(ctx(t), "t2"); !errors.Is(err, actors.ErrNotFound) {
			t.Errorf("revoke an expired token: %v, want not found", err)
		}
		fresh := tok
		fresh.ID, fresh.Expires = "t3", e.clock.Now().Add(time.Hour)
		if err := e.sys.PutToken(ctx(t), fresh); err != nil {
			t.Fatal(err)
		}
		docs, err := e.db.ListDocs(persistence.BucketTokens, "")
		if err != nil || len(docs) != 1 || docs["t3"] == nil {
			t.Fatalf("stored tokens %v, %v; want only t3", docs, err)
		}
	})
	t.Run("loaded at start", func(t *testing.T) {
		e.stop()
		e2 := start(t, e.path, options{})
		if _, ok := e2.sys.Token("t3"); !ok {
			t.Fatal("token t3 not loaded at start")
		}
	})
}
