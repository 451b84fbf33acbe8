// Package plugintest runs a plugin kind's hooks without a cluster: a
// [Harness] hosts entities of the kinds under test in an in-memory store
// ([Store]), drives each entity's pure core (package actors/entity) exactly
// as the grain does — Step, apply the ops to the store, Commit, follow-ups —
// delivers the messages entities send one another, and fires durable
// timers on a virtual clock.
//
//	h := plugintest.New(t, thermostat.Thermostat{})
//	h.Create("t1", "thermostat", "")
//	h.Telemetry("t1", map[string]any{"temperature": 18})
//	h.Call("t1", "configure", map[string]any{"setpoint": 21, "interval": "1s"})
//	h.Advance(time.Second) // the timer fires
//	if h.Twin("t1").Desired["heater"] != "on" { … }
//
// Caveats: the clock moves only with [Harness.Advance]; messages are
// delivered in send order once the step that sent them committed (the
// cluster delivers them at most once and in no guaranteed order across
// senders); rules are not evaluated; a Harness is not safe for concurrent
// use.
package plugintest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/actors/twin"
)

// Epoch is the virtual clock's start.
var Epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// maxSteps bounds the work one call may cause (messages, timers), so a
// plugin that messages itself forever fails its test instead of hanging it.
const maxSteps = 100000

// Harness hosts entities of a set of kinds. Methods that deliver something
// return the error the entity answered (a plugin's error keeps its
// errcode, so errors.Is(err, plugin.ErrUnknownOp) works); failures of the
// harness itself fail the test.
type Harness struct {
	t     testing.TB
	reg   *plugin.Registry
	store *Store
	now   time.Time

	active map[string]*entity.Core
	// timers are the durable timers as the node's timer service holds
	// them: by entity, the list of the last committed result that
	// changed them. They survive Restart.
	timers map[string][]entity.DurableTimer
	// local are the grain's own (non-durable) timers: rollup flushes.
	local []localTimer

	queue    []delivery
	events   []entity.Event
	messages []Message
}

type localTimer struct {
	id  string
	due time.Time
}

type delivery struct {
	to string
	n  *actorspb.Notify
}

// Message is a plugin message one entity sent another (Ctx.Send).
type Message struct {
	From, To, Name string
	Payload        json.RawMessage
	// Delivered is false when the target did not exist.
	Delivered bool
}

// Twin is a snapshot of an entity's twin.
type Twin struct {
	Version                 int64
	Desired, Reported, Tags map[string]any
	Telemetry               map[string]twin.Point
	Connection              twin.Connection
	Rollup                  map[string]any
}

// Entity describes an entity to create: its kind, parent and tags.
type Entity struct {
	Kind, Parent, ConnectedVia string
	Tags                       map[string]any
}

// New returns a harness hosting kinds, with its clock at Epoch.
func New(t testing.TB, kinds ...plugin.Kind) *Harness {
	reg := plugin.NewRegistry()
	for _, k := range kinds {
		reg.Register(k)
	}
	return &Harness{t: t, reg: reg, store: NewStore(), now: Epoch,
		active: map[string]*entity.Core{}, timers: map[string][]entity.DurableTimer{}}
}

// Store returns the harness's store.
func (h *Harness) Store() *Store { return h.store }

// Now returns the virtual time.
func (h *Harness) Now() time.Time { return h.now }

// Create creates entity id of kind under parent ("" for none), failing the
// test if that is refused.
func (h *Harness) Create(id, kind, parent string) {
	h.t.Helper()
	if err := h.Put(id, Entity{Kind: kind, Parent: parent}); err != nil {
		h.t.Fatalf("plugintest: create %s %s: %v", kind, id, err)
	}
}

