package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/api/authz"
)

// topo is a test Backend: an in-memory parent map and twins.
type topo struct {
	mu      sync.Mutex
	parents map[string]string
}

func (t *topo) GetTwin(_ context.Context, id string) (json.RawMessage, error) {
	if id == "ghost" {
		return nil, errcode.New(errcode.NotFound, "no twin ghost")
	}
	return json.RawMessage(`{"id":"` + id + `","version":1}`), nil
}
func (t *topo) PatchDesired(_ context.Context, id string, p json.RawMessage, v *int64) (json.RawMessage, error) {
	if v != nil && *v != 1 {
		return nil, fmt.Errorf("%w: twin %s is at version 1, not %d", errcode.ErrPrecondition, id, *v)
	}
	return json.RawMessage(`{"id":"` + id + `","version":2,"desired":` + string(p) + `}`), nil
}
func (t *topo) Invoke(ctx context.Context, id, m string, p json.RawMessage, _ time.Duration) (int, json.RawMessage, error) {
	if m == "slow" {
		<-ctx.Done()
		return 0, nil, errcode.New(errcode.Timeout, "device %s did not answer", id)
	}
	return 200, json.RawMessage(`{"echo":` + string(p) + `}`), nil
}
func (t *topo) Ancestors(_ context.Context, id string) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for p := t.parents[id]; p != ""; p = t.parents[p] {
		out = append(out, p)
	}
	return out, nil
}

func setup(t *testing.T, cfg Config) (*Hub, *topo, string) {
	t.Helper()
	tp := &topo{parents: map[string]string{"r1": "b1", "d1": "r1", "d2": "r2", "r2": "b2"}}
	if cfg.Authz == nil {
		cfg.Authz = authz.New(authz.Config{AdminToken: "tok", Tree: tp})
	}
	h := NewHub(cfg, tp)
	srv := httptest.NewServer(h)
	t.Cleanup(func() { h.Close(); srv.Close() })
	return h, tp, "ws" + strings.TrimPrefix(srv.URL, "http")
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url+"?access_token=tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *websocket.Conn, frame string) map[string]any {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	for {
		m := read(t, c)
		if _, isEvent := m["sub"]; isEvent && m["ok"] == nil {
			continue
		}
		return m
	}
}

