package api_test

// The fixture of the access tests (CONTRACT section 13): a node with two
// buildings, "in-b" (the scope of every scoped token) and "out-b", the
// same entities in each, and one token per kind of caller. Every entity
// outside the scope is named "out-…", so that a scoped caller's answers
// can be searched for any of them.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/api/authz"
	"github.com/twinmesh/twinmesh/api/ws"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/persistence"
	"github.com/twinmesh/twinmesh/protocols/streams"
)

// caller is a kind of caller of the matrix.
type caller struct {
	name  string
	rank  int  // 1 viewer, 2 operator, 3 admin
	whole bool // scope is the whole tree
}

// callers: every role, scoped to in-b, an admin token for the whole tree,
// and the node's admin token.
var callers = []caller{
	{"viewer", 1, false},
	{"operator", 2, false},
	{"admin-scoped", 3, false},
	{"admin-whole", 3, true},
	{"admin-token", 3, true},
}

type accessEnv struct {
	sys    *actors.System
	srv    *api.Server
	url    string
	admin  *testutil.Client
	tokens map[string]string // caller → token
	ids    map[string]string // caller → token ID ("" for the admin token)
	mids   map[string]string // device → a cloud-to-device message ID
	seq    atomic.Int64
}

// wsBackend serves the hub from the System, as the node does.
type wsBackend struct{ sys *actors.System }

func (b wsBackend) GetTwin(ctx context.Context, id string) (json.RawMessage, error) {
	doc, _, err := b.sys.GetTwin(ctx, id)
	return doc, err
}
func (b wsBackend) PatchDesired(ctx context.Context, id string, p json.RawMessage, v *int64) (json.RawMessage, error) {
	doc, _, err := b.sys.PatchTwin(ctx, id, actors.PatchBody{Desired: p}, v)
	return doc, err
}
func (b wsBackend) Invoke(ctx context.Context, id, m string, p json.RawMessage, _ time.Duration) (int, json.RawMessage, error) {
	if _, err := b.sys.Identity(ctx, id); err != nil {
		return 0, nil, err
	}
	return 200, json.RawMessage(`{"method":"` + m + `"}`), nil
}
func (b wsBackend) Ancestors(ctx context.Context, id string) ([]string, error) {
	return b.sys.Ancestors(ctx, id)
}
func (b wsBackend) Call(ctx context.Context, id, name string, args json.RawMessage) (json.RawMessage, error) {
	return b.sys.Call(ctx, id, name, args)
}

// echoMethods answers every direct method with 200.
type echoMethods struct{}

func (echoMethods) InvokeMethod(_ context.Context, _, method string, _ []byte) (int, []byte, error) {
	return 200, []byte(`{"method":"` + method + `"}`), nil
}

// offline is a stream Signaller for which no device is connected.
type offline struct{}

func (offline) RequestStream(_ context.Context, id, _, _, _ string) (int, error) {
	return 0, errcode.New(errcode.NotConnected, "device %s is not connected", id)
}

func newAccessEnv(t *testing.T) *accessEnv {
	t.Helper()
	db, err := persistence.Open(filepath.Join(t.TempDir(), "twinmesh.db"), &persistence.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	prov, err := tmcluster.NewProvider(tmcluster.Config{NodeName: "access-test", GossipAddr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := plugin.Default().Clone()
	kinds.Register(calc{})
	reg := prometheus.NewRegistry()
	sys, err := actors.New(actors.Config{NodeName: "access-test", Provider: prov, Store: db, Registerer: reg, Registry: kinds})
	if err != nil {
		t.Fatal(err)
	}
	guard := authz.New(authz.Config{AdminToken: token, Tokens: sys, Tree: sys})
	hub := ws.NewHub(ws.Config{Authz: guard}, wsBackend{sys})
	sys.OnEvent(func(e actors.Event) {
		hub.Publish(ws.Event{Type: e.Type, Entity: e.Entity, Version: e.Version, Data: e.Data, TS: e.TS})
	})
	sys.OnTokensChanged(hub.Revalidate)
	if err := sys.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	broker, err := streams.New(streams.Config{Signaller: offline{}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Token: token, Authz: guard, System: sys, Registerer: reg, Gatherer: reg,
		MaxTokenLifetime: 48 * time.Hour, Methods: echoMethods{}, Streams: broker,
		SignToken: func(id, key string, ttl time.Duration) (string, time.Time, error) {
			return "sas-for-" + id, time.Now().Add(ttl), nil
		},
		ForgetMember: func(context.Context, string) error { return nil },
		Backup:       func(w io.Writer) (int64, error) { n, err := w.Write([]byte("copy")); return int64(n), err },
		Extra: func(mux *http.ServeMux, auth func(http.Handler) http.Handler) {
			mux.Handle("GET /api/v1/ws", hub)
			mux.Handle("GET /debug/extra", auth(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte("extra"))
			})))
		}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hub.Close()
		hs.Close()
		sys.Stop(false)
		_ = db.Close()
	})
	e := &accessEnv{sys: sys, srv: srv, url: hs.URL, admin: &testutil.Client{Base: hs.URL, Token: token, HTTP: hs.Client()},
		tokens: map[string]string{"admin-token": token}, ids: map[string]string{"admin-token": ""}, mids: map[string]string{}}
	a := e.admin
	a.MustDo(t, "PUT", "/api/v1/rules/hot", `{"scope":{"kind":"device"},"when":"telemetry.temperature > 40","then":[{"alert":{"severity":"major","message":"hot"}}]}`, 201)
	for _, w := range []string{"in", "out"} {
		a.MustDo(t, "PUT", "/api/v1/entities/"+w+"-b", `{"kind":"building"}`, 201)
		a.MustDo(t, "PUT", "/api/v1/entities/"+w+"-r", `{"kind":"room","parent":"`+w+`-b"}`, 201)
		a.MustDo(t, "PUT", "/api/v1/devices/"+w+"-d", `{"parent":"`+w+`-r"}`, 201)
		a.MustDo(t, "PUT", "/api/v1/devices/"+w+"-g", `{"parent":"`+w+`-r"}`, 201)
		a.MustDo(t, "PUT", "/api/v1/entities/"+w+"-calc", `{"kind":"calc","parent":"`+w+`-r"}`, 201)
		var m struct{ MessageID string }
		_ = json.Unmarshal(a.MustDo(t, "POST", "/api/v1/devices/"+w+"-d/messages", `{"payload":"hi","ttlSeconds":3600}`, 202), &m)
		e.mids[w+"-d"] = m.MessageID
		e.raise(t, w+"-d")
	}
	for _, c := range callers[:4] {
		under := "in-b"
		if c.whole {
			under = ""
		}
		role := map[int]string{1: "viewer", 2: "operator", 3: "admin"}[c.rank]
		e.tokens[c.name], e.ids[c.name] = e.mint(t, role, under, "")
	}
	return e
}

