package entity

import (
	"context"
	"encoding/json"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// Local messages: the grain's own timers and lifecycle, never sent between
// members.
type (
	// Activated is stepped once after Load: plugin activation hooks and
	// the rollup repair run here.
	Activated struct{}
	// RollupFlush ends a debounce of upward contributions.
	RollupFlush struct{}
	// RuleTick moves the rules on when time alone passes.
	RuleTick struct{}
	// Passivate is stepped before the grain stops: telemetry not yet in
	// the stored twin document is written.
	Passivate struct{}
)

// Step handles one message at time now and returns what the caller must do,
// or nil when there is nothing to do. msg is a *actorspb.Request, a
// *actorspb.Notify, or one of the local messages of this package. ctx
// carries the deadline handed to plugins.
func (c *Core) Step(ctx context.Context, now time.Time, msg any) *Result {
	now = now.UTC()
	switch m := msg.(type) {
	case *actorspb.Request:
		return c.request(ctx, now, m)
	case *actorspb.Notify:
		return c.notify(ctx, now, m)
	case Activated:
		return c.activated(ctx, now)
	case RollupFlush:
		return c.flushRollup(now)
	case RuleTick:
		return c.tickRules(ctx, now)
	case Passivate:
		return c.passivate(now)
	}
	return nil
}

func (c *Core) request(ctx context.Context, now time.Time, req *actorspb.Request) *Result {
	if put := req.GetPutEntity(); put != nil {
		return c.putEntity(ctx, now, put)
	}
	if !c.st.Exists {
		r := fail(errcode.New(errcode.NotFound, "entity %s not found", c.st.ID))
		// An absent entity has nothing to keep; do not hold memory for it
		// (a touch keeps the grain: it is the start-up repair).
		r.Stop = req.GetTouch() == nil
		return r
	}
	switch b := req.Body.(type) {
	case *actorspb.Request_Get, *actorspb.Request_Touch:
		return (&Result{}).reply(twinReply(c.st.Twin))
	case *actorspb.Request_Delete:
		return c.delete(now)
	case *actorspb.Request_Patch:
		return c.patch(ctx, now, b.Patch)
	case *actorspb.Request_Reported:
		return c.reported(ctx, now, b.Reported)
	case *actorspb.Request_Telemetry:
		return c.telemetry(ctx, now, b.Telemetry)
	case *actorspb.Request_Connection:
		return c.connection(now, b.Connection)
	case *actorspb.Request_InboxSend, *actorspb.Request_InboxPending, *actorspb.Request_InboxDelivered:
		return c.inbox(now, req)
	case *actorspb.Request_Alert:
		return c.alertRequest(now, b.Alert)
	case *actorspb.Request_Call:
		return c.call(ctx, now, b.Call)
	case *actorspb.Request_Timer:
		return c.timerFire(ctx, now, b.Timer)
	}
	return fail(errcode.New(errcode.BadRequest, "unknown request %T", req.Body))
}

func (c *Core) notify(ctx context.Context, now time.Time, n *actorspb.Notify) *Result {
	if !c.st.Exists {
		// A notification addressed through a cached kind can wake the
		// grain of an entity deleted since: it has nothing to keep.
		return &Result{Stop: true}
	}
	switch b := n.Body.(type) {
	case *actorspb.Notify_Contrib:
		return c.contribution(now, n.From, b.Contrib)
	case *actorspb.Notify_Gateway:
		return c.gatewayState(now, n.From, b.Gateway.GetOnline())
	case *actorspb.Notify_Message:
		return c.pluginMessage(ctx, now, n.From, b.Message)
	}
	return nil
}

func (c *Core) activated(ctx context.Context, now time.Time) *Result {
	if !c.st.Exists {
		return nil
	}
	// The stored contributions of the children are the truth: a rollup or
	// an upward contribution that a crash left stale is corrected here,
	// then the plugin hears of the activation.
	if c.keepsRollup() {
		if res := c.refreshUp(now, nil, false); res != nil {
			res.then = append(res.then, c.pluginActivate)
			return res
		}
	}
	return c.pluginActivate(ctx, now)
}

// passivate writes the twin document if telemetry changed it since the
// last write; a failure only means the next activation replays more.
func (c *Core) passivate(now time.Time) *Result {
	if !c.st.Exists || c.st.unflushed == 0 {
		return nil
	}
	d := c.draft()
	op, err := twinOp(d)
	if err != nil {
		return nil
	}
	d.unflushed, d.lastFlush = 0, now
	return &Result{Ops: []Op{op}, next: d, what: "flush"}
}

// putEntity creates or replaces the entity. The facade has checked the
// kind, the parent and connectedVia against the topology.
func (c *Core) putEntity(ctx context.Context, now time.Time, p *actorspb.PutEntity) *Result {
	var tags map[string]any
	if len(p.Tags) > 0 {
		if err := json.Unmarshal(p.Tags, &tags); err != nil {
			return fail(errcode.New(errcode.BadRequest, "entity tags: %v", err))
		}
	}
	d := c.draft()
	created := !d.Exists
	old := d.Ent
	if created {
		d.Twin, d.ownedTwin = twin.New(d.ID, c.cfg.Kind), true
		d.resetContribs()
		d.ownedStored, d.ownedSent = true, true
		old = record.Entity{}
	} else {
		d.ownTwin()
		d.ownContribCache()
	}
	ent := record.Entity{ID: d.ID, Kind: c.cfg.Kind, Parent: p.Parent, ConnectedVia: p.ConnectedVia,
		Tags: tags, CreatedAt: now, UpdatedAt: now}
	if !created {
		ent.CreatedAt = old.CreatedAt
	}
	// Replacing the entity replaces its tags: express that as a merge patch.
	tagPatch := map[string]any{}
	for k := range d.Twin.Section(twin.Tags) {
		if _, keep := tags[k]; !keep {
			tagPatch[k] = nil
		}
	}
	for k, v := range tags {
		tagPatch[k] = v
	}
	res := &Result{what: "put entity"}
	tagsChanged := false
	if len(tagPatch) > 0 {
		pb, _ := json.Marshal(tagPatch)
		ch, err := d.Twin.Patch(twin.Tags, pb, now, c.cfg.Limits)
		if err != nil {
			return fail(mapTwinErr(err))
		}
		if !ch.Noop {
			res.Events = append(res.Events, c.changeEvent(d, EventTwin, ch, now))
			tagsChanged = true
		}
	}
	// One accepted change, one version: a creation or a move that also
	// changed the tags has already moved it.
	if (created || old.Parent != ent.Parent || old.ConnectedVia != ent.ConnectedVia) && !tagsChanged {
		d.Twin.AttributesChanged(now)
	}
	d.Ent, d.Exists = ent, true
	res.Ops = append(res.Ops, Op{Kind: OpPutEntity, Key: d.ID, Entity: ent})
	if created {
		res.Ops = append(res.Ops, Op{Kind: OpDeleteDoc, Bucket: BucketTombstones, Key: "entity/" + d.ID})
	}
	if old.ConnectedVia != "" && old.ConnectedVia != ent.ConnectedVia && c.isDevice() {
		// Its state was the old gateway's: detached, it is disconnected
		// until it connects itself (it stayed "connected via gw" forever,
		// and rollups counted it, issue 12). The contributions below carry
		// the new state.
		if cur := d.Twin.Connection(); cur.Node == viaPrefix+old.ConnectedVia {
			if ch := d.Twin.SetConnection(twin.Connection{State: "disconnected", Since: now}); !ch.Noop {
				res.Events = append(res.Events, c.changeEvent(d, EventConnection, ch, now))
			}
		}
	}
	c.contribMoves(d, old, ent, res)
	top, _ := json.Marshal(map[string]any{"entity": ent, "created": created})
	res.Events = append(res.Events, c.event(d, EventTopology, top, now))
	op, err := twinOp(d)
	if err != nil {
		return fail(err)
	}
	res.Ops = append(res.Ops, op)
	d.unflushed, d.lastFlush = 0, now
	d.ancestors = c.ancestors(ent)
	res.next = d
	body, _ := json.Marshal(ent)
	res.Reply = &actorspb.Response{Version: d.Twin.Version(), Body: body}
	if created {
		d.mids, d.ruleStates = &midSet{}, map[string]*rules.State{}
		res.then = append(res.then, c.pluginActivate)
	}
	return res
}

// delete removes the entity; one with children is refused.
func (c *Core) delete(now time.Time) *Result {
	has, err := c.r.HasChildren(c.st.ID)
	if err != nil {
		return fail(errcode.New(errcode.Unavailable, "children of %s: %v", c.st.ID, err))
	}
	if has {
		return fail(errcode.New(errcode.Conflict, "entity %s has children (delete them first or use ?recursive=true)", c.st.ID))
	}
	d := c.draft()
	d.ownContribCache()
	res := &Result{what: "delete"}
	tomb, _ := json.Marshal(map[string]time.Time{"at": now})
	res.Ops = append(res.Ops, Op{Kind: OpDeleteEntity, Key: d.ID},
		Op{Kind: OpPutDoc, Bucket: BucketTombstones, Key: "entity/" + d.ID, Doc: tomb},
		Op{Kind: OpDeleteDoc, Bucket: BucketGrains, Key: d.ID})
	c.contribMoves(d, d.Ent, record.Entity{}, res)
	top, _ := json.Marshal(map[string]any{"entity": d.Ent, "deleted": true})
	res.Events = append(res.Events, c.event(d, EventTopology, top, now))
	if len(d.plugin.Timers) > 0 {
		res.TimersChanged, res.DurableTimers = true, []DurableTimer{}
	}
	gone := State{ID: d.ID}
	gone.resetContribs()
	res.next = &gone
	res.Reply = &actorspb.Response{Body: []byte(`{}`)}
	res.Stop = true
	return res
}

// patch applies merge patches of desired and/or tags.
func (c *Core) patch(ctx context.Context, now time.Time, p *actorspb.PatchTwin) *Result {
	if p.IfVersion != nil && *p.IfVersion != c.st.Twin.Version() {
		return fail(errcode.New(errcode.Precondition, "twin %s is at version %d, not %d", c.st.ID, c.st.Twin.Version(), *p.IfVersion))
	}
	d := c.draft()
	d.ownTwin()
	res := &Result{what: "patch"}
	tagsChanged := false
	for _, sp := range []struct {
		sec   twin.Section
		patch []byte
	}{{twin.Desired, p.Desired}, {twin.Tags, p.Tags}} {
		if len(sp.patch) == 0 {
			continue
		}
		ch, err := d.Twin.Patch(sp.sec, sp.patch, now, c.cfg.Limits)
		if err != nil {
			return fail(mapTwinErr(err))
		}
		if ch.Noop {
			continue
		}
		res.Events = append(res.Events, c.changeEvent(d, EventTwin, ch, now))
		tagsChanged = tagsChanged || sp.sec == twin.Tags
		if sp.sec == twin.Desired {
			if err := c.pluginChange(ctx, now, d, res, string(twin.Desired), ch.Data); err != nil {
				return fail(err)
			}
		}
	}
	if len(res.Events) == 0 {
		return (&Result{}).reply(twinReply(c.st.Twin))
	}
	return c.finishTwinChange(now, d, res, tagsChanged)
}

// finishTwinChange commits a changed twin (and the entity when its tags
// changed), asks for rule evaluation and answers with the twin.
func (c *Core) finishTwinChange(now time.Time, d *State, res *Result, tagsChanged bool) *Result {
	if tagsChanged {
		d.Ent.Tags = d.Twin.Section(twin.Tags)
		d.Ent.UpdatedAt = now
		res.Ops = append(res.Ops, Op{Kind: OpPutEntity, Key: d.ID, Entity: d.Ent})
	}
	op, err := twinOp(d)
	if err != nil {
		return fail(err)
	}
	res.Ops = append(res.Ops, op)
	d.unflushed, d.lastFlush = 0, now
	res.next = d
	res.then = append(res.then, c.evaluateChange)
	res.Reply = &actorspb.Response{Version: d.Twin.Version(), Twin: op.Doc, SessionNode: sessionNode(d.Twin)}
	return res
}

// reported applies a device's reported-properties merge patch.
func (c *Core) reported(ctx context.Context, now time.Time, p *actorspb.PatchReported) *Result {
	d := c.draft()
	d.ownTwin()
	ch, err := d.Twin.Patch(twin.Reported, p.Patch, now, c.cfg.Limits)
	if err != nil {
		return fail(mapTwinErr(err))
	}
	if ch.Noop {
		return (&Result{}).reply(&actorspb.Response{Version: c.st.Twin.Version(),
			SectionVersion: c.st.Twin.SectionVersion(twin.Reported)})
	}
	res := &Result{what: "reported"}
	res.Events = append(res.Events, c.changeEvent(d, EventTwin, ch, now))
	if err := c.pluginChange(ctx, now, d, res, string(twin.Reported), ch.Data); err != nil {
		return fail(err)
	}
	res = c.finishTwinChange(now, d, res, false)
	if res.Reply != nil && res.Reply.Code == 0 {
		res.Reply = &actorspb.Response{Version: d.Twin.Version(), SectionVersion: d.Twin.SectionVersion(twin.Reported)}
	}
	return res
}

// connection records a device's session state.
func (c *Core) connection(now time.Time, in *actorspb.Connection) *Result {
	if !c.isDevice() {
		return fail(errcode.New(errcode.BadRequest, "a %s does not connect", c.cfg.Kind))
	}
	if in.Protocol != "" && !in.Connected {
		if cur := c.st.Twin.Connection(); cur.State == "connected" && cur.Protocol != "" && cur.Protocol != in.Protocol {
			// The device is connected through another protocol (an MQTT
			// session while a CoAP presence window ends, or the reverse).
			return (&Result{}).reply(&actorspb.Response{Version: c.st.Twin.Version()})
		}
	}
	if in.OnlyIfNode != "" && !in.Connected {
		cur := c.st.Twin.Connection()
		newer := in.SinceUnixNano != 0 && !cur.Since.Before(time.Unix(0, in.SinceUnixNano))
		if cur.State != "connected" || cur.Node != in.OnlyIfNode || newer {
			// The device's session is elsewhere now, or began after the
			// sweep's time (on the restarted node itself), or is gone.
			return (&Result{}).reply(&actorspb.Response{Version: c.st.Twin.Version()})
		}
	}
	since := now
	if in.SinceUnixNano != 0 {
		since = time.Unix(0, in.SinceUnixNano).UTC()
	}
	state := "disconnected"
	if in.Connected {
		state = "connected"
	}
	d := c.draft()
	d.ownTwin()
	ch := d.Twin.SetConnection(twin.Connection{State: state, Since: since, Node: in.Node, Protocol: in.Protocol})
	var events []Event
	if !ch.Noop {
		events = append(events, c.changeEvent(d, EventConnection, ch, now))
	}
	res := c.refreshUpFrom(now, d, events, false)
	res.what = "connection"
	if !ch.Noop && c.keepsRollup() {
		online := in.Connected
		res.Sends = append(res.Sends, Send{To: viaChildren, Gateway: &online})
	}
	res.Reply = &actorspb.Response{Version: d.Twin.Version()}
	return res
}

// viaChildren as a Send target means every device connected via this
// entity (the caller lists them).
const viaChildren = "\x00via-children"

// ViaChildren reports whether a Send goes to every device connected via
// the sender.
func (s Send) ViaChildren() bool { return s.To == viaChildren }

// viaPrefix marks a connection state derived from the gateway's.
const viaPrefix = "via "

// gatewayState mirrors the gateway's state on a device that speaks through
// it: "connected" while the gateway is online, "unreachable" while it is
// offline. A device with its own direct session keeps its own state.
func (c *Core) gatewayState(now time.Time, from string, online bool) *Result {
	if c.st.Ent.ConnectedVia != from || !c.isDevice() {
		return nil
	}
	cur := c.st.Twin.Connection()
	if cur.State == "connected" && !hasPrefix(cur.Node, viaPrefix) {
		return nil
	}
	state := "unreachable"
	if online {
		state = "connected"
	}
	d := c.draft()
	d.ownTwin()
	ch := d.Twin.SetConnection(twin.Connection{State: state, Since: now, Node: viaPrefix + from})
	if ch.Noop {
		return nil
	}
	res := c.refreshUpFrom(now, d, []Event{c.changeEvent(d, EventConnection, ch, now)}, false)
	res.what = "gateway state"
	return res
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }
