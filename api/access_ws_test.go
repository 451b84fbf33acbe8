package api_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// wsCase is one op of the WebSocket matrix; {w} is "in" or "out".
type wsCase struct {
	op, need, frame string
	only            string
}

var wsCases = []wsCase{
	{op: "subscribe", need: "viewer", frame: `{"id":1,"op":"subscribe","entity":"{w}-d"}`},
	{op: "subscribe", need: "viewer", frame: `{"id":1,"op":"subscribe","entity":"{w}-b","subtree":true}`},
	{op: "unsubscribe", need: "viewer", frame: `{"id":1,"op":"unsubscribe","sub":"{sub}"}`, only: "in"},
	{op: "get", need: "viewer", frame: `{"id":1,"op":"get","entity":"{w}-d"}`},
	{op: "patch", need: "operator", frame: `{"id":1,"op":"patch","entity":"{w}-d","desired":{"ws":{n}}}`},
	{op: "invoke", need: "operator", frame: `{"id":1,"op":"invoke","entity":"{w}-d","method":"reboot"}`},
	{op: "call", need: "operator", frame: `{"id":1,"op":"call","entity":"{w}-calc","name":"nothing"}`},
}

// TestAccessWebSocketMatrix sends every WebSocket op, inside and outside
// the scope, as every kind of caller: allowed ops answer ok, the others
// the forbidden code, and the connection stays open.
func TestAccessWebSocketMatrix(t *testing.T) {
	e := newAccessEnv(t)
	for _, who := range callers {
		t.Run(who.name, func(t *testing.T) {
			c, st := e.dial(t, e.tokens[who.name])
			if st != 101 {
				t.Fatalf("upgrade answered %d", st)
			}
			for _, tc := range wsCases {
				for _, w := range []string{"in", "out"} {
					if tc.only != "" && tc.only != w {
						continue
					}
					vars := map[string]string{}
					if tc.op == "unsubscribe" {
						vars["sub"] = request(t, c, `{"id":0,"op":"subscribe","entity":"in-d"}`, nil).Sub
					}
					frame := expand(tc.frame, w, fmt.Sprint(e.next()), vars)
					r := request(t, c, frame, nil)
					rc := restCase{need: tc.need, ok: 200}
					switch want := rc.want(who, w); {
					case want == 200 && !r.OK:
						t.Errorf("%s: refused: %s", frame, r.raw)
					case want == 403 && (r.OK || r.Error == nil || r.Error.Code != "forbidden"):
						t.Errorf("%s: %s, want forbidden", frame, r.raw)
					}
					if !who.whole && r.OK {
						leak(t, who.name, frame, r.raw)
					}
				}
			}
		})
	}
}

// collector reads a connection's event frames until it closes.
type collector struct {
	mu     sync.Mutex
	events []wsReply
	closed chan struct{}
	err    error
}

func collect(c *websocket.Conn) *collector {
	col := &collector{closed: make(chan struct{})}
	_ = c.SetReadDeadline(time.Time{})
	go func() {
		defer close(col.closed)
		for {
			var r wsReply
			if err := c.ReadJSON(&r); err != nil {
				col.err = err
				return
			}
			col.mu.Lock()
			col.events = append(col.events, r)
			col.mu.Unlock()
		}
	}()
	return col
}

func (col *collector) has(typ, entity string) bool {
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, r := range col.events {
		if r.Type == typ && r.Entity == entity {
			return true
		}
	}
	return false
}

// TestAccessWebSocketEvents: a scoped caller's subscriptions deliver the
// events of its subtree and nothing else, also after an entity it
// subscribed to moves out, and a deletion inside reaches it.
func TestAccessWebSocketEvents(t *testing.T) {
	e := newAccessEnv(t)
	a := e.admin
	a.MustDo(t, "PUT", "/api/v1/entities/in-mv", `{"kind":"room","parent":"in-r"}`, 201)
	a.MustDo(t, "PUT", "/api/v1/entities/in-del", `{"kind":"room","parent":"in-r"}`, 201)
	cols := map[string]*collector{}
	for _, who := range callers {
		c, _ := e.dial(t, e.tokens[who.name])
		for _, f := range []string{`{"id":1,"op":"subscribe","entity":"in-b","subtree":true}`, `{"id":2,"op":"subscribe","entity":"in-mv"}`} {
			if r := request(t, c, f, nil); !r.OK {
				t.Fatalf("%s: %s: %s", who.name, f, r.raw)
			}
		}
		if who.whole {
			if r := request(t, c, `{"id":3,"op":"subscribe","entity":"out-b","subtree":true}`, nil); !r.OK {
				t.Fatalf("%s: %s", who.name, r.raw)
			}
		}
		cols[who.name] = collect(c)
	}
	a.MustDo(t, "PATCH", "/api/v1/twins/out-d", `{"desired":{"x":1}}`, 200)
	a.MustDo(t, "PUT", "/api/v1/entities/in-mv", `{"kind":"room","parent":"out-r"}`, 200)
	a.MustDo(t, "PATCH", "/api/v1/twins/in-mv", `{"desired":{"x":2}}`, 200)
	a.MustDo(t, "DELETE", "/api/v1/entities/in-del", nil, 200)
	a.MustDo(t, "PATCH", "/api/v1/twins/in-d", `{"desired":{"x":3}}`, 200)
	// The admin token's connection sees everything; once it has the last
	// event, every connection was offered all of them.
	ctl := cols["admin-token"]
	testutil.Eventually(t, 5*time.Second, "the admin token's events", func() bool {
		return ctl.has("twin", "out-d") && ctl.has("twin", "in-mv") && ctl.has("topology", "in-del") && ctl.has("twin", "in-d")
	})
	for _, who := range callers {
		col := cols[who.name]
		testutil.Eventually(t, 5*time.Second, who.name+" gets the events inside", func() bool {
			return col.has("twin", "in-d") && col.has("topology", "in-del")
		})
		if who.whole {
			continue
		}
		time.Sleep(100 * time.Millisecond) // let the writer drain what it was offered
		col.mu.Lock()
		for _, r := range col.events {
			if r.Entity == "in-mv" || r.Entity == "out-d" || r.Entity == "out-b" || r.Entity == "out-r" {
				t.Errorf("%s got an event of %s, outside its scope: %+v", who.name, r.Entity, r)
			}
		}
		col.mu.Unlock()
	}
}

