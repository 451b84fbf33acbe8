package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/persistence"
)

// grain is the IO shell around one entity's pure core (package entity): it
// loads the core, steps it with each message, commits the ops of each
// result through one fenced path, then publishes, sends, replies and sets
// timers. It holds no entity logic of its own.
type grain struct {
	sys    *System
	kind   plugin.Kind
	traits entity.Traits
	core   *entity.Core
	log    *slog.Logger
	id     string

	// epoch fences this activation's writes (0 on a node without
	// replication); fenced is set once a newer activation claimed the
	// grain, after which the grain answers its current request and stops.
	epoch  uint64
	fenced bool
	// diverged is set when a commit failed after it may have reached
	// storage (replicas too few, a deadline during the commit): the store
	// may hold the write the state in memory dropped. The grain answers
	// the error and stops; the next activation loads what was stored, so a
	// retried message is recognised and a twin version is never given to
	// two different writes.
	diverged bool
	// moving is set when the placement moves the grain to another member:
	// it answers every request with ErrFenced until it stops.
	moving bool
	// wrongKind is set when the entity is stored with another kind than
	// this grain's: it answers NotFound until it passivates.
	wrongKind bool
	// outSeq is the sequence of the last outbox entry this activation
	// wrote (0: none yet; routeOps reads the stored one first).
	outSeq uint64

	cancelTick scheduler.CancelFunc
	timers     *scheduler.TimerScheduler

	// replyTo is where the request being handled is answered when it came
	// as a localRequest; nil while handling a protoactor request (answered
	// with ctx.Respond) or no request at all.
	replyTo chan<- localReply
}

func (s *System) grainProducer(k plugin.Kind) actor.Producer {
	return func() actor.Actor {
		return &grain{sys: s, kind: k, traits: k.Info().Traits}
	}
}

// moveDone is the local timer message that ends a move's grace period.
type moveDone struct{}

// moveGrace is cluster.MoveGrace: how long a moving grain answers "moved".
const moveGrace = 300 * time.Millisecond

// Receive implements actor.Actor.
func (g *grain) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *pcluster.ClusterInit:
		g.activate(ctx, m.Identity.Identity)
	case *actorspb.Request:
		g.handle(ctx, m)
	case *localRequest:
		g.replyTo = m.reply
		g.handle(ctx, m.req)
		g.replyTo = nil
	case *actorspb.Notify:
		if m.GetMove() != nil {
			g.move(ctx)
			return
		}
		if g.wrongKind {
			g.redirect(ctx, m)
			return
		}
		g.run(ctx, m, false)
	case entity.RuleTick, entity.RollupFlush:
		g.run(ctx, m, false)
	case moveDone:
		ctx.Stop(ctx.Self())
	case *actor.ReceiveTimeout:
		g.run(ctx, entity.Passivate{}, false)
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		if !g.moving {
			g.run(ctx, entity.Passivate{}, false)
		}
	case *actor.Stopped:
		g.sys.deaths.died(ctx.Self().Id)
		if g.id != "" {
			g.sys.activeGrains.Add(-1)
			g.sys.metrics.active.WithLabelValues(g.kind.Info().Name).Dec()
		}
	}
}

func (g *grain) now() time.Time { return g.sys.cfg.Now().UTC() }

func (g *grain) reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.sys.cfg.RequestTimeout)
}

