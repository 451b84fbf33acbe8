package entity

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/twin"
)

// The plugin capabilities as the core calls them. Package actors/plugin
// documents them (with the same method sets) for plugin authors; Go's
// structural interfaces let the core find them without importing it.
type (
	operator interface {
		Operation(ctx *Ctx, name string, args json.RawMessage) (any, error)
	}
	telemetryHandler interface {
		OnTelemetry(ctx *Ctx, points map[string]any) (map[string]any, error)
	}
	changeHandler interface {
		OnChange(ctx *Ctx, section string, patch json.RawMessage) error
	}
	timerHandler interface {
		OnTimer(ctx *Ctx, name string) error
	}
	messageHandler interface {
		OnMessage(ctx *Ctx, from, name string, payload json.RawMessage) error
	}
	activator interface {
		OnActivate(ctx *Ctx) error
	}
)

// pluginRecord is an entity's plugin data in the grains bucket: its
// private state and its durable timers.
type pluginRecord struct {
	Kind   string               `json:"kind"`
	State  json.RawMessage      `json:"state,omitempty"`
	Timers map[string]time.Time `json:"timers,omitempty"`
}

func (p pluginRecord) empty() bool { return len(p.State) == 0 && len(p.Timers) == 0 }

func (p pluginRecord) timerList() []DurableTimer {
	out := make([]DurableTimer, 0, len(p.Timers))
	for n, t := range p.Timers {
		out = append(out, DurableTimer{Name: n, Due: t})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Ctx is what a plugin hook gets: its entity, the time, a deadline, a
// scoped logger, reads of its twin and private state, and the effects it
// may ask for (twin patches, durable timers, messages to other entities).
// Effects take place only if the step's writes commit. A Ctx is valid only
// during the hook that received it.
type Ctx struct {
	context.Context
	core *Core
	d    *State
	res  *Result
	now  time.Time
	log  *slog.Logger

	twinChanged, recordChanged bool
}

func (c *Core) newCtx(ctx context.Context, now time.Time, d *State, res *Result) *Ctx {
	if ctx == nil {
		ctx = context.Background()
	}
	return &Ctx{Context: ctx, core: c, d: d, res: res, now: now,
		log: c.cfg.Log.With("plugin", c.cfg.Kind)}
}

// ID returns the entity ID.
func (x *Ctx) ID() string { return x.d.ID }

// Kind returns the entity kind.
func (x *Ctx) Kind() string { return x.core.cfg.Kind }

// Now returns the time of the message being handled: the plugin's clock.
func (x *Ctx) Now() time.Time { return x.now }

// Log returns a logger scoped to the entity and the plugin.
func (x *Ctx) Log() *slog.Logger { return x.log }

// Parent returns the entity's parent ID ("" at the top).
func (x *Ctx) Parent() string { return x.d.Ent.Parent }

// Desired returns a copy of the desired properties.
func (x *Ctx) Desired() map[string]any { return x.d.Twin.Section(twin.Desired) }

// Reported returns a copy of the reported properties.
func (x *Ctx) Reported() map[string]any { return x.d.Twin.Section(twin.Reported) }

// Tags returns a copy of the tags.
func (x *Ctx) Tags() map[string]any { return x.d.Twin.Section(twin.Tags) }

// Telemetry returns the last value of a telemetry point and when it was
// measured.
func (x *Ctx) Telemetry(name string) (value any, ts time.Time, ok bool) {
	p, ok := x.d.Twin.Telemetry()[name]
	return p.Value, p.TS, ok
}

// State returns the plugin's private durable state (nil if never set).
func (x *Ctx) State() json.RawMessage { return slices.Clone(x.d.plugin.State) }

// SetState replaces the private durable state with the JSON encoding of v.
func (x *Ctx) SetState(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("plugin state of %s: %w", x.d.ID, err)
	}
	x.ownRecord()
	x.d.plugin.State = b
	return nil
}

// LoadState decodes the private durable state into v; it reports false
// when none was ever set.
func (x *Ctx) LoadState(v any) (bool, error) {
	if len(x.d.plugin.State) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(x.d.plugin.State, v); err != nil {
		return true, fmt.Errorf("plugin state of %s: %w", x.d.ID, err)
	}
	return true, nil
}

func (x *Ctx) ownRecord() {
	if !x.recordChanged {
		x.d.plugin.Timers = maps.Clone(x.d.plugin.Timers)
		x.recordChanged = true
	}
}

// SetTimer sets (or moves) the durable timer name to fire at at. It
// survives passivation, restarts and moves to another member; when it is
// due the grain is activated and OnTimer runs. A timer fires once: set it
// again in OnTimer for a periodic one.
func (x *Ctx) SetTimer(name string, at time.Time) {
	x.ownRecord()
	if x.d.plugin.Timers == nil {
		x.d.plugin.Timers = map[string]time.Time{}
	}
	x.d.plugin.Timers[name] = at.UTC()
}

// After sets the durable timer name to fire after d.
func (x *Ctx) After(name string, d time.Duration) { x.SetTimer(name, x.now.Add(d)) }

// CancelTimer cancels the durable timer name, if set.
func (x *Ctx) CancelTimer(name string) {
	if _, ok := x.d.plugin.Timers[name]; !ok {
		return
	}
	x.ownRecord()
	delete(x.d.plugin.Timers, name)
}

// Timer returns when the durable timer name is due.
func (x *Ctx) Timer(name string) (time.Time, bool) {
	t, ok := x.d.plugin.Timers[name]
	return t, ok
}

// PatchDesired applies a JSON merge patch (any JSON-encodable value) to
// the desired properties, as a back end's PATCH would.
func (x *Ctx) PatchDesired(patch any) error { return x.patch(twin.Desired, patch) }

// PatchReported applies a JSON merge patch to the reported properties.
func (x *Ctx) PatchReported(patch any) error { return x.patch(twin.Reported, patch) }

func (x *Ctx) patch(sec twin.Section, patch any) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return errcode.New(errcode.BadRequest, "%s patch of %s: %v", sec, x.d.ID, err)
	}
	x.d.ownTwin()
	ch, err := x.d.Twin.Patch(sec, b, x.now, x.core.cfg.Limits)
	if err != nil {
		return mapTwinErr(err)
	}
	if !ch.Noop {
		x.twinChanged = true
		x.res.Events = append(x.res.Events, x.core.changeEvent(x.d, EventTwin, ch, x.now))
	}
	return nil
}