// TestAccessRevocationAndExpiry: revoking a token closes its open
// WebSocket within a second and refuses its next request; an expired token
// is refused and its WebSocket closed.
func TestAccessRevocationAndExpiry(t *testing.T) {
	e := newAccessEnv(t)
	tok, id := e.mint(t, "viewer", "in-b", "1h")
	c, st := e.dial(t, tok)
	if st != 101 {
		t.Fatalf("upgrade %d", st)
	}
	if r := request(t, c, `{"id":1,"op":"subscribe","entity":"in-b","subtree":true}`, nil); !r.OK {
		t.Fatal(string(r.raw))
	}
	col := collect(c)
	e.as("viewer").MustDo(t, "GET", "/api/v1/twins/in-d", nil, 200, "Authorization", "Bearer "+tok)
	self := string(e.as("viewer").MustDo(t, "GET", "/api/v1/tokens/self", nil, 200, "Authorization", "Bearer "+tok))
	if !strings.Contains(self, `"role":"viewer"`) || !strings.Contains(self, `"under":"in-b"`) || !strings.Contains(self, id) {
		t.Errorf("tokens/self = %s", self)
	}
	start := time.Now()
	e.admin.MustDo(t, "DELETE", "/api/v1/tokens/"+id, nil, 204)
	select {
	case <-col.closed:
	case <-time.After(time.Second):
		t.Fatal("the WebSocket of the revoked token is open a second after the revocation")
	}
	t.Logf("revoked token's WebSocket closed %v after the DELETE", time.Since(start))
	var ce *websocket.CloseError
	if !errors.As(col.err, &ce) || ce.Code != websocket.ClosePolicyViolation {
		t.Errorf("closed with %v, want close code %d", col.err, websocket.ClosePolicyViolation)
	}
	e.as("viewer").MustDo(t, "GET", "/api/v1/twins/in-d", nil, 401, "Authorization", "Bearer "+tok)
	if _, st := e.dial(t, tok); st != 401 {
		t.Errorf("upgrade with the revoked token: %d, want 401", st)
	}
	// Only the active tokens are listed, without secrets.
	list := string(e.admin.MustDo(t, "GET", "/api/v1/tokens", nil, 200))
	if strings.Contains(list, id) || strings.Contains(list, tok) || strings.Contains(list, "hash") {
		t.Errorf("token list %s shows the revoked token or a secret", list)
	}

	minted := time.Now()
	short, _ := e.mint(t, "viewer", "in-b", "2s")
	c, st = e.dial(t, short)
	if st != 101 {
		t.Fatalf("upgrade with a token for 2 s, %v after minting it: %d", time.Since(minted), st)
	}
	col = collect(c)
	select {
	case <-col.closed:
		if d := time.Since(minted); d < 2*time.Second {
			t.Fatalf("closed %v after minting, before the token expired", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the WebSocket of an expired token is still open")
	}
	e.as("viewer").MustDo(t, "GET", "/api/v1/twins/in-d", nil, 401, "Authorization", "Bearer "+short)

	// The lifetime is bounded by --max-token-lifetime (48h here).
	e.admin.MustDo(t, "POST", "/api/v1/tokens", `{"role":"viewer","under":"in-b","ttl":"49h"}`, 400)
	for name, body := range map[string]string{
		"no such entity": `{"role":"viewer","under":"nowhere"}`,
		"no under":       `{"role":"operator"}`,
		"bad role":       `{"role":"root","under":"in-b"}`,
		"bad ttl":        `{"role":"viewer","under":"in-b","ttl":"soon"}`,
		"negative ttl":   `{"role":"viewer","under":"in-b","ttl":"-1h"}`,
	} {
		if st, _, out, _ := e.admin.Do(t.Context(), "POST", "/api/v1/tokens", body); st != 400 {
			t.Errorf("%s: %d %s, want 400", name, st, out)
		}
	}
	e.admin.MustDo(t, "POST", "/api/v1/tokens", `{"role":"admin"}`, 201) // whole tree
	e.admin.MustDo(t, "DELETE", "/api/v1/tokens/0000000000000000", nil, 404)
}