func (g *grain) activate(ctx actor.Context, id string) {
	name := g.kind.Info().Name
	g.id = id
	g.log = g.sys.log.With("entity", id, "kind", name)
	g.timers = scheduler.NewTimerScheduler(ctx)
	g.sys.activeGrains.Add(1)
	g.sys.metrics.activations.WithLabelValues(name).Inc()
	g.sys.metrics.active.WithLabelValues(name).Inc()
	ctx.SetReceiveTimeout(g.sys.cfg.IdleTimeout)
	if r := g.sys.cfg.Replication; r != nil {
		cctx, cancel := g.reqCtx()
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
	g.core = entity.New(entity.Config{Kind: name, Traits: g.traits, Plugin: g.kind, Limits: g.sys.cfg.Limits,
		Rules: g.sys.ruleList, Log: g.log}, storeReader{g.sys.store}, id)
	lctx, cancel := g.reqCtx()
	err := g.core.Load(lctx, g.now())
	cancel()
	if errors.Is(err, entity.ErrWrongKind) {
		// Addressed by a stale kind (see System.callCached): answer
		// NotFound to what was sent here, so the caller looks the kind up
		// again, and stop when idle.
		g.log.Info("grain of the wrong kind", "err", err)
		g.core, g.wrongKind = nil, true
		return
	}
	if err != nil {
		// Without its state the grain must not answer; stopping makes the
		// next request re-activate it and try again.
		g.log.Error("activation failed", "err", err)
		g.fenced = true
		ctx.Stop(ctx.Self())
		return
	}
	g.log.Info("grain activated", "epoch", g.epoch, "node", g.sys.cfg.NodeName)
	if g.core.Exists() {
		g.run(ctx, entity.Activated{}, false)
	}
}

// move flushes the twin and, for moveGrace, answers "moved" to every
// request (callers retry on the new owner at once) before the grain stops.
func (g *grain) move(ctx actor.Context) {
	if g.moving {
		return
	}
	g.run(ctx, entity.Passivate{}, false)
	g.moving = true
	g.timers.SendOnce(moveGrace, ctx.Self(), moveDone{})
}

func (g *grain) handle(ctx actor.Context, req *actorspb.Request) {
	switch {
	case g.wrongKind:
		g.respond(ctx, entity.ErrorResponse(errcode.New(errcode.NotFound, "entity %s is not a %s", g.id, g.kind.Info().Name)))
		return
	case g.moving:
		g.respond(ctx, entity.ErrorResponse(errcode.New(errcode.Fenced, "entity %s is moving to another node", g.id)))
		return
	case g.core == nil || g.fenced || g.diverged:
		g.respond(ctx, entity.ErrorResponse(errcode.New(errcode.Fenced, "activation of %s was superseded", g.id)))
		ctx.Stop(ctx.Self())
		return
	}
	// Reads of what the owner holds are not the core's business.
	switch b := req.Body.(type) {
	case *actorspb.Request_TelemetryQuery:
		g.respondConfirmed(ctx, g.telemetryQuery(b.TelemetryQuery))
		return
	case *actorspb.Request_InboxList:
		g.respondConfirmed(ctx, g.inboxList())
		return
	case *actorspb.Request_OutboxSettle:
		g.respond(ctx, g.settleOutbox(b.OutboxSettle))
		if g.fenced {
			ctx.Stop(ctx.Self())
		}
		return
	}
	g.run(ctx, req, true)
}

// run steps the core with msg and carries out the result and its
// follow-ups; it answers the request when answer is set.
func (g *grain) run(ctx actor.Context, msg any, answer bool) {
	if g.core == nil || g.fenced || g.diverged || (g.moving && answer) {
		return
	}
	sctx := g.sys.runCtx()
	now := g.now()
	res := g.core.Step(sctx, now, msg)
	var reply *actorspb.Response
	stop, wrote := false, res != nil && len(res.Ops) > 0
	acked := false // the request's own write is durable: its answer stands
	router := g.sys.activeRouter()
	for first := true; res != nil; first = false {
		var routed []persistence.Op
		if router != nil && len(res.Events) > 0 {
			var err error
			if routed, err = g.routeOps(router, res); err != nil {
				// Nothing is committed: the request fails as a commit
				// would (the caller retries; no event goes out unrouted).
				g.core.Abort(res)
				if first && answer {
					reply = entity.ErrorResponse(errcode.Wrap(errcode.Unavailable, err))
				} else {
					g.log.Warn("route events failed; state unchanged", "what", res.What(), "err", err)
				}
				break
			}
		}
		if len(res.Ops) > 0 || len(routed) > 0 {
			if err := g.commit(sctx, res.What(), res.Ops, routed...); err != nil {
				g.core.Abort(res)
				g.diverged = !g.fenced
				if first && answer {
					reply = entity.ErrorResponse(err)
				} else {
					g.log.Warn("commit failed; state unchanged", "what", res.What(), "err", err)
				}
				break
			}
		}
		if len(routed) > 0 {
			router.Stored(g.id)
		}
		g.effects(ctx, res)
		if first {
			reply = res.Reply
			acked = wrote
		}
		stop = stop || res.Stop
		res = g.core.Commit(sctx, now, res)
	}
	if answer && !wrote && !g.fenced && !g.diverged {
		// The answer comes from memory (a read, or a write that changed
		// nothing, such as a resent message): it must not be stale.
		reply = g.confirmed(reply)
	}
	if g.fenced {
		// A newer activation owns the grain: say so (the caller retries
		// and reaches it) and stop, without writing anything more — unless
		// the answer already is an error, or the request's own write was
		// acknowledged before a follow-up met the fence: a retry would
		// then apply it twice.
		if !acked && (reply == nil || reply.Code == 0) {
			reply = g.superseded()
		}
		stop = true
	}
	if g.diverged {
		g.log.Warn("commit failed; the activation stops and the next one loads what was stored")
		stop = true
	}
	if answer {
		if reply == nil {
			reply = &actorspb.Response{}
		}
		g.respond(ctx, reply)
	}
	if stop {
		ctx.Stop(ctx.Self())
	}
}

// respond answers the request being handled: through its reply channel
// when it is a localRequest (never blocks: the channel has room for the one
// answer), with ctx.Respond otherwise.
func (g *grain) respond(ctx actor.Context, r *actorspb.Response) {
	if g.replyTo != nil {
		g.replyTo <- localReply{res: r}
		g.replyTo = nil
		return
	}
	ctx.Respond(r)
}

// respondConfirmed answers a read the core does not handle with reply once
// it is confirmed, and stops the grain if it turned out superseded.
func (g *grain) respondConfirmed(ctx actor.Context, reply *actorspb.Response) {
	g.respond(ctx, g.confirmed(reply))
	if g.fenced {
		ctx.Stop(ctx.Self())
	}
}

// confirmed returns reply once the cluster confirmed that this activation
// still owns the grain, an error response otherwise (setting fenced if it
// was superseded): a paused or partitioned former owner must not answer
// from the state it holds in memory. That includes refusals that observed
// the state (412 on a version that moved on, 404): only "unavailable"
// answers, and every answer on a node without replication, go out as they
// are.
func (g *grain) confirmed(reply *actorspb.Response) *actorspb.Response {
	r := g.sys.cfg.Replication
	if r == nil {
		return reply
	}
	if reply != nil {
		if c := errcode.Code(reply.Code); c == errcode.Unavailable || c == errcode.Fenced {
			return reply
		}
	}
	cctx, cancel := g.reqCtx()
	defer cancel()
	err := r.Confirm(cctx, g.id, g.epoch)
	switch {
	case err == nil:
		return reply
	case errors.Is(err, persistence.ErrFenced):
		g.fence(err)
		return g.superseded()
	}
	return entity.ErrorResponse(errcode.New(errcode.Unavailable, "read %s: %v", g.id, err))
}

// fence records that a newer activation claimed the grain.
func (g *grain) fence(err error) {
	g.fenced = true
	g.log.Warn("grain fenced", "epoch", g.epoch, "err", err)
}

// superseded is the answer of an activation a newer one replaced: callers
// retry and reach the new owner.
func (g *grain) superseded() *actorspb.Response {
	return entity.ErrorResponse(errcode.New(errcode.Fenced, "entity %s: activation of epoch %d was superseded", g.id, g.epoch))
}

// commit writes ops of this grain, fenced by the activation's epoch,
// through the replication layer when the node is clustered. Every write of
// a grain goes through here.
func (g *grain) commit(ctx context.Context, what string, eops []entity.Op, extra ...persistence.Op) error {
	ops := make([]persistence.Op, len(eops), len(eops)+len(extra))
	for i, o := range eops {
		ops[i] = storeOp(o)
	}
	return g.commitOps(ctx, what, append(ops, extra...))
}

// commitOps is commit for ops already in the store's form.
func (g *grain) commitOps(ctx context.Context, what string, ops []persistence.Op) error {
	var err error
	switch r := g.sys.cfg.Replication; {
	case r == nil:
		err = g.sys.store.Commit(ctx, ops...)
	case g.fenced:
		return errcode.New(errcode.Fenced, "activation of epoch %d was superseded", g.epoch)
	default:
		err = r.Commit(ctx, g.id, g.epoch, ops)
		if errors.Is(err, persistence.ErrFenced) {
			g.fence(err)
			if errcode.Of(err) != errcode.Unavailable {
				// Refused here, written nowhere: callers send it again to
				// the new owner.
				return errcode.New(errcode.Fenced, "%s %s: %v", what, g.id, err)
			}
			// Written here, refused by a replica: the outcome is unknown.
		}
	}
	if err != nil {
		return errcode.New(errcode.Unavailable, "%s %s: %v", what, g.id, err)
	}
	return nil
}

// storeOp translates an op of the core into the store's.
func storeOp(o entity.Op) persistence.Op {
	switch o.Kind {
	case entity.OpPutTwin:
		return persistence.PutTwin(o.Key, o.Doc)
	case entity.OpPutEntity:
		return persistence.PutEntity(o.Entity)
	case entity.OpDeleteEntity:
		return persistence.DeleteEntity(o.Key)
	case entity.OpAppendTelemetry:
		return persistence.AppendTelemetry(o.Key, o.Telemetry)
	case entity.OpPutDoc:
		return persistence.PutDoc(persistence.Bucket(o.Bucket), o.Key, o.Doc)
	case entity.OpDeleteDoc:
		return persistence.DeleteDoc(persistence.Bucket(o.Bucket), o.Key)
	case entity.OpPutInbox:
		return persistence.PutInbox(o.Inbox)
	case entity.OpDeleteInbox:
		return persistence.DeleteInbox(o.Key, o.Msg)
	}
	panic(fmt.Sprintf("actors: unknown entity op %d", o.Kind))
}

// effects carries out what a committed result asks for besides its reply.
func (g *grain) effects(ctx actor.Context, res *entity.Result) {
	for _, e := range res.Events {
		g.sys.publish(publicEvent(e))
	}
	for _, s := range res.Sends {
		g.send(ctx, s)
	}
	for _, a := range res.Actions {
		g.sys.actions.enqueue(a)
	}
	if t := res.Timers; t.RuleTickSet {
		if g.cancelTick != nil {
			g.cancelTick()
			g.cancelTick = nil
		}
		if !t.RuleTick.IsZero() {
			wait := max(t.RuleTick.Sub(g.now()), time.Millisecond)
			g.cancelTick = g.timers.SendOnce(wait, ctx.Self(), entity.RuleTick{})
		}
	}
	if d := res.Timers.RollupAfter; d > 0 {
		g.timers.SendOnce(d, ctx.Self(), entity.RollupFlush{})
	}
	if res.TimersChanged {
		g.sys.timers.set(g.id, g.kind.Info().Name, res.DurableTimers)
	}
}

// send delivers a notification to another entity, activating it if needed.
func (g *grain) send(ctx actor.Context, s entity.Send) {
	msg := s.Notify(g.id)
	if s.ViaChildren() {
		kids, err := g.sys.store.ConnectedVia(g.id)
		if err != nil {
			g.log.Warn("devices via gateway", "err", err)
			return
		}
		for _, id := range kids {
			if ent, err := g.sys.store.GetEntity(id); err == nil {
				g.sys.notify(ctx, id, ent.Kind, msg)
			}
		}
		return
	}
	kind := s.Kind
	if kind == "" {
		var ok bool
		if kind, ok = g.sys.kinds.Get(s.To); !ok {
			ent, err := g.sys.store.GetEntity(s.To)
			if err != nil {
				// The target does not exist (yet); an ancestor's activation
				// reads the stored contribution.
				return
			}
			kind = ent.Kind
			g.sys.kinds.Add(s.To, kind)
		}
	}
	g.sys.notify(ctx, s.To, kind, msg)
}

// redirect passes a notification that reached this grain of the wrong kind
// (addressed by a stale kind cache entry: the entity was deleted and created
// again with another kind) to the grain of the stored kind.
func (g *grain) redirect(ctx actor.Context, n *actorspb.Notify) {
	g.sys.kinds.Remove(g.id)
	ent, err := g.sys.store.GetEntity(g.id)
	if err != nil || ent.Kind == g.kind.Info().Name {
		return // deleted meanwhile: an activation reads what was stored
	}
	g.sys.kinds.Add(g.id, ent.Kind)
	g.sys.notify(ctx, g.id, ent.Kind, n)
}

func (g *grain) telemetryQuery(q *actorspb.TelemetryQuery) *actorspb.Response {
	pq := persistence.TelemetryQuery{Name: q.Name, Limit: int(q.Limit)}
	if q.FromUnixNano != 0 {
		pq.From = time.Unix(0, q.FromUnixNano).UTC()
	}
	if q.ToUnixNano != 0 {
		pq.To = time.Unix(0, q.ToUnixNano).UTC()
	}
	ctx, cancel := g.reqCtx()
	defer cancel()
	recs, err := g.sys.store.QueryTelemetry(ctx, g.id, pq)
	if err != nil {
		return entity.ErrorResponse(errcode.Wrap(errcode.Unavailable, err))
	}
	if recs == nil {
		recs = []persistence.TelemetryRecord{}
	}
	return jsonResponse(recs)
}

func (g *grain) inboxList() *actorspb.Response {
	msgs, err := g.sys.inboxStore().Inbox(g.id)
	if err != nil {
		return entity.ErrorResponse(errcode.Wrap(errcode.Unavailable, err))
	}
	if msgs == nil {
		msgs = []persistence.InboxMessage{}
	}
	return jsonResponse(msgs)
}
