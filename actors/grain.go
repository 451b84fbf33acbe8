package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/persistence"
)

// Grain operations (Request.Op).
const (
	opGet        = "get"
	opPutEntity  = "put-entity"
	opDelete     = "delete"
	opPatch      = "patch"
	opReported   = "reported"
	opTelemetry  = "telemetry"
	opConnection = "connection"
	opTouch      = "touch"
	// opTelemetryQuery and opInboxList read what the owner holds: with
	// replication, the owner's store is the one known to be up to date.
	opTelemetryQuery = "telemetry-query"
	opInboxList      = "inbox-list"
)

// Notify operations between grains.
const (
	notifyContrib = "contrib"
	// notifyGateway tells a device connected via a gateway whether the
	// gateway is online, so it shows "connected" or "unreachable".
	notifyGateway = "gateway"
)

// viaPrefix marks a connection state derived from the gateway's.
const viaPrefix = "via "

// Edges along which contributions flow. A "contains" contribution carries
// the child's whole subtree and propagates further up; a "via" contribution
// (device → gateway) counts only in the gateway's own rollup.
const (
	edgeContains = "c"
	edgeVia      = "v"
)

// contribution is what one child adds to an ancestor's rollup: device
// counts, open alerts with the worst severity rank, and per numeric
// telemetry point the aggregate of the latest values beneath.
type contribution struct {
	Devices   int                 `json:"devices"`
	Connected int                 `json:"connected"`
	Alerts    int                 `json:"alerts,omitempty"`
	Worst     int                 `json:"worst,omitempty"`
	Points    map[string]pointAgg `json:"points,omitempty"`
}

// pointAgg aggregates the latest values of one point over a subtree.
type pointAgg struct {
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Sum   float64 `json:"sum"`
	Count int     `json:"count"`
}

func (c *contribution) add(o contribution) {
	c.Devices += o.Devices
	c.Connected += o.Connected
	c.Alerts += o.Alerts
	c.Worst = max(c.Worst, o.Worst)
	for k, p := range o.Points {
		if c.Points == nil {
			c.Points = map[string]pointAgg{}
		}
		q, ok := c.Points[k]
		if !ok {
			c.Points[k] = p
			continue
		}
		q.Min, q.Max = min(q.Min, p.Min), max(q.Max, p.Max)
		q.Sum += p.Sum
		q.Count += p.Count
		c.Points[k] = q
	}
}

func (c contribution) encode() []byte {
	b, _ := json.Marshal(c)
	return b
}

type contribMsg struct {
	Edge    string       `json:"edge"`
	Removed bool         `json:"removed,omitempty"`
	Value   contribution `json:"value"`
}

func contribKey(parent, edge, child string) string { return parent + "/" + edge + "/" + child }

// grain is the actor behind one entity. Its Receive routes messages and does
// the IO; the twin itself is a pure state machine (package twin).
type grain struct {
	sys      *System
	behavior Behavior
	id, kind string
	log      *slog.Logger

	exists bool
	ent    persistence.Entity
	tw     *twin.Twin

	// epoch fences this activation's writes (0 on a node without
	// replication); fenced is set once a newer activation claimed the
	// grain, after which the grain answers its current request and stops.
	epoch  uint64
	fenced bool
	// moving is set when the placement moves the grain to another member:
	// it answers every request with ErrFenced until it stops.
	moving bool

	// Message IDs ($.mid) of the newest telemetry records, so that a
	// device's retransmission (its PUBACK was lost, perhaps with the node
	// it was connected to) is acknowledged without being stored twice.
	// They are read from the warm store on the first message that carries
	// an ID, so activations of devices that send none (and of every grain
	// that is only read) pay nothing.
	mids       map[string]struct{}
	midRing    []string
	midNext    int
	midsLoaded bool

	// contributions received from children, by edge then child ID.
	contribs map[string]map[string]contribution

	// Telemetry makes only its warm-store record durable; the twin document
	// is written later (see flushTwin). unflushed counts telemetry changes
	// not yet in the stored document; lastTS keeps telemetry timestamps
	// strictly increasing so a replay from the warm store is exact.
	unflushed int
	lastFlush time.Time
	lastTS    time.Time

	// Rule hosting: the entity's ancestors (for rule scopes), one state per
	// rule in scope, and the pending timer of the next rule deadline.
	ancestors  []string
	ruleStates map[string]*rules.State
	cancelTick scheduler.CancelFunc

	// sent is the contribution last sent to each ancestor key in this
	// activation; rollupPending marks a scheduled debounced refreshUp.
	sent          map[string]string
	stored        map[string]string
	rollupPending bool
	lastRollup    time.Time
}

// Telemetry flush policy: the twin document is rewritten at least this often
// while telemetry flows (it is always written with any other change).
const (
	flushEvery    = 1000
	flushInterval = 30 * time.Second
)

func (s *System) grainProducer(b Behavior) actor.Producer {
	return func() actor.Actor {
		return &grain{sys: s, behavior: b, kind: b.Kind()}
	}
}

