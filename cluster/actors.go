package cluster

import (
	"context"
	"encoding/json"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/twinmesh/twinmesh/actors/actorspb"
)

// nodeActor answers other members' requests. Each is handled on its own
// goroutine (a commit waits for its group commit), at most cap(p.work) at
// once; beyond that the actor's mailbox holds them, which pushes back on
// the senders.
type nodeActor struct{ p *Placement }

func (a *nodeActor) Receive(ctx actor.Context) {
	p := a.p
	switch m := ctx.Message().(type) {
	case *actorspb.MemberRequest:
		sender := ctx.Sender()
		if sender == nil {
			return
		}
		p.work <- struct{}{}
		go func() {
			defer func() { <-p.work }()
			rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res := p.handle(rctx, m)
			p.c.ActorSystem.Root.Send(sender, res)
		}()
	case *actorspb.MemberNotify:
		if m.Op == opInterest {
			if err := p.heardInterest(m.Body); err != nil {
				p.log.Warn("bad event interest from member", "err", err)
			}
			return
		}
		if m.Op != opEvents {
			return
		}
		var evs []json.RawMessage
		if err := json.Unmarshal(m.Body, &evs); err != nil {
			p.log.Warn("bad event batch from member", "err", err)
			return
		}
		p.deliverEvents(evs)
	}
}

// handoff asks the placement actor to stop every local grain.
type handoff struct{}

type grainRef struct {
	ci  *pcluster.ClusterIdentity
	pid *actor.PID
}

// placementActor spawns the grains this node owns and stops those it no
// longer owns.
type placementActor struct {
	p      *Placement
	grains map[string]grainRef // by ClusterIdentity.AsKey()
	closed bool
}

func (a *placementActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *pcluster.ActivationRequest:
		a.activate(ctx, m)
	case *actor.Terminated:
		a.terminated(ctx, m)
	case *pcluster.ClusterTopology:
		a.rebalance(ctx)
	case superseded:
		a.supersede(ctx, m.identity)
	case handoff:
		a.closed = true
		a.stopAll(ctx)
		ctx.Respond(&actorspb.MemberResponse{Status: 200})
	case *actor.Stopping:
		a.stopAll(ctx)
	}
}

func (a *placementActor) activate(ctx actor.Context, m *pcluster.ActivationRequest) {
	key := m.ClusterIdentity.AsKey()
	if g, ok := a.grains[key]; ok {
		ctx.Respond(&pcluster.ActivationResponse{Pid: g.pid})
		return
	}
	if a.closed {
		// Leaving: refuse, so the caller retries on the next owner.
		ctx.Respond(&pcluster.ActivationResponse{Failed: true})
		return
	}
	kind, ok := a.p.c.TryGetClusterKind(m.ClusterIdentity.Kind)
	if !ok {
		ctx.Respond(&pcluster.ActivationResponse{Failed: true})
		return
	}
	pid := ctx.SpawnPrefix(pcluster.WithClusterIdentity(kind.Props, m.ClusterIdentity), m.ClusterIdentity.Identity)
	kind.Inc()
	a.grains[key] = grainRef{ci: m.ClusterIdentity, pid: pid}
	a.p.grains.Add(1)
	ctx.Respond(&pcluster.ActivationResponse{Pid: pid})
}

func (a *placementActor) terminated(_ actor.Context, m *actor.Terminated) {
	for key, g := range a.grains {
		if !g.pid.Equal(m.Who) {
			continue
		}
		delete(a.grains, key)
		a.p.grains.Add(-1)
		if kind, ok := a.p.c.TryGetClusterKind(g.ci.Kind); ok {
			kind.Dec()
		}
		a.p.c.MemberList.BroadcastEvent(&pcluster.ActivationTerminated{Pid: g.pid, ClusterIdentity: g.ci}, true)
		return
	}
}

// rebalance moves the grains another member owns now: each flushes and,
// for MoveGrace, answers every request with "moved" so callers retry at
// once on the new owner (a request queued behind a plain poison pill is
// dropped and costs its caller a whole timeout), then stops. The new
// owner's activation claims the grain, which fences this one.
func (a *placementActor) rebalance(ctx actor.Context) {
	for _, g := range a.grains {
		if owner := a.p.ownerOf(g.ci.Identity, g.ci.Kind); owner != "" && owner != a.p.self {
			ctx.Send(g.pid, moveMsg)
		}
	}
}

// superseded tells the placement actor that another member claimed a
// grain: a local activation of it must step aside.
type superseded struct{ identity string }

// supersede moves away every local activation of identity (whatever its
// kind): it answers "moved" for MoveGrace, so callers retry and reach the
// owner the placement names, then stops.
func (a *placementActor) supersede(ctx actor.Context, identity string) {
	for _, g := range a.grains {
		if g.ci.Identity == identity {
			a.p.log.Warn("grain claimed by another member; local activation steps aside", "entity", identity)
			ctx.Send(g.pid, moveMsg)
		}
	}
}

// stopAll moves every grain away and waits until they stopped.
func (a *placementActor) stopAll(ctx actor.Context) {
	for _, g := range a.grains {
		ctx.Send(g.pid, moveMsg)
	}
	if len(a.grains) > 0 {
		time.Sleep(MoveGrace)
	}
	futures := make([]*actor.Future, 0, len(a.grains))
	for _, g := range a.grains {
		futures = append(futures, ctx.PoisonFuture(g.pid))
	}
	for _, f := range futures {
		_ = f.Wait()
	}
}

// moveMsg tells a grain that it moves to another member; it then answers
// "moved" for MoveGrace before it stops. The actor layer's grains
// implement both.
var moveMsg = &actorspb.Notify{Body: &actorspb.Notify_Move{Move: &actorspb.Move{}}}

// MoveGrace is how long a moving grain answers "moved" before it stops.
const MoveGrace = 300 * time.Millisecond

var _ pcluster.IdentityLookup = (*Placement)(nil)