// Put creates or replaces entity id. Its kind must be one of the
// harness's; a parent or connectedVia must exist.
func (h *Harness) Put(id string, e Entity) error {
	h.t.Helper()
	if _, ok := h.reg.Lookup(e.Kind); !ok {
		h.t.Fatalf("plugintest: kind %q is not one the harness hosts (%v)", e.Kind, h.reg.Kinds())
	}
	for _, p := range []string{e.Parent, e.ConnectedVia} {
		if p != "" && !h.store.exists(p) {
			return errcode.New(errcode.BadRequest, "%s does not exist", p)
		}
	}
	put := &actorspb.PutEntity{Kind: e.Kind, Parent: e.Parent, ConnectedVia: e.ConnectedVia}
	if len(e.Tags) > 0 {
		put.Tags = h.json(e.Tags)
	}
	_, err := h.request(id, e.Kind, &actorspb.Request{Body: &actorspb.Request_PutEntity{PutEntity: put}})
	return err
}

// Delete deletes entity id.
func (h *Harness) Delete(id string) error {
	h.t.Helper()
	_, err := h.request(id, "", &actorspb.Request{Body: &actorspb.Request_Delete{Delete: &actorspb.Delete{}}})
	return err
}

// Telemetry delivers a telemetry message measured now. Numbers of any Go
// type become float64 points, as a device's JSON payload does.
func (h *Harness) Telemetry(id string, points map[string]any) error {
	h.t.Helper()
	var norm map[string]any
	if err := json.Unmarshal(h.json(points), &norm); err != nil {
		h.t.Fatalf("plugintest: telemetry points: %v", err)
	}
	in := &actorspb.Telemetry{Points: entity.PointsProto(norm)}
	_, err := h.request(id, "", &actorspb.Request{Body: &actorspb.Request_Telemetry{Telemetry: in}})
	return err
}

// PatchDesired applies a merge patch to the desired properties, as
// PATCH /twins/{id} does.
func (h *Harness) PatchDesired(id string, patch any) error {
	h.t.Helper()
	in := &actorspb.PatchTwin{Desired: h.json(patch)}
	_, err := h.request(id, "", &actorspb.Request{Body: &actorspb.Request_Patch{Patch: in}})
	return err
}

// PatchReported applies a merge patch to the reported properties, as a
// device does.
func (h *Harness) PatchReported(id string, patch any) error {
	h.t.Helper()
	in := &actorspb.PatchReported{Patch: h.json(patch)}
	_, err := h.request(id, "", &actorspb.Request{Body: &actorspb.Request_Reported{Reported: in}})
	return err
}

// Connect records a device's session as connected or not.
func (h *Harness) Connect(id string, connected bool) error {
	h.t.Helper()
	in := &actorspb.Connection{Connected: connected, Node: "plugintest"}
	_, err := h.request(id, "", &actorspb.Request{Body: &actorspb.Request_Connection{Connection: in}})
	return err
}