// Receive implements actor.Actor.
func (g *grain) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *pcluster.ClusterInit:
		g.activate(ctx, m.Identity.Identity)
	case *actorspb.Request:
		g.handle(ctx, m)
	case *actorspb.Notify:
		if m.GetMove() != nil {
			g.move(ctx)
			return
		}
		g.handleNotify(ctx, m)
	case moveDone:
		ctx.Stop(ctx.Self())
	case ruleTick:
		g.tick(ctx)
	case rollupFlush:
		g.flushRollup(ctx)
	case *actor.ReceiveTimeout:
		g.flushTwin()
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		g.flushTwin()
	case *actor.Stopped:
		if g.id != "" {
			g.sys.activeGrains.Add(-1)
			g.sys.metrics.active.WithLabelValues(g.kind).Dec()
		}
	}
}

func (g *grain) activate(ctx actor.Context, id string) {
	g.id = id
	g.log = g.sys.log.With("entity", id, "kind", g.kind)
	g.sys.activeGrains.Add(1)
	g.sys.metrics.activations.WithLabelValues(g.kind).Inc()
	g.sys.metrics.active.WithLabelValues(g.kind).Inc()
	ctx.SetReceiveTimeout(g.sys.cfg.IdleTimeout)
	if r := g.sys.cfg.Replication; r != nil {
		cctx, cancel := g.commitCtx()
		epoch, err := r.Claim(cctx, id)
		cancel()
		if err != nil {
			g.log.Warn("activation claim failed", "err", err)
			g.fenced = true
			ctx.Stop(ctx.Self())
			return
		}
		g.epoch = epoch
	}
	g.log.Info("grain activated", "epoch", g.epoch, "node", g.sys.cfg.NodeName)
	if err := g.load(); err != nil {
		// Without its state the grain must not answer; stopping makes the
		// next request re-activate it and try again.
		g.log.Error("activation failed", "err", err)
		ctx.Stop(ctx.Self())
		return
	}
	if !g.exists {
		return
	}
	g.activated()
	if isAggregating(g.behavior) {
		g.repairRollup(ctx)
	}
}

// activated runs the plugin's Activator hook once the grain holds a live
// entity: at activation, or when the entity is created in this activation.
func (g *grain) activated() {
	if a, ok := g.behavior.(Activator); ok {
		if err := a.Activate(context.Background(), g.id); err != nil {
			g.log.Warn("plugin activation hook", "err", err)
		}
	}
}

func (g *grain) load() error {
	ent, err := g.sys.store.GetEntity(g.id)
	if errors.Is(err, persistence.ErrNotFound) {
		g.exists = false
		g.tw = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("load entity %s: %w", g.id, err)
	}
	if ent.Kind != g.kind {
		return fmt.Errorf("entity %s is a %s, not a %s", g.id, ent.Kind, g.kind)
	}
	g.ent, g.exists = ent, true
	g.loadAncestors()
	doc, err := g.sys.store.GetTwin(g.id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		g.tw = twin.New(g.id, g.kind)
	case err != nil:
		return fmt.Errorf("load twin %s: %w", g.id, err)
	default:
		t := twin.New(g.id, g.kind)
		if err := t.UnmarshalJSON(doc); err != nil {
			return fmt.Errorf("decode twin %s: %w", g.id, err)
		}
		g.tw = t
	}
	if err := g.replayTelemetry(); err != nil {
		return err
	}
	g.mids, g.midRing, g.midNext, g.midsLoaded = nil, nil, 0, false
	g.unflushed, g.lastFlush = 0, g.now()
	g.contribs = map[string]map[string]contribution{edgeContains: {}, edgeVia: {}}
	g.sent, g.stored = map[string]string{}, map[string]string{}
	if isAggregating(g.behavior) {
		docs, err := g.sys.store.ListDocs(persistence.BucketContrib, g.id+"/")
		if err != nil {
			return fmt.Errorf("load contributions of %s: %w", g.id, err)
		}
		for k, v := range docs {
			edge, child, ok := splitContribKey(k[len(g.id)+1:])
			if !ok {
				continue
			}
			var c contribution
			if json.Unmarshal(v, &c) != nil || !g.stillBeneath(edge, child) {
				continue
			}
			g.contribs[edge][child] = c
		}
	}
	return nil
}

// replayTelemetry applies warm-store records newer than the stored twin
// document: telemetry acknowledged after the document's last write (a crash
// before its flush) is in the warm store, so the twin loses nothing.
func (g *grain) replayTelemetry() error {
	var newest time.Time
	for _, p := range g.tw.Telemetry() {
		if p.TS.After(newest) {
			newest = p.TS
		}
	}
	g.lastTS = newest
	if newest.IsZero() && len(g.tw.Telemetry()) == 0 && g.tw.Version() == 0 {
		// A fresh twin may still have records (never flushed): scan all.
		newest = time.Time{}
	}
	for {
		from := newest.Add(time.Nanosecond)
		if newest.IsZero() {
			from = time.Unix(0, 1)
		}
		ctx, cancel := g.commitCtx()
		recs, err := g.sys.store.QueryTelemetry(ctx, g.id, persistence.TelemetryQuery{From: from, Limit: 10000})
		cancel()
		if err != nil {
			return fmt.Errorf("replay telemetry of %s: %w", g.id, err)
		}
		if len(recs) == 0 {
			return nil
		}
		// Newest first from the store; apply oldest first.
		for i := len(recs) - 1; i >= 0; i-- {
			r := recs[i]
			if len(r.Points) > 0 {
				g.tw.SetTelemetry(r.Points, r.TS)
			}
			if r.TS.After(g.lastTS) {
				g.lastTS = r.TS
			}
		}
		if len(recs) < 10000 {
			return nil
		}
		newest = g.lastTS
	}
}

