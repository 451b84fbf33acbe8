package entity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// memStore is an in-memory Reader that applies ops, as a store would.
type memStore struct {
	ents  map[string]record.Entity
	twins map[string][]byte
	docs  map[string]map[string][]byte
	tel   map[string][]record.TelemetryRecord
	inbox map[string]map[string]record.InboxMessage
	// failNext makes the next apply fail, as a fenced or unreachable
	// commit would.
	failNext bool
}

func newMem() *memStore {
	return &memStore{ents: map[string]record.Entity{}, twins: map[string][]byte{}, docs: map[string]map[string][]byte{},
		tel: map[string][]record.TelemetryRecord{}, inbox: map[string]map[string]record.InboxMessage{}}
}

func (m *memStore) Entity(id string) (record.Entity, error) {
	e, ok := m.ents[id]
	if !ok {
		return e, ErrNotFound
	}
	return e, nil
}
func (m *memStore) TwinDoc(id string) ([]byte, error) {
	d, ok := m.twins[id]
	if !ok {
		return nil, ErrNotFound
	}
	return d, nil
}
func (m *memStore) Doc(b, k string) ([]byte, error) {
	d, ok := m.docs[b][k]
	if !ok {
		return nil, ErrNotFound
	}
	return d, nil
}
func (m *memStore) Docs(b, prefix string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for k, v := range m.docs[b] {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out, nil
}
func (m *memStore) HasChildren(id string) (bool, error) {
	for _, e := range m.ents {
		if e.Parent == id {
			return true, nil
		}
	}
	return false, nil
}
func (m *memStore) Telemetry(_ context.Context, id string, from time.Time, limit int) ([]record.TelemetryRecord, error) {
	var out []record.TelemetryRecord
	recs := m.tel[id]
	for i := len(recs) - 1; i >= 0 && len(out) < limit; i-- {
		if !recs[i].TS.Before(from) {
			out = append(out, recs[i])
		}
	}
	return out, nil
}
func (m *memStore) Inbox(id string) ([]record.InboxMessage, error) {
	var out []record.InboxMessage
	for _, v := range m.inbox[id] {
		out = append(out, v)
	}
	return out, nil
}

var errCommit = errors.New("commit refused")

func (m *memStore) apply(ops []Op) error {
	if m.failNext {
		m.failNext = false
		return errCommit
	}
	for _, o := range ops {
		switch o.Kind {
		case OpPutTwin:
			m.twins[o.Key] = o.Doc
		case OpPutEntity:
			m.ents[o.Key] = o.Entity
		case OpDeleteEntity:
			delete(m.ents, o.Key)
			delete(m.twins, o.Key)
		case OpAppendTelemetry:
			m.tel[o.Key] = append(m.tel[o.Key], o.Telemetry)
		case OpPutDoc:
			if m.docs[o.Bucket] == nil {
				m.docs[o.Bucket] = map[string][]byte{}
			}
			m.docs[o.Bucket][o.Key] = o.Doc
		case OpDeleteDoc:
			delete(m.docs[o.Bucket], o.Key)
		case OpPutInbox:
			if m.inbox[o.Key] == nil {
				m.inbox[o.Key] = map[string]record.InboxMessage{}
			}
			m.inbox[o.Key][o.Inbox.ID] = o.Inbox
		case OpDeleteInbox:
			delete(m.inbox[o.Key], o.Msg)
		}
	}
	return nil
}

// run drives a core the way the grain does and returns the reply, every
// result (the first one first) and the commit error, if any.
func run(t *testing.T, m *memStore, c *Core, now time.Time, msg any) (*actorspb.Response, []*Result, error) {
	t.Helper()
	ctx := context.Background()
	res := c.Step(ctx, now, msg)
	var reply *actorspb.Response
	var all []*Result
	for first := true; res != nil; first = false {
		all = append(all, res)
		if err := m.apply(res.Ops); err != nil {
			c.Abort(res)
			return nil, all, err
		}
		if first {
			reply = res.Reply
		}
		res = c.Commit(ctx, now, res)
	}
	return reply, all, nil
}

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func newCore(t *testing.T, m *memStore, id, kind string, traits Traits, opts ...func(*Config)) *Core {
	t.Helper()
	cfg := Config{Kind: kind, Traits: traits, Limits: twin.DefaultLimits()}
	for _, o := range opts {
		o(&cfg)
	}
	c := New(cfg, m, id)
	if err := c.Load(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	return c
}

func put(kind, parent string) *actorspb.Request {
	return &actorspb.Request{Body: &actorspb.Request_PutEntity{PutEntity: &actorspb.PutEntity{Kind: kind, Parent: parent}}}
}

func telemetry(mid string, pts map[string]any) *actorspb.Request {
	return &actorspb.Request{Body: &actorspb.Request_Telemetry{Telemetry: &actorspb.Telemetry{Points: PointsProto(pts), MessageId: mid}}}
}

func desired(patch string, ifVersion *int64) *actorspb.Request {
	return &actorspb.Request{Body: &actorspb.Request_Patch{Patch: &actorspb.PatchTwin{Desired: []byte(patch), IfVersion: ifVersion}}}
}

func connection(on bool) *actorspb.Request {
	return &actorspb.Request{Body: &actorspb.Request_Connection{Connection: &actorspb.Connection{Connected: on, Node: "n1"}}}
}

// TestVersionCoversWhatClientsWrite is CONTRACT section 4 as a table: which
// messages move the twin version.
func TestVersionCoversWhatClientsWrite(t *testing.T) {
	reported := &actorspb.Request{Body: &actorspb.Request_Reported{Reported: &actorspb.PatchReported{Patch: []byte(`{"fw":"2"}`)}}}
	tags := &actorspb.Request{Body: &actorspb.Request_Patch{Patch: &actorspb.PatchTwin{Tags: []byte(`{"site":"b1"}`)}}}
	for _, tc := range []struct {
		name  string
		msg   *actorspb.Request
		moves bool
	}{
		{"telemetry", telemetry("", map[string]any{"t": 21.5}), false},
		{"connect", connection(true), false},
		{"disconnect", connection(false), false},
		{"desired patch", desired(`{"fan":"on"}`, nil), true},
		{"reported patch", reported, true},
		{"tags patch", tags, true},
		{"no-op desired patch", desired(`{}`, nil), false},
		{"move to another parent", put("device", "r2"), true},
		{"same entity again", put("device", "r1"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem()
			m.ents["r1"] = record.Entity{ID: "r1", Kind: "room"}
			m.ents["r2"] = record.Entity{ID: "r2", Kind: "room"}
			c := newCore(t, m, "d1", "device", Device)
			if _, _, err := run(t, m, c, t0, put("device", "r1")); err != nil {
				t.Fatal(err)
			}
			before := c.Twin().Version()
			reply, _, err := run(t, m, c, t0.Add(time.Second), tc.msg)
			if err != nil || reply.Code != 0 {
				t.Fatalf("step: %v %v", err, reply)
			}
			if moved := c.Twin().Version() != before; moved != tc.moves {
				t.Fatalf("version %d → %d, want moved=%v", before, c.Twin().Version(), tc.moves)
			}
		})
	}
}

func TestIfMatchSurvivesLiveState(t *testing.T) {
	m := newMem()
	c := newCore(t, m, "d1", "device", Device)
	run(t, m, c, t0, put("device", ""))
	v := c.Twin().Version()
	run(t, m, c, t0.Add(time.Second), telemetry("", map[string]any{"t": 1.0}))
	run(t, m, c, t0.Add(2*time.Second), connection(true))
	reply, _, _ := run(t, m, c, t0.Add(3*time.Second), desired(`{"a":1}`, &v))
	if reply.Code != 0 {
		t.Fatalf("If-Match after telemetry and connect: %v", reply)
	}
	stale := v
	reply, _, _ = run(t, m, c, t0.Add(4*time.Second), desired(`{"a":2}`, &stale))
	if errcode.Code(reply.Code) != errcode.Precondition || strings.Count(reply.Message, "version") > 2 {
		t.Fatalf("stale If-Match: %v", reply)
	}
}

// TestStateMovesOnlyOnCommit: a result whose commit fails leaves the core
// as it was, so a retransmission after a failed commit is stored.
func TestStateMovesOnlyOnCommit(t *testing.T) {
	m := newMem()
	c := newCore(t, m, "d1", "device", Device)
	run(t, m, c, t0, put("device", ""))
	for _, tc := range []struct {
		name string
		msg  *actorspb.Request
	}{
		{"telemetry", telemetry("m1", map[string]any{"t": 30.0})},
		{"desired", desired(`{"x":1}`, nil)},
		{"connection", connection(true)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := c.Twin().MarshalJSON()
			m.failNext = true
			if _, _, err := run(t, m, c, t0.Add(time.Second), tc.msg); !errors.Is(err, errCommit) {
				t.Fatalf("commit error = %v", err)
			}
			after, _ := c.Twin().MarshalJSON()
			if string(before) != string(after) {
				t.Fatalf("state moved without a commit:\n%s\n%s", before, after)
			}
		})
	}
	// m1 was never stored: its retransmission must be.
	_, res, err := run(t, m, c, t0.Add(2*time.Second), telemetry("m1", map[string]any{"t": 30.0}))
	if err != nil || len(res) == 0 || len(res[0].Ops) == 0 {
		t.Fatalf("retransmission after a failed commit was not stored: %v", err)
	}
	// Now it was: a second retransmission stores nothing.
	_, res, _ = run(t, m, c, t0.Add(3*time.Second), telemetry("m1", map[string]any{"t": 30.0}))
	if len(res) != 1 || len(res[0].Ops) != 0 {
		t.Fatalf("duplicate stored again: %+v", res)
	}
	if n := len(m.tel["d1"]); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

func TestTelemetryTimestampsIncrease(t *testing.T) {
	m := newMem()
	c := newCore(t, m, "d1", "device", Device)
	run(t, m, c, t0, put("device", ""))
	for i := 0; i < 3; i++ {
		run(t, m, c, t0, telemetry("", map[string]any{"n": float64(i)}))
	}
	recs := m.tel["d1"]
	for i := 1; i < len(recs); i++ {
		if !recs[i].TS.After(recs[i-1].TS) {
			t.Fatalf("record %d at %v not after %v", i, recs[i].TS, recs[i-1].TS)
		}
	}
}

func TestRollupFromContributions(t *testing.T) {
	m := newMem()
	m.ents["d1"] = record.Entity{ID: "d1", Kind: "device", Parent: "r1"}
	room := newCore(t, m, "r1", "room", Rollup)
	run(t, m, room, t0, put("room", ""))
	v := room.Twin().Version()
	n := &actorspb.Notify{From: "d1", Body: &actorspb.Notify_Contrib{Contrib: Contribution{Devices: 1, Connected: 1,
		Points: map[string]PointAgg{"t": {Min: 20, Max: 20, Sum: 20, Count: 1}}}.proto(edgeContains, false)}}
	_, res, err := run(t, m, room, t0.Add(time.Minute), n)
	if err != nil || len(res) < 2 {
		t.Fatalf("contribution: %v, %d results", err, len(res))
	}
	r := room.Twin().Rollup()
	if r["devices"] != 1.0 || r["connected"] != 1.0 || r["t"].(map[string]any)["avg"] != 20.0 {
		t.Fatalf("rollup = %v", r)
	}
	if room.Twin().Version() != v {
		t.Fatal("a rollup change moved the version")
	}
	// A second contribution right after is debounced: a timer, no flush.
	_, res, _ = run(t, m, room, t0.Add(time.Minute+time.Millisecond), n)
	if len(res) != 1 || res[0].Timers.RollupAfter <= 0 {
		t.Fatalf("debounce: %+v", res)
	}
}

func TestDeviceContributesOnTelemetry(t *testing.T) {
	m := newMem()
	m.ents["r1"] = record.Entity{ID: "r1", Kind: "room"}
	c := newCore(t, m, "d1", "device", Device)
	_, res, _ := run(t, m, c, t0, put("device", "r1"))
	if len(res[0].Sends) != 1 || res[0].Sends[0].To != "r1" {
		t.Fatalf("create sends %+v", res[0].Sends)
	}
	_, res, _ = run(t, m, c, t0.Add(time.Second), telemetry("", map[string]any{"t": 22.0}))
	var con Contribution
	if err := json.Unmarshal(m.docs[BucketContrib][ContribKey("r1", edgeContains, "d1")], &con); err != nil || con.Points["t"].Sum != 22 {
		t.Fatalf("stored contribution %+v %v", con, err)
	}
	sent := false
	for _, r := range res {
		for _, s := range r.Sends {
			sent = sent || (s.To == "r1" && s.Contrib != nil)
		}
	}
	if !sent {
		t.Fatal("contribution not sent to the room")
	}
}

func TestDelete(t *testing.T) {
	m := newMem()
	c := newCore(t, m, "r1", "room", Rollup)
	run(t, m, c, t0, put("room", ""))
	m.ents["d1"] = record.Entity{ID: "d1", Kind: "device", Parent: "r1"}
	reply, _, _ := run(t, m, c, t0, &actorspb.Request{Body: &actorspb.Request_Delete{Delete: &actorspb.Delete{}}})
	if errcode.Code(reply.Code) != errcode.Conflict {
		t.Fatalf("delete with children: %v", reply)
	}
	delete(m.ents, "d1")
	reply, res, _ := run(t, m, c, t0, &actorspb.Request{Body: &actorspb.Request_Delete{Delete: &actorspb.Delete{}}})
	if reply.Code != 0 || !res[0].Stop || c.Exists() {
		t.Fatalf("delete: %v stop=%v exists=%v", reply, res[0].Stop, c.Exists())
	}
	if _, ok := m.docs[BucketTombstones]["entity/r1"]; !ok {
		t.Fatal("no tombstone")
	}
	reply, _, _ = run(t, m, c, t0, &actorspb.Request{Body: &actorspb.Request_Get{Get: &actorspb.Get{}}})
	if errcode.Code(reply.Code) != errcode.NotFound {
		t.Fatalf("get after delete: %v", reply)
	}
}

func TestInboxCap(t *testing.T) {
	m := newMem()
	c := newCore(t, m, "d1", "device", Device)
	run(t, m, c, t0, put("device", ""))
	n := 0
	send := func() *actorspb.Request {
		n++
		return &actorspb.Request{Body: &actorspb.Request_InboxSend{InboxSend: &actorspb.InboxSend{
			Id: fmt.Sprintf("m%d", n), Payload: []byte("x"), TtlNanos: int64(time.Hour)}}}
	}
	for i := 0; i < MaxPendingPerDevice; i++ {
		if reply, _, _ := run(t, m, c, t0, send()); reply.Code != 0 {
			t.Fatalf("message %d: %v", i, reply)
		}
	}
	if reply, _, _ := run(t, m, c, t0, send()); errcode.Code(reply.Code) != errcode.Throttled {
		t.Fatalf("over the cap: %v", reply)
	}
	// An hour later they expired, and there is room again.
	if reply, _, _ := run(t, m, c, t0.Add(2*time.Hour), send()); reply.Code != 0 {
		t.Fatalf("after expiry: %v", reply)
	}
}

func TestRuleRaisesAlertAfterCommit(t *testing.T) {
	m := newMem()
	r, err := rules.Parse([]byte(`{"id":"hot","scope":{"kind":"device"},"when":"telemetry.t > 28",
		"then":[{"alert":{"severity":"major","message":"too hot"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := newCore(t, m, "d1", "device", Device, func(cfg *Config) { cfg.Rules = func() []*rules.Rule { return []*rules.Rule{r} } })
	run(t, m, c, t0, put("device", ""))
	_, res, _ := run(t, m, c, t0.Add(time.Second), telemetry("", map[string]any{"t": 30.0}))
	if len(res) < 2 {
		t.Fatalf("no follow-up result: %d", len(res))
	}
	if _, ok := m.docs[BucketAlerts]["hot/d1"]; !ok {
		t.Fatal("alert not stored")
	}
	var refs []alertRef
	_ = json.Unmarshal(c.Twin().Alerts(), &refs)
	if len(refs) != 1 || refs[0].Severity != "major" {
		t.Fatalf("twin alerts %v", refs)
	}
}

// counter is a plugin kind with an operation, a durable timer and state.
type counter struct{}

func (counter) Operation(ctx *Ctx, name string, args json.RawMessage) (any, error) {
	switch name {
	case "arm":
		ctx.After("tick", time.Minute)
		return "armed", nil
	case "fail":
		return nil, errors.New("no such thing")
	}
	return nil, errcode.New(errcode.UnknownOp, "no %s", name)
}

func (counter) OnTimer(ctx *Ctx, name string) error {
	var n int
	_, _ = ctx.LoadState(&n)
	if err := ctx.SetState(n + 1); err != nil {
		return err
	}
	return ctx.PatchDesired(map[string]any{"ticks": n + 1})
}

func TestPluginOperationsAndTimers(t *testing.T) {
	m := newMem()
	c := newCore(t, m, "c1", "counter", Device, func(cfg *Config) { cfg.Plugin = counter{} })
	run(t, m, c, t0, put("counter", ""))
	call := func(name string) *actorspb.Response {
		reply, _, _ := run(t, m, c, t0, &actorspb.Request{Body: &actorspb.Request_Call{Call: &actorspb.Call{Name: name}}})
		return reply
	}
	if r := call("nope"); errcode.Code(r.Code) != errcode.UnknownOp {
		t.Fatalf("unknown op: %v", r)
	}
	if r := call("fail"); errcode.Code(r.Code) != errcode.BadRequest {
		t.Fatalf("failing op: %v", r)
	}
	if r := call("arm"); r.Code != 0 || string(r.Body) != `"armed"` {
		t.Fatalf("arm: %v", r)
	}
	if ts := c.Timers(); len(ts) != 1 || !ts[0].Due.Equal(t0.Add(time.Minute)) {
		t.Fatalf("timers %v", ts)
	}
	// The record is durable: a new activation sees the timer.
	c2 := newCore(t, m, "c1", "counter", Device, func(cfg *Config) { cfg.Plugin = counter{} })
	if len(c2.Timers()) != 1 {
		t.Fatal("timer not reloaded")
	}
	fire := &actorspb.Request{Body: &actorspb.Request_Timer{Timer: &actorspb.TimerFire{Name: "tick"}}}
	run(t, m, c2, t0.Add(30*time.Second), fire) // early: ignored
	if c2.Twin().Section(twin.Desired)["ticks"] != nil {
		t.Fatal("early fire ran the timer")
	}
	run(t, m, c2, t0.Add(time.Minute), fire)
	run(t, m, c2, t0.Add(time.Minute), fire) // repeated: ignored
	if got := c2.Twin().Section(twin.Desired)["ticks"]; got != 1.0 {
		t.Fatalf("ticks = %v", got)
	}
	if len(c2.Timers()) != 0 {
		t.Fatal("fired timer still set")
	}
}

func TestCreationIsOneVersion(t *testing.T) {
	for _, tags := range []string{"", `{"site":"b1"}`} {
		m := newMem()
		c := newCore(t, m, "d1", "device", Device)
		req := put("device", "")
		req.GetPutEntity().Tags = []byte(tags)
		if reply, _, err := run(t, m, c, t0, req); err != nil || reply.Code != 0 {
			t.Fatalf("create: %v %v", err, reply)
		}
		if v := c.Twin().Version(); v != 1 {
			t.Fatalf("tags %q: version after creation = %d, want 1", tags, v)
		}
	}
}

// A conditional disconnection (a node sweeping the sessions it held before
// a crash, or a dead member's) applies only while the twin says the device
// is connected to that node: a session opened elsewhere since is kept.
func TestConditionalDisconnect(t *testing.T) {
	m := newMem()
	c := newCore(t, m, "d1", "device", Device)
	run(t, m, c, t0, put("device", ""))
	run(t, m, c, t0.Add(time.Second), connection(true)) // on n1
	sweep := func(node string) *actorspb.Request {
		return &actorspb.Request{Body: &actorspb.Request_Connection{Connection: &actorspb.Connection{Node: node, OnlyIfNode: node}}}
	}
	for _, tc := range []struct {
		node, want string
	}{{"n2", "connected"}, {"n1", "disconnected"}, {"n1", "disconnected"}} {
		if _, _, err := run(t, m, c, t0.Add(2*time.Second), sweep(tc.node)); err != nil {
			t.Fatal(err)
		}
		if got := c.Twin().Connection().State; got != tc.want {
			t.Fatalf("after a sweep for %s: %s, want %s", tc.node, got, tc.want)
		}
	}
}

// A disconnection that names a protocol applies only while the twin's
// connection names the same one (or none): a CoAP presence ending does not
// hide the MQTT session the device opened since, and the twin shows the
// protocol of the session it records.
func TestProtocolDisconnect(t *testing.T) {
	m := newMem()
	c := newCore(t, m, "d1", "device", Device)
	run(t, m, c, t0, put("device", ""))
	conn := func(connected bool, proto string) *actorspb.Request {
		return &actorspb.Request{Body: &actorspb.Request_Connection{Connection: &actorspb.Connection{Connected: connected, Node: "n1", Protocol: proto}}}
	}
	for i, tc := range []struct {
		req         *actorspb.Request
		state, prot string
	}{
		{conn(true, "coap"), "connected", "coap"},
		{conn(true, "mqtt"), "connected", "mqtt"},
		{conn(false, "coap"), "connected", "mqtt"},
		{conn(false, "mqtt"), "disconnected", "mqtt"},
		{conn(true, "coaps"), "connected", "coaps"},
		{conn(false, ""), "disconnected", ""},
	} {
		if _, _, err := run(t, m, c, t0.Add(time.Duration(i+1)*time.Second), tc.req); err != nil {
			t.Fatal(err)
		}
		if got := c.Twin().Connection(); got.State != tc.state || got.Protocol != tc.prot {
			t.Fatalf("step %d: %s over %q, want %s over %q", i, got.State, got.Protocol, tc.state, tc.prot)
		}
	}
}