func read(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAuth(t *testing.T) {
	_, _, url := setup(t, Config{})
	if _, res, err := websocket.DefaultDialer.Dial(url, nil); err == nil || res.StatusCode != 401 {
		t.Fatalf("no token: %v", err)
	}
	c, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer tok"}})
	if err != nil {
		t.Fatalf("bearer header: %v", err)
	}
	c.Close()
}

func TestNilAuthorizeRefusesEveryone(t *testing.T) {
	h := NewHub(Config{}, &topo{})
	srv := httptest.NewServer(h)
	t.Cleanup(func() { h.Close(); srv.Close() })
	res, err := http.Get(srv.URL + "?access_token=tok")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Error api.ErrorBody `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 401 || body.Error.Code != "unauthorized" || body.Error.Message == "" {
		t.Fatalf("%d %+v", res.StatusCode, body)
	}
}

// TestErrorRepliesAreRESTErrors: an op's error reply carries exactly what
// REST answers for the same error (api.ErrorOf), message included, so the
// two APIs have one vocabulary and neither adds a prefix.
func TestErrorRepliesAreRESTErrors(t *testing.T) {
	_, _, url := setup(t, Config{})
	c := dial(t, url)
	_, precondition := api.ErrorOf(fmt.Errorf("%w: twin d1 is at version 1, not 7", errcode.ErrPrecondition))
	_, notFound := api.ErrorOf(errcode.New(errcode.NotFound, "no twin ghost"))
	for frame, want := range map[string]api.ErrorBody{
		`{"id":1,"op":"get","entity":"ghost"}`:                              notFound,
		`{"id":2,"op":"patch","entity":"d1","desired":{"a":1},"version":7}`: precondition,
		`{"id":3,"op":"unsubscribe","sub":"s9"}`:                            {Code: "not_found", Message: "no subscription s9"},
		`{"id":4,"op":"get"}`:                                               {Code: "bad_request", Message: `bad frame: get needs "entity"`},
	} {
		m := send(t, c, frame)
		e, _ := m["error"].(map[string]any)
		if m["ok"] != false || e["code"] != want.Code || e["message"] != want.Message {
			t.Errorf("%s: reply %v, want error %+v", frame, m, want)
		}
	}
}

func TestOps(t *testing.T) {
	_, _, url := setup(t, Config{})
	c := dial(t, url)
	cases := []struct {
		name, frame string
		check       func(map[string]any) bool
	}{
		{"get", `{"id":1,"op":"get","entity":"d1"}`, func(m map[string]any) bool { return m["ok"] == true && m["twin"].(map[string]any)["id"] == "d1" }},
		{"get unknown", `{"id":2,"op":"get","entity":"ghost"}`, func(m map[string]any) bool {
			return m["ok"] == false && m["error"].(map[string]any)["code"] == "not_found"
		}},
		{"patch", `{"id":3,"op":"patch","entity":"d1","desired":{"fan":"on"},"version":1}`, func(m map[string]any) bool { return m["ok"] == true }},
		{"patch stale", `{"id":4,"op":"patch","entity":"d1","desired":{"fan":"on"},"version":7}`, func(m map[string]any) bool { return m["error"].(map[string]any)["code"] == "precondition_failed" }},
		{"invoke", `{"id":5,"op":"invoke","entity":"d1","method":"reboot","payload":{"a":1}}`, func(m map[string]any) bool { return m["ok"] == true && m["status"] == 200.0 }},
		{"invoke timeout", `{"id":6,"op":"invoke","entity":"d1","method":"slow","timeoutSeconds":5}`, func(m map[string]any) bool { return m["error"].(map[string]any)["code"] == "timeout" }},
		{"subscribe", `{"id":7,"op":"subscribe","entity":"b1","subtree":true}`, func(m map[string]any) bool { return m["ok"] == true && m["sub"] == "s1" }},
		{"unsubscribe unknown", `{"id":8,"op":"unsubscribe","sub":"s99"}`, func(m map[string]any) bool { return m["error"].(map[string]any)["code"] == "not_found" }},
		{"unsubscribe", `{"id":9,"op":"unsubscribe","sub":"s1"}`, func(m map[string]any) bool { return m["ok"] == true }},
		{"not json", `{"id":10,"op":`, func(m map[string]any) bool { return m["error"].(map[string]any)["code"] == "bad_request" }},
		{"unknown op", `{"id":11,"op":"dance"}`, func(m map[string]any) bool {
			e := m["error"].(map[string]any)
			return m["id"] == 11.0 && e["code"] == "bad_request" && e["message"] == `bad frame: unknown op "dance"`
		}},
		{"unknown event type", `{"id":12,"op":"subscribe","entity":"b1","events":["weather"]}`, func(m map[string]any) bool { return m["error"] != nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if m := send(t, c, tc.frame); !tc.check(m) {
				t.Fatalf("reply %v", m)
			}
		})
	}
}

func TestSubtreeEventsFollowTopology(t *testing.T) {
	h, tp, url := setup(t, Config{})
	c := dial(t, url)
	send(t, c, `{"id":1,"op":"subscribe","entity":"b1","subtree":true,"events":["telemetry"]}`)
	h.Publish(Event{Type: "telemetry", Entity: "d2", Version: 1}) // under b2: not seen
	h.Publish(Event{Type: "twin", Entity: "d1", Version: 1})      // wrong type: not seen
	h.Publish(Event{Type: "telemetry", Entity: "d1", Version: 2, Data: json.RawMessage(`{"t":1}`)})
	if m := read(t, c); m["entity"] != "d1" || m["version"] != 2.0 || m["sub"] != "s1" {
		t.Fatalf("event %v", m)
	}
	// d2 moves under b1: after the topology event, its events match.
	tp.mu.Lock()
	tp.parents["d2"] = "r1"
	tp.mu.Unlock()
	h.Publish(Event{Type: "topology", Entity: "d2"})
	h.Publish(Event{Type: "telemetry", Entity: "d2", Version: 3})
	if m := read(t, c); m["entity"] != "d2" {
		t.Fatalf("event after move %v", m)
	}
}

func TestSlowConsumerIsBoundedAndToldWhatItMissed(t *testing.T) {
	h, _, url := setup(t, Config{SendQueue: 16})
	c := dial(t, url)
	send(t, c, `{"id":1,"op":"subscribe","entity":"b1","subtree":true}`)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const entities, perEntity = 10, 10000
	for v := 1; v <= perEntity; v++ {
		for e := 0; e < entities; e++ {
			id := "d1"
			if e > 0 {
				id = fmt.Sprintf("x%d", e)
			}
			h.Publish(Event{Type: "telemetry", Entity: id, Version: int64(v), Data: json.RawMessage(`{"payload":"` + strings.Repeat("z", 100) + `"}`)})
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grow := int64(after.HeapInuse) - int64(before.HeapInuse); grow > 8<<20 {
		t.Fatalf("heap grew %d bytes for 100k events to a slow client", grow)
	}
	st := h.Stats()
	if st.Coalesced == 0 {
		t.Fatal("nothing coalesced")
	}
	// Only d1 is under b1 here (x* have no parents): the client sees d1's
	// events in version order, and the last one carries what it missed.
	last, seen := int64(0), int64(0)
	for last < perEntity {
		m := read(t, c)
		v := int64(m["version"].(float64))
		if testing.Verbose() && seen < 5 {
			t.Logf("got v=%d missed=%v", v, m["missed"])
		}
		if v <= last {
			t.Fatalf("version %d after %d (msg %v)", v, last, m)
		}
		missed, _ := m["missed"].(float64)
		seen += 1 + int64(missed)
		last = v
	}
	if seen != perEntity {
		t.Fatalf("delivered + missed = %d, want %d", seen, perEntity)
	}
}

func TestBadFrameFloodCloses(t *testing.T) {
	_, _, url := setup(t, Config{MaxBadFrames: 5})
	c := dial(t, url)
	for i := 0; i < 5; i++ {
		if m := send(t, c, `nonsense`); m["ok"] != false {
			t.Fatalf("reply %v", m)
		}
	}
	_ = c.WriteMessage(websocket.TextMessage, []byte("nonsense"))
	// The last error reply may or may not precede the close frame.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var err error
	for err == nil {
		_, _, err = c.ReadMessage()
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
		t.Fatalf("close = %v, want policy violation", err)
	}
}

func TestLimits(t *testing.T) {
	_, _, url := setup(t, Config{MaxSubscriptions: 2, MaxFrameBytes: 1024})
	c := dial(t, url)
	send(t, c, `{"id":1,"op":"subscribe","entity":"a"}`)
	send(t, c, `{"id":2,"op":"subscribe","entity":"b"}`)
	if m := send(t, c, `{"id":3,"op":"subscribe","entity":"c"}`); m["error"].(map[string]any)["code"] != "throttled" {
		t.Fatalf("third subscription %v", m)
	}
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{"id":4,"op":"get","entity":"`+strings.Repeat("x", 2000)+`"}`))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("oversize frame: %v", err)
	}
}