// flushTwin writes the twin document if telemetry changed it since the
// last write. It runs at passivation and shutdown; a failure only means the
// next activation replays more of the warm store.
func (g *grain) flushTwin() {
	if !g.exists || g.tw == nil || g.unflushed == 0 || g.fenced {
		return
	}
	if err := g.commit(nil); err != nil {
		g.log.Warn("flush twin", "err", err)
	}
}

// stillBeneath reports whether child still contributes to this entity
// along edge. A contribution whose child was deleted or moved while this
// node was away (its removal never reached this copy) is not counted.
func (g *grain) stillBeneath(edge, child string) bool {
	ce, err := g.sys.store.GetEntity(child)
	if err != nil {
		return false
	}
	if edge == edgeVia {
		return ce.ConnectedVia == g.id
	}
	return ce.Parent == g.id
}

func splitContribKey(rest string) (edge, child string, ok bool) {
	if len(rest) < 3 || rest[1] != '/' {
		return "", "", false
	}
	return rest[:1], rest[2:], true
}

func (g *grain) now() time.Time { return g.sys.cfg.Now().UTC() }

func (g *grain) commitCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.sys.cfg.RequestTimeout)
}

// storeCommit writes ops of this grain: through the replication layer,
// fenced by the activation's epoch, when the node is clustered. A refusal
// because a newer activation owns the grain is ErrFenced (and the grain
// stops after its current request); any other failure is ErrUnavailable,
// described by what ("commit", "telemetry of", …).
func (g *grain) storeCommit(ctx context.Context, what string, ops ...persistence.Op) error {
	var err error
	switch r := g.sys.cfg.Replication; {
	case r == nil:
		err = g.sys.store.Commit(ctx, ops...)
	case g.fenced:
		return fmt.Errorf("%w: activation of epoch %d was superseded", ErrFenced, g.epoch)
	default:
		err = r.Commit(ctx, g.id, g.epoch, ops)
		if errors.Is(err, persistence.ErrFenced) {
			g.fenced = true
			g.log.Warn("grain fenced", "epoch", g.epoch, "err", err)
			return fmt.Errorf("%w: %v", ErrFenced, err)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrUnavailable, what, g.id, err)
	}
	return nil
}

func respond(ctx actor.Context, body []byte, err error) {
	if err != nil {
		c := errcode.Of(err)
		ctx.Respond(&actorspb.Response{Status: int32(c.HTTPStatus()), CodeName: c.String(), Message: err.Error()})
		return
	}
	ctx.Respond(&actorspb.Response{Status: 200, Body: body})
}

// notifyMove is cluster.NotifyMove: the placement moves this grain to
// another member. moveGrace is cluster.MoveGrace.
const (
	notifyMove = "move"
	moveGrace  = 300 * time.Millisecond
)

// moveDone is the local timer message that ends a move's grace period.
type moveDone struct{}

// move flushes the twin and, for moveGrace, answers "moved" to every
// request (callers retry on the new owner at once) before the grain stops.
func (g *grain) move(ctx actor.Context) {
	if g.moving {
		return
	}
	g.flushTwin()
	g.moving = true
	scheduler.NewTimerScheduler(ctx).SendOnce(moveGrace, ctx.Self(), moveDone{})
}

func (g *grain) handle(ctx actor.Context, req *actorspb.Request) {
	if g.moving {
		respond(ctx, nil, fmt.Errorf("%w: entity %s is moving to another node", ErrFenced, g.id))
		return
	}
	if req.Op != opPutEntity && !g.exists {
		respond(ctx, nil, fmt.Errorf("%w: entity %s", ErrNotFound, g.id))
		if req.Op != opTouch {
			// An absent entity has nothing to keep; do not hold memory for it.
			ctx.Stop(ctx.Self())
		}
		return
	}
	var (
		body []byte
		err  error
	)
	switch req.Op {
	case opGet, opTouch:
		body, err = g.tw.MarshalJSON()
	case opPutEntity:
		body, err = g.putEntity(ctx, req.LegacyBody)
	case opDelete:
		err = g.delete(ctx)
		if err == nil {
			respond(ctx, []byte(`{}`), nil)
			ctx.Stop(ctx.Self())
			return
		}
	case opPatch:
		body, err = g.patch(ctx, req.LegacyBody, req.IfVersion)
	case opReported:
		body, err = g.reported(ctx, req.LegacyBody)
	case opTelemetry:
		body, err = g.telemetry(ctx, req.LegacyBody)
	case opConnection:
		body, err = g.connection(ctx, req.LegacyBody)
	case opInboxSend, opInboxPending, opInboxDelivered:
		body, err = g.inbox(ctx, req.Op, req.LegacyBody)
	case opAlertAck, opAlertRetire:
		body, err = g.alertRequest(ctx, req.Op, req.LegacyBody)
	case opTelemetryQuery:
		body, err = g.telemetryQuery(req.LegacyBody)
	case opInboxList:
		body, err = g.inboxList()
	default:
		err = fmt.Errorf("%w: unknown operation %q", ErrBadRequest, req.Op)
	}
	if g.fenced {
		// A newer activation owns the grain: say so (the caller retries
		// and reaches it) and stop, without writing anything more.
		respond(ctx, nil, fmt.Errorf("%w: entity %s", ErrFenced, g.id))
		ctx.Stop(ctx.Self())
		return
	}
	respond(ctx, body, err)
}