// Send sends a message named name with payload (JSON-encoded) to entity
// to, after this step commits. The target's OnMessage receives it; it is
// delivered at most once, and not at all to an entity that does not exist.
func (x *Ctx) Send(to, name string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("message %s to %s: %w", name, to, err)
	}
	if to == "" {
		return errcode.New(errcode.BadRequest, "message %s: no target", name)
	}
	x.res.Sends = append(x.res.Sends, Send{To: to, Message: &PluginMessage{From: x.d.ID, Name: name, Payload: b}})
	return nil
}

// SendParent sends a message to the entity's parent.
func (x *Ctx) SendParent(name string, payload any) error {
	if x.d.Ent.Parent == "" {
		return errcode.New(errcode.NotFound, "%s has no parent", x.d.ID)
	}
	return x.Send(x.d.Ent.Parent, name, payload)
}

// finish appends the writes a hook's effects need: the twin document when
// it patched the twin, the plugin record when state or timers changed.
func (x *Ctx) finish() {
	if x.twinChanged {
		if op, err := twinOp(x.d); err == nil {
			x.res.Ops = append(x.res.Ops, op)
			x.d.unflushed, x.d.lastFlush = 0, x.now
		}
		x.res.then = append(x.res.then, x.core.evaluateChange)
	}
	if x.recordChanged {
		x.d.plugin.Kind = x.core.cfg.Kind
		if x.d.plugin.empty() {
			x.res.Ops = append(x.res.Ops, Op{Kind: OpDeleteDoc, Bucket: BucketGrains, Key: x.d.ID})
		} else {
			doc, _ := json.Marshal(x.d.plugin)
			x.res.Ops = append(x.res.Ops, Op{Kind: OpPutDoc, Bucket: BucketGrains, Key: x.d.ID, Doc: doc})
		}
		x.res.TimersChanged, x.res.DurableTimers = true, x.d.plugin.timerList()
	}
}

// hook runs f, turning a panic into an error so that a plugin bug fails
// one request instead of the node.
func hook(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errcode.New(errcode.Internal, "plugin %s panicked: %v", what, r)
		}
	}()
	return f()
}

// pluginError gives an error a plugin returned a code: its own, or
// BadRequest (CONTRACT section 7: an operation's error is a 4xx).
func pluginError(err error) error {
	if errcode.Of(err) == errcode.Internal {
		if _, coded := err.(*errcode.Error); !coded {
			return errcode.Wrap(errcode.BadRequest, err)
		}
	}
	return err
}

