package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/kinds"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/actors/twin"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/persistence"
)

// clock is a virtual clock tests advance by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type env struct {
	sys    *actors.System
	db     *persistence.DB
	clock  *clock
	path   string
	events *eventLog
}

type eventLog struct {
	mu sync.Mutex
	ev []actors.Event
}

func (l *eventLog) add(e actors.Event) { l.mu.Lock(); l.ev = append(l.ev, e); l.mu.Unlock() }
func (l *eventLog) of(entity, typ string) []actors.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []actors.Event
	for _, e := range l.ev {
		if e.Entity == entity && (typ == "" || e.Type == typ) {
			out = append(out, e)
		}
	}
	return out
}

type options struct {
	idle     time.Duration
	registry *plugin.Registry
	limits   twin.Limits
}

func start(t *testing.T, path string, o options) *env {
	t.Helper()
	db, err := persistence.Open(path, &persistence.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	prov, err := tmcluster.NewProvider(tmcluster.Config{NodeName: "t-" + filepath.Base(filepath.Dir(path)), GossipAddr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := &env{db: db, clock: clk, path: path, events: &eventLog{}}
	e.sys, err = actors.New(actors.Config{NodeName: "n1", Provider: prov, Store: db, IdleTimeout: o.idle,
		Registry: o.registry, Limits: o.limits, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.sys.OnEvent(e.events.add)
	if err := e.sys.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	sys := e.sys
	actionsDone := make(chan struct{})
	go func() { defer close(actionsDone); sys.RunActions(context.Background(), nil) }()
	t.Cleanup(func() { e.stop(); <-actionsDone })
	return e
}

func (e *env) stop() {
	if e.sys != nil {
		e.sys.Stop(false)
		_ = e.db.Close()
		e.sys = nil
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func put(t *testing.T, s *actors.System, id, kind, parent string) {
	t.Helper()
	if _, _, err := s.PutEntity(ctx(t), id, actors.EntitySpec{Kind: kind, Parent: parent}); err != nil {
		t.Fatalf("put %s: %v", id, err)
	}
}

type twinView struct {
	Version  int64          `json:"version"`
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
	Tags     map[string]any `json:"tags"`
	Rollup   map[string]any `json:"rollup"`
	Telem    map[string]struct {
		Value any `json:"value"`
	} `json:"telemetry"`
	Connection struct {
		State string `json:"state"`
		Node  string `json:"node"`
	} `json:"connection"`
}

func get(t *testing.T, s *actors.System, id string) twinView {
	t.Helper()
	doc, _, err := s.GetTwin(ctx(t), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	var v twinView
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func waitRollup(t *testing.T, s *actors.System, id string, devices, connected int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last map[string]any
	for time.Now().Before(deadline) {
		last = get(t, s, id).Rollup
		if last["devices"] == float64(devices) && last["connected"] == float64(connected) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("rollup of %s = %v, want devices=%d connected=%d", id, last, devices, connected)
}

func TestTopologyRollupsFollowChanges(t *testing.T) {
	e := start(t, filepath.Join(t.TempDir(), "db"), options{})
	s := e.sys
	put(t, s, "b1", "building", "")
	put(t, s, "f1", "floor", "b1")
	put(t, s, "r1", "room", "f1")
	put(t, s, "r2", "room", "f1")
	put(t, s, "gw", "gateway", "r1")
	for _, d := range []string{"d1", "d2", "d3"} {
		put(t, s, d, "device", "r1")
	}
	if _, _, err := s.PutEntity(ctx(t), "d3", actors.EntitySpec{Kind: "device", Parent: "r1", ConnectedVia: "gw"}); err != nil {
		t.Fatal(err)
	}
	waitRollup(t, s, "b1", 4, 0)
	waitRollup(t, s, "r1", 4, 0)
	waitRollup(t, s, "gw", 1, 0)

	if err := s.SetConnection(ctx(t), "d1", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetConnection(ctx(t), "d3", true); err != nil {
		t.Fatal(err)
	}
	waitRollup(t, s, "b1", 4, 2)
	waitRollup(t, s, "gw", 1, 1)
	if c := get(t, s, "d1").Connection; c.State != "connected" || c.Node != "n1" {
		t.Fatalf("connection = %+v", c)
	}

	// Moving a device moves its contribution.
	put(t, s, "d1", "device", "r2")
	waitRollup(t, s, "r1", 3, 1)
	waitRollup(t, s, "r2", 1, 1)
	waitRollup(t, s, "b1", 4, 2)

	// Deleting refuses a parent with children unless recursive.
	if _, err := s.DeleteEntity(ctx(t), "r1", false); !errors.Is(err, actors.ErrConflict) {
		t.Fatalf("delete room with children: %v, want ErrConflict", err)
	}
	if _, err := s.DeleteEntity(ctx(t), "d2", false); err != nil {
		t.Fatal(err)
	}
	waitRollup(t, s, "b1", 3, 2)
	n, err := s.DeleteEntity(ctx(t), "r1", true)
	if err != nil || n != 4 { // r1, gw, d3 and r1 itself... r1 has gw, d3 → 3 plus r1
		if err != nil || n != 3 {
			t.Fatalf("recursive delete: n=%d err=%v", n, err)
		}
	}
	waitRollup(t, s, "b1", 1, 1)
	if _, _, err := s.GetTwin(ctx(t), "d3"); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("deleted twin: %v", err)
	}

	// Refusals.
	cases := []struct {
		name string
		id   string
		spec actors.EntitySpec
		want error
	}{
		{"unknown kind", "x", actors.EntitySpec{Kind: "spaceship"}, actors.ErrBadRequest},
		{"missing parent", "x", actors.EntitySpec{Kind: "room", Parent: "nope"}, actors.ErrBadRequest},
		{"cycle", "b1", actors.EntitySpec{Kind: "building", Parent: "f1"}, actors.ErrConflict},
		{"kind change", "f1", actors.EntitySpec{Kind: "room", Parent: "b1"}, actors.ErrConflict},
		{"bad id", "a/b", actors.EntitySpec{Kind: "room"}, actors.ErrBadRequest},
		{"via non-gateway", "x", actors.EntitySpec{Kind: "device", ConnectedVia: "b1"}, actors.ErrBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := s.PutEntity(ctx(t), tc.id, tc.spec); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestPatchVersionsLimitsAndEvents(t *testing.T) {
	e := start(t, filepath.Join(t.TempDir(), "db"), options{limits: twin.Limits{MaxSectionBytes: 256, MaxDepth: 3}})
	s := e.sys
	put(t, s, "d1", "device", "")
	v0 := get(t, s, "d1").Version
	doc, v1, err := s.PatchTwin(ctx(t), "d1", actors.PatchBody{Desired: json.RawMessage(`{"fan":"on"}`)}, &v0)
	if err != nil || v1 != v0+1 || !strings.Contains(string(doc), `"fan":"on"`) {
		t.Fatalf("patch: v=%d err=%v doc=%s", v1, err, doc)
	}
	if _, _, err := s.PatchTwin(ctx(t), "d1", actors.PatchBody{Desired: json.RawMessage(`{"fan":"off"}`)}, &v0); !errors.Is(err, actors.ErrPrecondition) {
		t.Fatalf("stale If-Match: %v", err)
	}
	big := fmt.Sprintf(`{"blob":%q}`, strings.Repeat("x", 300))
	if _, _, err := s.PatchTwin(ctx(t), "d1", actors.PatchBody{Desired: json.RawMessage(big)}, nil); !errors.Is(err, actors.ErrTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	if _, _, err := s.PatchTwin(ctx(t), "d1", actors.PatchBody{Desired: json.RawMessage(`{"a":{"b":{"c":{"d":1}}}}`)}, nil); !errors.Is(err, actors.ErrTooLarge) {
		t.Fatalf("too deep: %v", err)
	}
	// A valid desired with an invalid tags patch changes nothing.
	if _, _, err := s.PatchTwin(ctx(t), "d1", actors.PatchBody{Desired: json.RawMessage(`{"ok":1}`), Tags: json.RawMessage(`[1]`)}, nil); !errors.Is(err, actors.ErrBadRequest) {
		t.Fatalf("bad tags: %v", err)
	}
	after := get(t, s, "d1")
	if after.Version != v1 || after.Desired["fan"] != "on" || after.Desired["ok"] != nil {
		t.Fatalf("refused patches changed the twin: %+v", after)
	}
	ver, err := s.PatchReported(ctx(t), "d1", []byte(`{"fan":"on","fw":"1.2"}`))
	if err != nil || ver != 1 {
		t.Fatalf("reported: %d %v", ver, err)
	}
	if _, err := s.PatchReported(ctx(t), "d1", []byte(`not json`)); !errors.Is(err, actors.ErrBadRequest) {
		t.Fatalf("malformed reported: %v", err)
	}
	// Tags patches reach the topology store, so tag queries see them.
	if _, _, err := s.PatchTwin(ctx(t), "d1", actors.PatchBody{Tags: json.RawMessage(`{"site":"north"}`)}, nil); err != nil {
		t.Fatal(err)
	}
	twins, _, err := s.QueryTwins(ctx(t), persistence.EntityFilter{Tags: map[string]string{"site": "north"}}, "", 10)
	if err != nil || len(twins) != 1 {
		t.Fatalf("query by tag: %d %v", len(twins), err)
	}
	// Twin events arrive in version order.
	evs := e.events.of("d1", actors.EventTwin)
	for i := 1; i < len(evs); i++ {
		if evs[i].Version <= evs[i-1].Version {
			t.Fatalf("events out of order: %d after %d", evs[i].Version, evs[i-1].Version)
		}
	}
	if len(evs) < 3 {
		t.Fatalf("got %d twin events", len(evs))
	}
}

func TestPassivationAndRestartKeepState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	e := start(t, path, options{idle: time.Second})
	s := e.sys
	put(t, s, "b1", "building", "")
	put(t, s, "r1", "room", "b1")
	put(t, s, "d1", "device", "r1")
	if err := s.Telemetry(ctx(t), "d1", actors.TelemetryIn{Points: map[string]any{"temperature": 21.5}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PatchTwin(ctx(t), "d1", actors.PatchBody{Desired: json.RawMessage(`{"x":1}`)}, nil); err != nil {
		t.Fatal(err)
	}
	want := get(t, s, "d1")
	deadline := time.Now().Add(15 * time.Second)
	for s.ActiveGrains() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.ActiveGrains(); n != 0 {
		t.Fatalf("%d grains still active after the idle timeout", n)
	}
	got := get(t, s, "d1")
	if got.Version != want.Version || got.Desired["x"] != float64(1) || got.Telem["temperature"].Value != 21.5 {
		t.Fatalf("re-activated twin differs: %+v vs %+v", got, want)
	}
	e.stop()
	e2 := start(t, path, options{})
	got = get(t, e2.sys, "d1")
	if got.Version != want.Version {
		t.Fatalf("after restart version %d, want %d", got.Version, want.Version)
	}
	waitRollup(t, e2.sys, "b1", 1, 0)
	recs, err := e2.sys.TelemetryHistory(ctx(t), "d1", persistence.TelemetryQuery{Name: "temperature"})
	if err != nil || len(recs) != 1 || recs[0].Points["temperature"] != 21.5 {
		t.Fatalf("warm store: %v %v", recs, err)
	}
}

// A stale rollup (as a crash between a child's commit and its parent's
// update would leave) is repaired when the aggregates are touched at start.
func TestTouchRepairsStaleRollup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	e := start(t, path, options{})
	put(t, e.sys, "b1", "building", "")
	put(t, e.sys, "r1", "room", "b1")
	put(t, e.sys, "d1", "device", "r1")
	waitRollup(t, e.sys, "b1", 1, 0)
	e.stop()
	// Forge the crash: a second device's contribution is on disk, but no
	// ancestor was told.
	db, err := persistence.Open(path, &persistence.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := db.Commit(context.Background(),
		persistence.PutEntity(persistence.Entity{ID: "d2", Kind: "device", Parent: "r1", CreatedAt: now, UpdatedAt: now}),
		persistence.PutDoc(persistence.BucketContrib, "r1/c/d2", []byte(`{"devices":1,"connected":0}`))); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	e2 := start(t, path, options{})
	if n, err := e2.sys.Touch(ctx(t)); err != nil || n != 2 {
		t.Fatalf("touch: %d %v", n, err)
	}
	waitRollup(t, e2.sys, "b1", 2, 0)
}

// thermostat is a third-party plugin kind: a device that derives a comfort
// point and refuses impossible temperatures.
type thermostat struct{ activations *atomic.Int64 }

func (thermostat) Info() plugin.Info { return plugin.Info{Name: "thermostat", Traits: plugin.Device} }
func (t thermostat) OnActivate(*plugin.Ctx) error {
	t.activations.Add(1)
	return nil
}
func (thermostat) OnTelemetry(_ *plugin.Ctx, p map[string]any) (map[string]any, error) {
	temp, ok := p["temperature"].(float64)
	if !ok {
		return p, nil
	}
	if temp < -100 || temp > 200 {
		return nil, fmt.Errorf("temperature %v out of range", temp)
	}
	out := map[string]any{"comfortable": temp >= 19 && temp <= 24}
	for k, v := range p {
		out[k] = v
	}
	return out, nil
}

func TestPluginKind(t *testing.T) {
	reg := plugin.NewRegistry()
	reg.Register(kinds.Device{})
	reg.Register(kinds.Space{Name: "room"})
	th := thermostat{activations: &atomic.Int64{}}
	reg.Register(th)
	e := start(t, filepath.Join(t.TempDir(), "db"), options{registry: reg})
	put(t, e.sys, "r1", "room", "")
	if _, _, err := e.sys.RegisterDevice(ctx(t), "t1", "thermostat", &actors.EntitySpec{Parent: "r1"}); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Telemetry(ctx(t), "t1", actors.TelemetryIn{Points: map[string]any{"temperature": 21.0}}); err != nil {
		t.Fatal(err)
	}
	if v := get(t, e.sys, "t1").Telem["comfortable"].Value; v != true {
		t.Fatalf("derived point = %v", v)
	}
	if err := e.sys.Telemetry(ctx(t), "t1", actors.TelemetryIn{Points: map[string]any{"temperature": 900.0}}); !errors.Is(err, actors.ErrBadRequest) {
		t.Fatalf("plugin refusal: %v", err)
	}
	if th.activations.Load() == 0 {
		t.Fatal("Activate not called")
	}
	waitRollup(t, e.sys, "r1", 1, 0)
	defer func() {
		if recover() == nil {
			t.Fatal("duplicate kind did not panic")
		}
	}()
	reg.Register(thermostat{})
}

func TestInbox(t *testing.T) {
	e := start(t, filepath.Join(t.TempDir(), "db"), options{})
	s := e.sys
	if _, _, err := s.RegisterDevice(ctx(t), "d1", "", nil); err != nil {
		t.Fatal(err)
	}
	m1, err := s.SendMessage(ctx(t), "d1", actors.OutgoingMessage{Payload: []byte("hello"), Properties: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.SendMessage(ctx(t), "d1", actors.OutgoingMessage{Payload: []byte("short"), TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.events.of("d1", actors.EventInbox)) != 2 {
		t.Fatal("no inbox events")
	}
	e.clock.Add(2 * time.Minute)
	pending, err := s.PendingMessages(ctx(t), "d1")
	if err != nil || len(pending) != 1 || pending[0].ID != m1.ID {
		t.Fatalf("pending = %+v %v", pending, err)
	}
	if err := s.MessageDelivered(ctx(t), "d1", m1.ID); err != nil {
		t.Fatal(err)
	}
	all, _ := s.Messages(ctx(t), "d1")
	states := map[string]int{}
	for _, m := range all {
		states[m.State]++
	}
	if states["delivered"] != 1 || states["expired"] != 1 {
		t.Fatalf("outcomes = %v", states)
	}
	for i := 0; i < actors.MaxPendingPerDevice; i++ {
		if _, err := s.SendMessage(ctx(t), "d1", actors.OutgoingMessage{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SendMessage(ctx(t), "d1", actors.OutgoingMessage{Payload: []byte("x")}); !errors.Is(err, actors.ErrThrottled) {
		t.Fatalf("over the cap: %v", err)
	}
	if _, err := s.SendMessage(ctx(t), "d1", actors.OutgoingMessage{Payload: []byte("x"), TTL: 72 * time.Hour}); !errors.Is(err, actors.ErrBadRequest) {
		t.Fatalf("ttl over max: %v", err)
	}
	if _, err := s.SendMessage(ctx(t), "nobody", actors.OutgoingMessage{Payload: []byte("x")}); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
}

func TestGatewayChildrenUnreachable(t *testing.T) {
	e := start(t, filepath.Join(t.TempDir(), "db"), options{})
	s := e.sys
	put(t, s, "r1", "room", "")
	put(t, s, "gw", "gateway", "r1")
	if _, _, err := s.PutEntity(ctx(t), "c1", actors.EntitySpec{Kind: "device", Parent: "r1", ConnectedVia: "gw"}); err != nil {
		t.Fatal(err)
	}
	state := func(id string) string { return get(t, s, id).Connection.State }
	if err := s.SetConnection(ctx(t), "gw", true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for state("c1") != "connected" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if state("c1") != "connected" {
		t.Fatalf("child of an online gateway is %q", state("c1"))
	}
	waitRollup(t, s, "r1", 2, 2)
	if err := s.SetConnection(ctx(t), "gw", false); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for state("c1") != "unreachable" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if state("c1") != "unreachable" {
		t.Fatalf("child of an offline gateway is %q", state("c1"))
	}
	waitRollup(t, s, "r1", 2, 0)
}