// commit persists the twin together with extra ops and publishes events
// only after the commit succeeded. On a failed commit the in-memory state is
// ahead of the disk, so the grain reloads from the store.
func (g *grain) commit(extra []persistence.Op, events ...Event) error {
	doc, err := g.tw.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode twin %s: %w", g.id, err)
	}
	ops := append([]persistence.Op{persistence.PutTwin(g.id, doc)}, extra...)
	cctx, cancel := g.commitCtx()
	defer cancel()
	if err := g.storeCommit(cctx, "commit", ops...); err != nil {
		if !errors.Is(err, ErrFenced) {
			if lerr := g.load(); lerr != nil {
				g.log.Error("reload after failed commit", "err", lerr)
			}
		}
		return err
	}
	g.unflushed, g.lastFlush = 0, g.now()
	g.publishAll(events)
	return nil
}

func (g *grain) publishAll(events []Event) {
	for _, e := range events {
		e.Entity, e.Kind = g.id, g.kind
		if e.TS.IsZero() {
			e.TS = g.now()
		}
		g.sys.publish(e)
	}
}

func changeEvent(typ string, c twin.Change) Event {
	return Event{Type: typ, Version: c.Version, Section: c.Section, SectionVersion: c.SectionVersion, Data: c.Data}
}

// EntitySpec is the body of PUT /entities/{id}.
type EntitySpec struct {
	Kind         string         `json:"kind"`
	Parent       string         `json:"parent,omitempty"`
	ConnectedVia string         `json:"connectedVia,omitempty"`
	Tags         map[string]any `json:"tags,omitempty"`
}

func (g *grain) putEntity(ctx actor.Context, body []byte) ([]byte, error) {
	var spec EntitySpec
	if err := json.Unmarshal(body, &spec); err != nil {
		return nil, fmt.Errorf("%w: entity: %v", ErrBadRequest, err)
	}
	now := g.now()
	old := g.ent
	created := !g.exists
	if created {
		g.tw = twin.New(g.id, g.kind)
		g.contribs = map[string]map[string]contribution{edgeContains: {}, edgeVia: {}}
		g.sent, g.stored = map[string]string{}, map[string]string{}
		old = persistence.Entity{}
	}
	ent := persistence.Entity{ID: g.id, Kind: g.kind, Parent: spec.Parent, ConnectedVia: spec.ConnectedVia,
		Tags: spec.Tags, CreatedAt: now, UpdatedAt: now}
	if !created {
		ent.CreatedAt = old.CreatedAt
	}
	// Replacing the entity replaces its tags: express that as a merge patch.
	tagPatch := map[string]any{}
	for k := range g.tw.Section(twin.Tags) {
		if _, keep := spec.Tags[k]; !keep {
			tagPatch[k] = nil
		}
	}
	for k, v := range spec.Tags {
		tagPatch[k] = v
	}
	var events []Event
	if len(tagPatch) > 0 {
		p, _ := json.Marshal(tagPatch)
		c, err := g.tw.Patch(twin.Tags, p, now, g.sys.cfg.Limits)
		if err != nil {
			g.reloadOrForget(created)
			return nil, mapTwinErr(err)
		}
		if !c.Noop {
			events = append(events, changeEvent(EventTwin, c))
		}
	}
	ops := []persistence.Op{persistence.PutEntity(ent)}
	if created {
		ops = append(ops, untombstone("entity/"+g.id))
	}
	mine := g.ownContribution()
	moves := g.contribMoves(old, ent, mine, &ops)
	topo, _ := json.Marshal(map[string]any{"entity": ent, "created": created})
	events = append(events, Event{Type: EventTopology, Version: g.tw.Version(), Data: topo})
	g.ent, g.exists = ent, true
	if err := g.commit(ops, events...); err != nil {
		return nil, err
	}
	if created {
		g.activated()
	}
	g.loadAncestors()
	g.sendMoves(ctx, moves)
	return json.Marshal(ent)
}

func (g *grain) reloadOrForget(created bool) {
	if created {
		g.exists, g.tw = false, nil
		return
	}
	if err := g.load(); err != nil {
		g.log.Error("reload", "err", err)
	}
}

// contribMove is one notification to send to an ancestor after a commit.
type contribMove struct {
	target string
	msg    contribMsg
}