// Call runs operation name with args (JSON-encoded unless a
// json.RawMessage; nil means none) and returns its JSON result.
func (h *Harness) Call(id, name string, args any) (json.RawMessage, error) {
	h.t.Helper()
	var raw []byte
	switch a := args.(type) {
	case nil:
	case json.RawMessage:
		raw = a
	default:
		raw = h.json(a)
	}
	in := &actorspb.Call{Name: name, Args: raw}
	resp, err := h.request(id, "", &actorspb.Request{Body: &actorspb.Request_Call{Call: in}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Send delivers a plugin message to entity to as if entity from (which
// need not exist) had sent it.
func (h *Harness) Send(from, to, name string, payload any) {
	h.t.Helper()
	h.send(to, &entity.PluginMessage{From: from, Name: name, Payload: h.json(payload)})
	h.drain()
}

// Advance moves the clock on by d, firing every durable and local timer
// that falls due on the way, in due order, each at its due time.
func (h *Harness) Advance(d time.Duration) {
	h.t.Helper()
	end := h.now.Add(d)
	for n := 0; ; n++ {
		if n > maxSteps {
			h.t.Fatalf("plugintest: more than %d timers fired in one Advance", maxSteps)
		}
		id, name, due, ok := h.nextTimer(end)
		if !ok {
			break
		}
		if due.After(h.now) {
			h.now = due
		}
		if name == "" {
			h.local = slices.DeleteFunc(h.local, func(l localTimer) bool { return l.id == id && !l.due.After(due) })
			h.step(id, "", entity.RollupFlush{})
		} else {
			fire := &actorspb.TimerFire{Name: name, DueUnixNano: due.UnixNano()}
			h.step(id, "", &actorspb.Request{Body: &actorspb.Request_Timer{Timer: fire}})
		}
		h.drain()
	}
	h.now = end
}

// nextTimer returns the earliest timer due at or before end; name is ""
// for a local one.
func (h *Harness) nextTimer(end time.Time) (id, name string, due time.Time, ok bool) {
	consider := func(i, n string, d time.Time) {
		if !d.After(end) && (!ok || d.Before(due)) {
			id, name, due, ok = i, n, d, true
		}
	}
	for i, ts := range h.timers {
		for _, t := range ts {
			consider(i, t.Name, t.Due)
		}
	}
	for _, l := range h.local {
		consider(l.id, "", l.due)
	}
	return
}

// Passivate stops entity id's activation cleanly, as an idle grain does;
// the next message reloads it from the store.
func (h *Harness) Passivate(id string) {
	h.t.Helper()
	if _, ok := h.active[id]; ok {
		h.step(id, "", entity.Passivate{})
		h.deactivate(id)
		h.drain()
	}
}

// Restart drops every activation without flushing anything, as a crash of
// the node does; durable timers stay (the timer service keeps them) and
// the next message to an entity reloads it from the store.
func (h *Harness) Restart() {
	clear(h.active)
	h.local = nil
	h.queue = nil
}

// Twin returns a snapshot of entity id's twin (activating it if needed).
func (h *Harness) Twin(id string) Twin {
	h.t.Helper()
	c := h.core(id, "")
	if !c.Exists() {
		h.t.Fatalf("plugintest: entity %s does not exist", id)
	}
	tw := c.Twin()
	return Twin{Version: tw.Version(), Desired: tw.Section(twin.Desired), Reported: tw.Section(twin.Reported),
		Tags: tw.Section(twin.Tags), Telemetry: tw.Telemetry(), Connection: tw.Connection(), Rollup: tw.Rollup()}
}

// State returns the private state of entity id's plugin as committed to
// the store (nil if none).
func (h *Harness) State(id string) json.RawMessage {
	h.t.Helper()
	doc, err := h.store.Doc(entity.BucketGrains, id)
	if errors.Is(err, entity.ErrNotFound) {
		return nil
	}
	var rec struct {
		State json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(doc, &rec); err != nil {
		h.t.Fatalf("plugintest: plugin record of %s: %v", id, err)
	}
	return rec.State
}

// LoadState decodes the private state of entity id into v; it reports
// false when there is none.
func (h *Harness) LoadState(id string, v any) bool {
	h.t.Helper()
	st := h.State(id)
	if st == nil {
		return false
	}
	if err := json.Unmarshal(st, v); err != nil {
		h.t.Fatalf("plugintest: decode state of %s: %v", id, err)
	}
	return true
}

// Timers returns entity id's pending durable timers, by name.
func (h *Harness) Timers(id string) []entity.DurableTimer { return slices.Clone(h.timers[id]) }

// Events returns the events of entity id ("" for every entity) since the
// start or the last ClearEvents, in order.
func (h *Harness) Events(id string) []entity.Event {
	var out []entity.Event
	for _, e := range h.events {
		if id == "" || e.Entity == id {
			out = append(out, e)
		}
	}
	return out
}

// ClearEvents forgets the events recorded so far.
func (h *Harness) ClearEvents() { h.events = nil }

// Messages returns every plugin message sent so far, in order.
func (h *Harness) Messages() []Message { return slices.Clone(h.messages) }

// request delivers a request to id (of kind, or the stored kind when ""),
// then every message it caused, and returns the entity's answer.
func (h *Harness) request(id, kind string, req *actorspb.Request) (*actorspb.Response, error) {
	h.t.Helper()
	if _, ok := h.active[id]; !ok && kind == "" && !h.store.exists(id) {
		return nil, errcode.New(errcode.NotFound, "entity %s not found", id)
	}
	resp := h.step(id, kind, req)
	h.drain()
	if resp == nil {
		h.t.Fatalf("plugintest: no reply from %s to %T", id, req.Body)
	}
	if resp.Code != int32(errcode.OK) {
		return nil, &errcode.Error{Code: errcode.Code(resp.Code), Msg: resp.Message}
	}
	return resp, nil
}

// core returns entity id's activation, loading it (and running its
// activation) if needed. kind is needed only for an entity not yet stored.
func (h *Harness) core(id, kind string) *entity.Core {
	h.t.Helper()
	if c, ok := h.active[id]; ok {
		return c
	}
	if e, err := h.store.Entity(id); err == nil {
		kind = e.Kind
	}
	k, ok := h.reg.Lookup(kind)
	if !ok {
		h.t.Fatalf("plugintest: entity %s does not exist", id)
	}
	c := entity.New(entity.Config{Kind: kind, Traits: k.Info().Traits, Plugin: k}, h.store, id)
	if err := c.Load(context.Background(), h.now); err != nil {
		h.t.Fatalf("plugintest: load %s: %v", id, err)
	}
	h.active[id] = c
	if c.Exists() {
		h.timers[id] = c.Timers()
		h.run(id, c, c.Step(context.Background(), h.now, entity.Activated{}))
	}
	return c
}

// step runs one message through entity id and returns the first result's
// reply.
func (h *Harness) step(id, kind string, msg any) *actorspb.Response {
	h.t.Helper()
	c := h.core(id, kind)
	return h.run(id, c, c.Step(context.Background(), h.now, msg))
}

// run is the grain's loop: commit the ops, publish, send, then move the
// core on and run its follow-ups.
func (h *Harness) run(id string, c *entity.Core, res *entity.Result) *actorspb.Response {
	var reply *actorspb.Response
	for first := true; res != nil; first = false {
		if first {
			reply = res.Reply
		}
		h.store.Apply(res.Ops)
		h.events = append(h.events, res.Events...)
		for _, s := range res.Sends {
			h.sendFrom(id, s)
		}
		if res.TimersChanged {
			h.setTimers(id, res.DurableTimers)
		}
		if d := res.Timers.RollupAfter; d > 0 {
			h.local = append(h.local, localTimer{id: id, due: h.now.Add(d)})
		}
		stop := res.Stop
		res = c.Commit(context.Background(), h.now, res)
		if stop {
			h.deactivate(id)
		}
	}
	return reply
}

func (h *Harness) setTimers(id string, ts []entity.DurableTimer) {
	if len(ts) == 0 {
		delete(h.timers, id)
		return
	}
	ts = slices.Clone(ts)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	h.timers[id] = ts
}

func (h *Harness) deactivate(id string) {
	delete(h.active, id)
	h.local = slices.DeleteFunc(h.local, func(l localTimer) bool { return l.id == id })
}

// sendFrom queues what entity from sent.
func (h *Harness) sendFrom(from string, s entity.Send) {
	if s.ViaChildren() {
		for _, to := range h.store.via(from) {
			h.queue = append(h.queue, delivery{to, s.Notify(from)})
		}
		return
	}
	if s.Message != nil {
		h.send(s.To, s.Message)
		return
	}
	if h.store.exists(s.To) {
		h.queue = append(h.queue, delivery{s.To, s.Notify(from)})
	}
}

// send queues a plugin message and logs it.
func (h *Harness) send(to string, m *entity.PluginMessage) {
	ok := h.store.exists(to)
	h.messages = append(h.messages, Message{From: m.From, To: to, Name: m.Name, Payload: m.Payload, Delivered: ok})
	if ok {
		h.queue = append(h.queue, delivery{to, entity.Send{To: to, Message: m}.Notify(m.From)})
	}
}

// drain delivers queued notifications until none are left.
func (h *Harness) drain() {
	h.t.Helper()
	for n := 0; len(h.queue) > 0; n++ {
		if n > maxSteps {
			h.t.Fatalf("plugintest: more than %d messages after one call: do entities message each other forever?", maxSteps)
		}
		d := h.queue[0]
		h.queue = h.queue[1:]
		if h.store.exists(d.to) {
			h.step(d.to, "", d.n)
		}
	}
}

func (h *Harness) json(v any) []byte {
	h.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		h.t.Fatalf("plugintest: encode %T: %v", v, err)
	}
	return b
}
