package ws

import (
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/api/authz"
)

// tokens is an in-memory token store.
type tokens struct {
	mu sync.Mutex
	m  map[string]actors.AccessToken
}

func (s *tokens) Token(id string) (actors.AccessToken, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[id]
	return t, ok
}

// TestScopedToken: a viewer token for b1 may subscribe and get inside b1
// only, may not patch, invoke or call, nor follow jobs, gets no events of
// other subtrees,
// and its connection closes when Revalidate finds it revoked.
func TestScopedToken(t *testing.T) {
	store := &tokens{m: map[string]actors.AccessToken{}}
	tok, id, hash, err := authz.Mint(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	store.m[id] = actors.AccessToken{ID: id, Role: "viewer", Under: "b1", Hash: hash, Expires: time.Now().Add(time.Hour)}
	// The same tree as setup's backend.
	tp := &topo{parents: map[string]string{"r1": "b1", "d1": "r1", "d2": "r2", "r2": "b2"}}
	hub, _, url := setup(t, Config{Authz: authz.New(authz.Config{AdminToken: "tok", Tokens: store, Tree: tp})})
	c, _, err := websocket.DefaultDialer.Dial(url+"?access_token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	code := func(m map[string]any) string {
		if m["ok"] == true {
			return "ok"
		}
		e, _ := m["error"].(map[string]any)
		s, _ := e["code"].(string)
		return s
	}
	for frame, want := range map[string]string{
		`{"id":1,"op":"subscribe","entity":"b1","subtree":true}`: "ok",
		`{"id":1,"op":"subscribe","entity":"d1"}`:                "ok",
		`{"id":1,"op":"subscribe","entity":"d2"}`:                "forbidden",
		`{"id":1,"op":"subscribe","entity":"b2","subtree":true}`: "forbidden",
		`{"id":1,"op":"get","entity":"d1"}`:                      "ok",
		`{"id":1,"op":"get","entity":"d2"}`:                      "forbidden",
		`{"id":1,"op":"get","entity":"ghost"}`:                   "forbidden",
		`{"id":1,"op":"patch","entity":"d1","desired":{"a":1}}`:  "forbidden",
		`{"id":1,"op":"invoke","entity":"d1","method":"m"}`:      "forbidden",
		`{"id":1,"op":"call","entity":"d1","name":"echo"}`:       "forbidden",
		`{"id":1,"op":"unsubscribe","sub":"s99"}`:                "not_found",
		`{"id":1,"op":"subscribe","entity":"$jobs"}`:             "forbidden",
		`{"id":1,"op":"subscribe","entity":"$jobs/j1"}`:          "forbidden",
	} {
		if got := code(send(t, c, frame)); got != want {
			t.Errorf("%s: %s, want %s", frame, got, want)
		}
	}
	hub.Publish(Event{Type: "twin", Entity: "d2", Version: 1})
	hub.Publish(Event{Type: "twin", Entity: "d1", Version: 1})
	m := read(t, c)
	if m["entity"] != "d1" {
		t.Fatalf("first event %v, want d1's (d2 is outside the scope)", m)
	}
	// Revoked: Revalidate closes the connection.
	store.mu.Lock()
	rec := store.m[id]
	now := time.Now()
	rec.Revoked = &now
	store.m[id] = rec
	store.mu.Unlock()
	hub.Revalidate()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err == nil {
			t.Logf("before the close: %s", b)
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
			t.Fatalf("read after revocation: %v, want close 1008", err)
		}
		break
	}
}