// contribMoves computes the contribution records and notifications that an
// entity change implies: retractions from old parents, contributions to new.
func (g *grain) contribMoves(old, cur persistence.Entity, mine contribution, ops *[]persistence.Op) []contribMove {
	var moves []contribMove
	edges := []struct {
		edge     string
		from, to string
		value    contribution
	}{
		{edgeContains, old.Parent, cur.Parent, mine},
		{edgeVia, old.ConnectedVia, cur.ConnectedVia, g.selfContribution()},
	}
	for _, e := range edges {
		if e.from != "" && e.from != e.to {
			key := contribKey(e.from, e.edge, g.id)
			*ops = append(*ops, persistence.DeleteDoc(persistence.BucketContrib, key))
			moves = append(moves, contribMove{e.from, contribMsg{Edge: e.edge, Removed: true}})
			delete(g.sent, key)
			delete(g.stored, key)
		}
		if e.to != "" && (e.from != e.to || string(e.value.encode()) != string(contribution{}.encode())) {
			key := contribKey(e.to, e.edge, g.id)
			v := e.value.encode()
			*ops = append(*ops, persistence.PutDoc(persistence.BucketContrib, key, v))
			moves = append(moves, contribMove{e.to, contribMsg{Edge: e.edge, Value: e.value}})
			g.sent[key], g.stored[key] = string(v), string(v)
		}
	}
	return moves
}

func (g *grain) sendMoves(ctx actor.Context, moves []contribMove) {
	for _, m := range moves {
		ent, err := g.sys.store.GetEntity(m.target)
		if err != nil {
			// The ancestor does not exist (yet); its activation will read
			// the stored contribution.
			continue
		}
		body, _ := json.Marshal(m.msg)
		g.sys.notify(ctx, m.target, ent.Kind, notifyContrib, g.id, body)
	}
}

// selfContribution is what this entity alone adds: one device with its
// latest numeric telemetry when it is connectable, and its open alerts.
func (g *grain) selfContribution() contribution {
	var c contribution
	if g.tw == nil {
		return c
	}
	var refs []alertRef
	_ = json.Unmarshal(g.tw.Alerts(), &refs)
	for _, r := range refs {
		c.Alerts++
		c.Worst = max(c.Worst, rules.SeverityRank(r.Severity))
	}
	if !isConnectable(g.behavior) {
		return c
	}
	c.Devices = 1
	if g.tw.Connection().State == "connected" {
		c.Connected = 1
	}
	for k, p := range g.tw.Telemetry() {
		if v, ok := p.Value.(float64); ok {
			if c.Points == nil {
				c.Points = map[string]pointAgg{}
			}
			c.Points[k] = pointAgg{Min: v, Max: v, Sum: v, Count: 1}
		}
	}
	return c
}

// ownContribution is what this entity adds to its contains-parent: itself
// plus everything it contains.
func (g *grain) ownContribution() contribution {
	c := g.selfContribution()
	for _, v := range g.contribs[edgeContains] {
		c.add(v)
	}
	return c
}

var severityNames = map[int]string{5: "critical", 4: "major", 3: "minor", 2: "warning", 1: "info"}

// rollupDoc is the twin's rollup: what lies beneath (children along
// contains, devices connected via a gateway), not the entity itself.
func (g *grain) rollupDoc() map[string]any {
	var sum contribution
	for _, edge := range []string{edgeContains, edgeVia} {
		for _, v := range g.contribs[edge] {
			sum.add(v)
		}
	}
	doc := map[string]any{"devices": float64(sum.Devices), "connected": float64(sum.Connected), "alerts": float64(sum.Alerts)}
	if sum.Alerts > 0 {
		doc["worstSeverity"] = severityNames[sum.Worst]
	}
	for k, p := range sum.Points {
		if k == "devices" || k == "connected" || k == "alerts" || k == "worstSeverity" {
			continue // a point named like a count must not overwrite it
		}
		doc[k] = map[string]any{"min": p.Min, "max": p.Max, "avg": p.Sum / float64(p.Count), "count": float64(p.Count)}
	}
	return doc
}

// refreshUp recomputes this grain's rollup and its contributions to its
// ancestors after something changed, commits what differs from the store
// and tells the ancestors what differs from what they were last told.
func (g *grain) refreshUp(ctx actor.Context, events []Event, force bool) error {
	var ops []persistence.Op
	if isAggregating(g.behavior) {
		if c := g.tw.SetRollup(g.rollupDoc(), g.now()); !c.Noop {
			events = append(events, changeEvent(EventRollup, c))
		}
	}
	var moves []contribMove
	for _, e := range g.edges() {
		key := contribKey(e.to, e.edge, g.id)
		v := e.value.encode()
		if force || g.storedContrib(key) != string(v) {
			ops = append(ops, persistence.PutDoc(persistence.BucketContrib, key, v))
			g.stored[key] = string(v)
		}
		if g.sent[key] != string(v) {
			moves = append(moves, contribMove{e.to, contribMsg{Edge: e.edge, Value: e.value}})
			g.sent[key] = string(v)
		}
	}
	rolled := false
	for _, e := range events {
		rolled = rolled || e.Type == EventRollup
	}
	if len(events) > 0 || len(ops) > 0 {
		if err := g.commit(ops, events...); err != nil {
			return err
		}
	}
	g.sendMoves(ctx, moves)
	if rolled {
		g.evaluate(ctx, nil)
	}
	return nil
}

// storedContrib returns the contribution document on disk for key,
// reading it once per activation.
func (g *grain) storedContrib(key string) string {
	if v, ok := g.stored[key]; ok {
		return v
	}
	doc, err := g.sys.store.GetDoc(persistence.BucketContrib, key)
	if err != nil {
		doc = nil
	}
	g.stored[key] = string(doc)
	return string(doc)
}