// mint creates an access token as the admin token; it returns the token
// and its ID.
func (e *accessEnv) mint(t *testing.T, role, under, ttl string) (string, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"role": role, "under": under, "ttl": ttl, "name": role + " test"})
	var out struct{ Token, ID string }
	if err := json.Unmarshal(e.admin.MustDo(t, "POST", "/api/v1/tokens", body, 201), &out); err != nil || out.Token == "" || out.ID == "" {
		t.Fatalf("minted %+v, %v", out, err)
	}
	return out.Token, out.ID
}

// raise makes the "hot" alert of device id active (clearing it first).
func (e *accessEnv) raise(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	for _, v := range []float64{20, 45} {
		if err := e.sys.Telemetry(ctx, id, actors.TelemetryIn{TS: time.Now(), Points: map[string]any{"temperature": v}}); err != nil {
			t.Fatalf("telemetry of %s: %v", id, err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "alert hot/"+id+" active", func() bool {
		a, err := e.sys.Alert(ctx, "hot/"+id)
		return err == nil && a.State == "active"
	})
}

// as returns a client for caller name's token.
func (e *accessEnv) as(name string) *testutil.Client {
	return &testutil.Client{Base: e.url, Token: e.tokens[name], HTTP: e.admin.HTTP}
}

// next returns a number not used before, for fresh IDs.
func (e *accessEnv) next() int64 { return e.seq.Add(1) }

// dial opens the WebSocket with tok; it returns the HTTP status when the
// upgrade is refused.
func (e *accessEnv) dial(t *testing.T, tok string) (*websocket.Conn, int) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(e.url, "http") + "/api/v1/ws?access_token=" + tok
	c, res, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		if res == nil {
			t.Fatalf("dial: %v", err)
		}
		return nil, res.StatusCode
	}
	t.Cleanup(func() { c.Close() })
	return c, 101
}

// wsReply is a reply or an event frame.
type wsReply struct {
	ID     json.RawMessage `json:"id"`
	OK     bool            `json:"ok"`
	Sub    string          `json:"sub"`
	Type   string          `json:"type"`
	Entity string          `json:"entity"`
	Error  *api.ErrorBody  `json:"error"`
	raw    []byte
}

// request sends a frame and returns its reply, collecting the events read
// on the way into events (when not nil).
func request(t *testing.T, c *websocket.Conn, frame string, events *[]wsReply) wsReply {
	t.Helper()
	var f struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal([]byte(frame), &f); err != nil {
		t.Fatalf("bad test frame %s", frame)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading the reply to %s: %v", frame, err)
		}
		var r wsReply
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		r.raw = b
		if r.Type != "" {
			if events != nil {
				*events = append(*events, r)
			}
			continue
		}
		if bytes.Equal(r.ID, f.ID) {
			return r
		}
		t.Fatalf("reply %s to another frame than %s", b, frame)
	}
}

// leak fails the test when a scoped caller's answer names an entity
// outside its scope.
func leak(t *testing.T, who, what string, body []byte) {
	t.Helper()
	if bytes.Contains(body, []byte(`out-`)) {
		t.Errorf("%s: %s answered an entity outside its scope: %.300s", who, what, body)
	}
}