// call runs a named operation of the kind (CONTRACT section 7).
func (c *Core) call(ctx context.Context, now time.Time, in *actorspb.Call) *Result {
	op, ok := c.cfg.Plugin.(operator)
	if !ok {
		return fail(errcode.New(errcode.UnknownOp, "a %s has no operation %q", c.cfg.Kind, in.Name))
	}
	d := c.draft()
	res := &Result{what: "operation " + in.Name + " of"}
	x := c.newCtx(ctx, now, d, res)
	args := json.RawMessage(in.Args)
	if len(args) == 0 {
		args = json.RawMessage("null")
	}
	var result any
	err := hook("operation "+in.Name, func() error {
		var err error
		result, err = op.Operation(x, in.Name, args)
		return err
	})
	if err != nil {
		return fail(pluginError(err))
	}
	body, err := json.Marshal(result)
	if err != nil {
		return fail(errcode.New(errcode.Internal, "operation %s result: %v", in.Name, err))
	}
	x.finish()
	res.next = d
	res.Reply = &actorspb.Response{Version: d.Twin.Version(), Body: body}
	return res
}

// timerFire runs a durable timer that is due by the entity's own state; a
// fire that is early, late for a cancelled timer, or repeated is answered
// and ignored.
func (c *Core) timerFire(ctx context.Context, now time.Time, in *actorspb.TimerFire) *Result {
	due, ok := c.st.plugin.Timers[in.Name]
	if !ok || due.After(now) {
		res := &Result{TimersChanged: true, DurableTimers: c.st.plugin.timerList()}
		return res.reply(&actorspb.Response{Version: c.st.Twin.Version()})
	}
	d := c.draft()
	res := &Result{what: "timer " + in.Name + " of"}
	x := c.newCtx(ctx, now, d, res)
	x.ownRecord()
	delete(d.plugin.Timers, in.Name)
	if h, ok := c.cfg.Plugin.(timerHandler); ok {
		if err := hook("timer "+in.Name, func() error { return h.OnTimer(x, in.Name) }); err != nil {
			c.cfg.Log.Warn("plugin timer", "timer", in.Name, "err", err)
		}
	}
	x.finish()
	res.next = d
	res.Reply = &actorspb.Response{Version: d.Twin.Version()}
	return res
}

// pluginMessage hands a message from another entity to the kind.
func (c *Core) pluginMessage(ctx context.Context, now time.Time, from string, m *actorspb.EntityMessage) *Result {
	h, ok := c.cfg.Plugin.(messageHandler)
	if !ok {
		return nil
	}
	d := c.draft()
	res := &Result{what: "message " + m.Name + " to"}
	x := c.newCtx(ctx, now, d, res)
	if err := hook("message "+m.Name, func() error { return h.OnMessage(x, from, m.Name, m.Payload) }); err != nil {
		c.cfg.Log.Warn("plugin message", "from", from, "message", m.Name, "err", err)
		return nil
	}
	x.finish()
	res.next = d
	return res
}

// pluginActivate runs the kind's activation hook.
func (c *Core) pluginActivate(ctx context.Context, now time.Time) *Result {
	a, ok := c.cfg.Plugin.(activator)
	if !ok || !c.st.Exists {
		return nil
	}
	d := c.draft()
	res := &Result{what: "activation of"}
	x := c.newCtx(ctx, now, d, res)
	if err := hook("activation", func() error { return a.OnActivate(x) }); err != nil {
		c.cfg.Log.Warn("plugin activation hook", "err", err)
		return nil
	}
	x.finish()
	if len(res.Ops) == 0 && len(res.Sends) == 0 && len(res.Events) == 0 {
		return nil
	}
	res.next = d
	return res
}

// pluginTelemetry lets the kind filter, derive or refuse telemetry.
func (c *Core) pluginTelemetry(ctx context.Context, now time.Time, d *State, res *Result, points map[string]any) (map[string]any, error) {
	h, ok := c.cfg.Plugin.(telemetryHandler)
	if !ok {
		return points, nil
	}
	x := c.newCtx(ctx, now, d, res)
	out := points
	err := hook("telemetry", func() error {
		var err error
		out, err = h.OnTelemetry(x, points)
		return err
	})
	if err != nil {
		return nil, pluginError(err)
	}
	x.finish()
	return out, nil
}

// pluginChange lets the kind react to (or refuse) a desired or reported
// change; patch is the change's effective merge patch.
func (c *Core) pluginChange(ctx context.Context, now time.Time, d *State, res *Result, section string, patch []byte) error {
	h, ok := c.cfg.Plugin.(changeHandler)
	if !ok {
		return nil
	}
	x := c.newCtx(ctx, now, d, res)
	if err := hook("change", func() error { return h.OnChange(x, section, patch) }); err != nil {
		return pluginError(err)
	}
	x.twinChanged = false // the caller writes the twin with its own change
	x.finish()
	return nil
}