// contribOps returns the writes that bring this entity's stored
// contributions up to date; the caller commits them with its own change so
// a restart finds them exact, and notifies the ancestors (debounced).
func (g *grain) contribOps() []persistence.Op {
	var ops []persistence.Op
	for _, e := range g.edges() {
		key := contribKey(e.to, e.edge, g.id)
		if v := string(e.value.encode()); g.storedContrib(key) != v {
			ops = append(ops, persistence.PutDoc(persistence.BucketContrib, key, []byte(v)))
			g.stored[key] = v
		}
	}
	return ops
}

type edgeValue struct {
	edge, to string
	value    contribution
}

// edges lists this entity's contributions to its ancestors.
func (g *grain) edges() []edgeValue {
	var out []edgeValue
	if g.ent.Parent != "" {
		out = append(out, edgeValue{edgeContains, g.ent.Parent, g.ownContribution()})
	}
	if g.ent.ConnectedVia != "" {
		out = append(out, edgeValue{edgeVia, g.ent.ConnectedVia, g.selfContribution()})
	}
	return out
}

// rollupDelay bounds how often a grain passes a changed contribution up:
// telemetry can change a device's contribution hundreds of times a second,
// and every ancestor would otherwise process (and commit) each change.
const rollupDelay = 50 * time.Millisecond

// rollupFlush is the local timer message of a debounced refreshUp.
type rollupFlush struct{}

// scheduleRollup throttles upward propagation: the first change after a
// quiet period goes up at once (low latency for sparse updates), later ones
// are gathered until rollupDelay after the last flush (bounded rate).
func (g *grain) scheduleRollup(ctx actor.Context) {
	if g.rollupPending {
		return
	}
	since := time.Since(g.lastRollup)
	if since >= rollupDelay {
		g.flushRollup(ctx)
		return
	}
	g.rollupPending = true
	scheduler.NewTimerScheduler(ctx).SendOnce(rollupDelay-since, ctx.Self(), rollupFlush{})
}

func (g *grain) flushRollup(ctx actor.Context) {
	g.rollupPending = false
	g.lastRollup = time.Now()
	if !g.exists {
		return
	}
	if err := g.refreshUp(ctx, nil, false); err != nil {
		g.log.Warn("rollup update", "err", err)
	}
}

// repairRollup runs at activation: the stored contributions of the children
// are the truth, so a rollup or an upward contribution that a crash left
// stale is corrected here.
func (g *grain) repairRollup(ctx actor.Context) {
	if err := g.refreshUp(ctx, nil, false); err != nil {
		g.log.Warn("rollup repair", "err", err)
	}
}

func (g *grain) handleNotify(ctx actor.Context, n *actorspb.Notify) {
	if !g.exists {
		return
	}
	if n.Op == notifyGateway {
		g.gatewayState(ctx, n)
		return
	}
	if n.Op != notifyContrib {
		return
	}
	var m contribMsg
	if err := json.Unmarshal(n.LegacyBody, &m); err != nil || (m.Edge != edgeContains && m.Edge != edgeVia) {
		g.log.Warn("bad contribution", "from", n.From)
		return
	}
	if m.Removed {
		delete(g.contribs[m.Edge], n.From)
	} else {
		g.contribs[m.Edge][n.From] = m.Value
	}
	g.scheduleRollup(ctx)
}

func (g *grain) delete(ctx actor.Context) error {
	kids, err := g.sys.store.Children(g.id)
	if err != nil {
		return fmt.Errorf("children of %s: %w", g.id, err)
	}
	if len(kids) > 0 {
		return fmt.Errorf("%w: entity %s has %d children (delete them first or use ?recursive=true)", ErrConflict, g.id, len(kids))
	}
	var ops []persistence.Op
	ops = append(ops, persistence.DeleteEntity(g.id), g.sys.tombstone("entity/"+g.id))
	moves := g.contribMoves(g.ent, persistence.Entity{}, contribution{}, &ops)
	cctx, cancel := g.commitCtx()
	defer cancel()
	if err := g.storeCommit(cctx, "delete", ops...); err != nil {
		return err
	}
	topo, _ := json.Marshal(map[string]any{"entity": g.ent, "deleted": true})
	g.sys.publish(Event{Type: EventTopology, Entity: g.id, Kind: g.kind, Version: g.tw.Version(), Data: topo, TS: g.now()})
	g.sendMoves(ctx, moves)
	g.exists, g.tw = false, nil
	return nil
}

// PatchBody is the body of PATCH /twins/{id}.
type PatchBody struct {
	Desired json.RawMessage `json:"desired,omitempty"`
	Tags    json.RawMessage `json:"tags,omitempty"`
}