func TestPingKeepsAlive(t *testing.T) {
	_, _, url := setup(t, Config{PingInterval: 100 * time.Millisecond})
	c := dial(t, url)
	pings := 0
	c.SetPingHandler(func(string) error {
		pings++
		return c.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second))
	})
	_ = c.SetReadDeadline(time.Now().Add(600 * time.Millisecond))
	_, _, _ = c.ReadMessage() // times out; pings are handled meanwhile
	if pings < 3 {
		t.Fatalf("%d pings in 600ms", pings)
	}
}

func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{`{"id":1,"op":"subscribe","entity":"b1","subtree":true,"events":["twin"]}`,
		`{"id":"x","op":"patch","entity":"d","desired":{"a":1},"version":3}`, `{"id":2,"op":"invoke","entity":"d","method":"m","timeoutSeconds":400}`,
		`{}`, `[]`, `{"id":1,"op":"get","entity":"d"} {}`, `{"id":1,"op":"unsubscribe"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFrame(b)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) || errcode.Of(err) != errcode.BadRequest {
				t.Fatalf("error %v does not wrap ErrBadFrame as a bad request", err)
			}
			return
		}
		if len(fr.ID) == 0 || fr.Op == "" {
			t.Fatalf("accepted a frame without id or op: %s", b)
		}
		if fr.Op == "invoke" && (fr.TimeoutSeconds < 5 || fr.TimeoutSeconds > 300) {
			t.Fatalf("invoke timeout %d accepted", fr.TimeoutSeconds)
		}
	})
}

// Issue 12, item 12: the WebSocket checks the Origin of browser pages: its
// own origin and the allowed ones pass, others get 403; clients that send
// no Origin (not browsers) are authorized by their token alone.
func TestOriginCheck(t *testing.T) {
	_, _, url := setup(t, Config{AllowedOrigins: []string{"https://ops.example.com/"}})
	host := strings.TrimPrefix(url, "ws://")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + host, true},
		{"https://ops.example.com", true},
		{"https://OPS.example.com", true},
		{"https://evil.example", false},
		{"null", false},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, res, err := websocket.DefaultDialer.Dial(url+"?access_token=tok", h)
		if c != nil {
			c.Close()
		}
		if tc.ok && err != nil {
			t.Errorf("origin %q refused: %v", tc.origin, err)
		}
		if !tc.ok && (err == nil || res == nil || res.StatusCode != http.StatusForbidden) {
			t.Errorf("origin %q: %v, want 403", tc.origin, err)
		}
	}
	_, _, any := setup(t, Config{AllowedOrigins: []string{"*"}})
	c, _, err := websocket.DefaultDialer.Dial(any+"?access_token=tok", http.Header{"Origin": {"https://evil.example"}})
	if err != nil {
		t.Fatalf("with \"*\" allowed: %v", err)
	}
	c.Close()
}

// TestJobEvents: a subscription to "$jobs" receives the events of every
// job, one to "$jobs/<id>" those of that job, and neither an entity's.
func TestJobEvents(t *testing.T) {
	h, _, url := setup(t, Config{})
	c := dial(t, url)
	if m := send(t, c, `{"id":1,"op":"subscribe","entity":"$jobs","events":["job"]}`); m["ok"] != true {
		t.Fatalf("subscribe to $jobs: %v", m)
	}
	if m := send(t, c, `{"id":2,"op":"subscribe","entity":"$jobs/j2"}`); m["ok"] != true {
		t.Fatalf("subscribe to $jobs/j2: %v", m)
	}
	h.Publish(Event{Type: "twin", Entity: "d1", Version: 1}) // not a job: not seen
	h.Publish(Event{Type: "job", Entity: "$jobs/j1", Data: json.RawMessage(`{"jobId":"j1"}`)})
	if m := read(t, c); m["entity"] != "$jobs/j1" || m["sub"] != "s1" || m["type"] != "job" {
		t.Fatalf("event %v, want j1's on s1", m)
	}
	h.Publish(Event{Type: "job", Entity: "$jobs/j2"})
	got := map[any]bool{}
	for range 2 {
		m := read(t, c)
		if m["entity"] != "$jobs/j2" {
			t.Fatalf("event %v, want j2's", m)
		}
		got[m["sub"]] = true
	}
	if !got["s1"] || !got["s2"] {
		t.Fatalf("j2's event reached %v, want s1 and s2", got)
	}
}