func (g *grain) patch(ctx actor.Context, body []byte, ifVersion *int64) ([]byte, error) {
	var p PatchBody
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("%w: patch: %v", ErrBadRequest, err)
	}
	if ifVersion != nil && *ifVersion != g.tw.Version() {
		return nil, fmt.Errorf("%w: twin %s is at version %d, not %d", ErrPrecondition, g.id, g.tw.Version(), *ifVersion)
	}
	// Apply to a copy so a failure of the second section leaves nothing half-applied.
	next := g.tw.Clone()
	now := g.now()
	var events []Event
	tagsChanged := false
	for _, sp := range []struct {
		sec   twin.Section
		patch json.RawMessage
	}{{twin.Desired, p.Desired}, {twin.Tags, p.Tags}} {
		if len(sp.patch) == 0 {
			continue
		}
		c, err := next.Patch(sp.sec, sp.patch, now, g.sys.cfg.Limits)
		if err != nil {
			return nil, mapTwinErr(err)
		}
		if !c.Noop {
			events = append(events, changeEvent(EventTwin, c))
			tagsChanged = tagsChanged || sp.sec == twin.Tags
		}
	}
	if len(events) == 0 {
		return g.tw.MarshalJSON()
	}
	prev := g.tw
	g.tw = next
	var ops []persistence.Op
	if tagsChanged {
		ent := g.ent
		ent.Tags = g.tw.Section(twin.Tags)
		ent.UpdatedAt = now
		ops = append(ops, persistence.PutEntity(ent))
		defer func() { g.ent.Tags = ent.Tags }()
	}
	if err := g.commit(ops, events...); err != nil {
		g.tw = prev
		return nil, err
	}
	g.evaluate(ctx, nil)
	return g.tw.MarshalJSON()
}

func mapTwinErr(err error) error {
	switch {
	case errors.Is(err, twin.ErrTooLarge), errors.Is(err, twin.ErrTooDeep):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case errors.Is(err, twin.ErrMalformed), errors.Is(err, twin.ErrReservedKey):
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return err
}

func (g *grain) reported(ctx actor.Context, body []byte) ([]byte, error) {
	next := g.tw.Clone()
	c, err := next.Patch(twin.Reported, body, g.now(), g.sys.cfg.Limits)
	if err != nil {
		return nil, mapTwinErr(err)
	}
	if !c.Noop {
		prev := g.tw
		g.tw = next
		if err := g.commit(nil, changeEvent(EventTwin, c)); err != nil {
			g.tw = prev
			return nil, err
		}
		g.evaluate(ctx, nil)
	}
	return json.Marshal(map[string]int64{"version": g.tw.Version(), "$version": g.tw.SectionVersion(twin.Reported)})
}

// TelemetryIn is the body of a telemetry request from a protocol adapter.
type TelemetryIn struct {
	TS          time.Time         `json:"ts"`
	Points      map[string]any    `json:"points,omitempty"`
	Raw         []byte            `json:"raw,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
	Properties  map[string]string `json:"properties,omitempty"`
	// MessageID is the device's message ID ($.mid over MQTT); a message
	// whose ID is among the device's recent ones is not stored again.
	MessageID string `json:"mid,omitempty"`
}

// midWindow is how many recent message IDs a device grain remembers.
const midWindow = 4096

func (g *grain) rememberMID(id string) {
	if id == "" {
		return
	}
	if g.mids == nil {
		g.mids = make(map[string]struct{}, 64)
	}
	if len(g.midRing) < midWindow {
		g.midRing = append(g.midRing, id)
	} else {
		delete(g.mids, g.midRing[g.midNext])
		g.midRing[g.midNext] = id
		g.midNext = (g.midNext + 1) % midWindow
	}
	g.mids[id] = struct{}{}
}

// loadMIDs remembers the message IDs of the newest stored records.
func (g *grain) loadMIDs() error {
	g.mids, g.midRing, g.midNext = nil, nil, 0
	ctx, cancel := g.commitCtx()
	defer cancel()
	recs, err := g.sys.store.QueryTelemetry(ctx, g.id, persistence.TelemetryQuery{Limit: midWindow})
	if err != nil {
		return fmt.Errorf("recent message ids of %s: %w", g.id, err)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		g.rememberMID(recs[i].MessageID)
	}
	g.midsLoaded = true
	return nil
}

func (g *grain) telemetryQuery(body []byte) ([]byte, error) {
	var q persistence.TelemetryQuery
	if len(body) > 0 {
		if err := json.Unmarshal(body, &q); err != nil {
			return nil, fmt.Errorf("%w: telemetry query: %v", ErrBadRequest, err)
		}
	}
	ctx, cancel := g.commitCtx()
	defer cancel()
	recs, err := g.sys.store.QueryTelemetry(ctx, g.id, q)
	if err != nil {
		return nil, err
	}
	if recs == nil {
		recs = []persistence.TelemetryRecord{}
	}
	return json.Marshal(recs)
}

func (g *grain) inboxList() ([]byte, error) {
	msgs, err := g.sys.inboxStore().Inbox(g.id)
	if err != nil {
		return nil, err
	}
	if msgs == nil {
		msgs = []persistence.InboxMessage{}
	}
	return json.Marshal(msgs)
}

func (g *grain) telemetry(ctx actor.Context, body []byte) ([]byte, error) {
	var in TelemetryIn
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("%w: telemetry: %v", ErrBadRequest, err)
	}
	if in.MessageID != "" {
		if !g.midsLoaded {
			if err := g.loadMIDs(); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
		}
		if _, dup := g.mids[in.MessageID]; dup {
			// A retransmission of a message already stored: acknowledge it
			// again, store nothing.
			return json.Marshal(map[string]int64{"version": g.tw.Version()})
		}
	}
	if in.TS.IsZero() {
		in.TS = g.now()
	}
	// Strictly increasing per device, so replay order is unambiguous.
	if !in.TS.After(g.lastTS) {
		in.TS = g.lastTS.Add(time.Nanosecond)
	}
	in.TS = in.TS.UTC()
	if f, ok := g.behavior.(TelemetryFilter); ok && in.Points != nil {
		pts, err := f.FilterTelemetry(context.Background(), g.id, in.Points)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		in.Points = pts
	}
	rec := persistence.TelemetryRecord{TS: in.TS, Points: in.Points, Raw: in.Raw, ContentType: in.ContentType,
		Properties: in.Properties, MessageID: in.MessageID}
	ops := []persistence.Op{persistence.AppendTelemetry(g.id, rec)}
	prev := g.tw
	var ev Event
	if len(in.Points) > 0 {
		g.tw = g.tw.Clone()
		c := g.tw.SetTelemetry(in.Points, in.TS)
		data, _ := json.Marshal(map[string]any{"ts": in.TS, "points": in.Points})
		ev = Event{Type: EventTelemetry, Version: c.Version, Data: data, TS: in.TS}
		if !c.Noop {
			g.unflushed++
		}
	} else {
		data, _ := json.Marshal(map[string]any{"ts": in.TS, "contentType": in.ContentType, "size": len(in.Raw)})
		ev = Event{Type: EventTelemetry, Version: g.tw.Version(), Data: data, TS: in.TS}
	}
	// The record is the durable copy; the document follows in batches. The
	// rollup contribution changes with the latest values: it is written in
	// the same commit, and the ancestors are told after a short delay.
	contribChanged := false
	if len(in.Points) > 0 {
		if cops := g.contribOps(); len(cops) > 0 {
			ops = append(ops, cops...)
			contribChanged = true
		}
	}
	if g.unflushed >= flushEvery || (g.unflushed > 0 && g.now().Sub(g.lastFlush) >= flushInterval) {
		if err := g.commit(ops, ev); err != nil {
			g.tw, g.stored = prev, map[string]string{}
			return nil, err
		}
	} else {
		cctx, cancel := g.commitCtx()
		err := g.storeCommit(cctx, "telemetry of", ops...)
		cancel()
		if err != nil {
			g.tw, g.stored = prev, map[string]string{}
			return nil, err
		}
		ev.Entity, ev.Kind = g.id, g.kind
		g.sys.publish(ev)
	}
	g.lastTS = in.TS
	g.rememberMID(in.MessageID)
	if contribChanged {
		g.scheduleRollup(ctx)
	}
	if len(in.Points) > 0 {
		g.evaluate(ctx, in.Points)
	}
	return json.Marshal(map[string]int64{"version": g.tw.Version()})
}

// ConnectionIn is the body of a connection-state request.
type ConnectionIn struct {
	Connected bool      `json:"connected"`
	Node      string    `json:"node,omitempty"`
	Since     time.Time `json:"since,omitempty"`
}

func (g *grain) connection(ctx actor.Context, body []byte) ([]byte, error) {
	var in ConnectionIn
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("%w: connection: %v", ErrBadRequest, err)
	}
	if !isConnectable(g.behavior) {
		return nil, fmt.Errorf("%w: a %s does not connect", ErrBadRequest, g.kind)
	}
	if in.Since.IsZero() {
		in.Since = g.now()
	}
	state := "disconnected"
	if in.Connected {
		state = "connected"
	}
	c := g.tw.SetConnection(twin.Connection{State: state, Since: in.Since.UTC(), Node: in.Node})
	var events []Event
	if !c.Noop {
		events = append(events, changeEvent(EventConnection, c))
	}
	if err := g.refreshUp(ctx, events, false); err != nil {
		return nil, err
	}
	if !c.Noop && isAggregating(g.behavior) {
		g.tellChildren(ctx, in.Connected)
	}
	return json.Marshal(map[string]int64{"version": g.tw.Version()})
}

// tellChildren tells the devices connected via this gateway that it came
// online or went offline.
func (g *grain) tellChildren(ctx actor.Context, online bool) {
	kids, err := g.sys.store.ConnectedVia(g.id)
	if err != nil {
		g.log.Warn("devices via gateway", "err", err)
		return
	}
	body, _ := json.Marshal(map[string]bool{"online": online})
	for _, id := range kids {
		ent, err := g.sys.store.GetEntity(id)
		if err != nil {
			continue
		}
		g.sys.notify(ctx, id, ent.Kind, notifyGateway, g.id, body)
	}
}

// gatewayState mirrors the gateway's state on a device that speaks through
// it: "connected" while the gateway is online, "unreachable" while it is
// offline. A device with its own direct session keeps its own state.
func (g *grain) gatewayState(ctx actor.Context, n *actorspb.Notify) {
	if g.ent.ConnectedVia != n.From || !isConnectable(g.behavior) {
		return
	}
	cur := g.tw.Connection()
	if cur.State == "connected" && !strings.HasPrefix(cur.Node, viaPrefix) {
		return
	}
	var m struct {
		Online bool `json:"online"`
	}
	_ = json.Unmarshal(n.LegacyBody, &m)
	state := "unreachable"
	if m.Online {
		state = "connected"
	}
	c := g.tw.SetConnection(twin.Connection{State: state, Since: g.now(), Node: viaPrefix + n.From})
	if c.Noop {
		return
	}
	if err := g.refreshUp(ctx, []Event{changeEvent(EventConnection, c)}, false); err != nil {
		g.log.Warn("gateway state", "err", err)
	}
}
