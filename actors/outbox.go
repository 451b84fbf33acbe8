package actors

import (
	"context"
	"fmt"
	"strings"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/persistence"
)

// Router matches a grain's events against message routes (AMQP, package
// protocols/amqp implements it), inside the grain and before its commit:
// what it routes is written to the grain's outbox in the commit that
// stores what the events report, so a message is routed if and only if
// its cause was committed.
type Router interface {
	// Active reports whether any route is enabled; while none is, grains
	// do not call RouteEvents, and their commits stay as they are.
	Active() bool
	// RouteEvents returns the outbox messages the events of one commit produce,
	// in event order (nil for none). It runs in the grain: it must not
	// block for long nor call the actor system.
	RouteEvents(events []Event) []OutboxMessage
	// Stored is called after the commit that stored RouteEvents's messages for
	// the grain of device.
	Stored(device string)
}

// OutboxMessage is a message Router.RouteEvents puts in the grain's outbox.
type OutboxMessage struct {
	Endpoint string
	Data     []byte // opaque to the actor system
}

// SetRouter installs the route table grains match their events against
// (nil: none). A System starts without one.
func (s *System) SetRouter(r Router) {
	if r == nil {
		s.router.Store(nil)
		return
	}
	s.router.Store(&r)
}

// activeRouter returns the router when a route is enabled, nil otherwise.
func (s *System) activeRouter() Router {
	p := s.router.Load()
	if p == nil || !(*p).Active() {
		return nil
	}
	return *p
}

// SettleOutbox removes entries from device's outbox (the broker accepted
// them, or they were dead-lettered): a request to the device's grain, whose
// commit replicates the removal. kind is the device's kind (its entity may
// be gone: a deleted device's outbox still drains).
func (s *System) SettleOutbox(ctx context.Context, device, kind string, seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	if k, err := s.kindOf(device); err == nil {
		kind = k
	}
	if kind == "" {
		return fmt.Errorf("%w: kind of %s", ErrNotFound, device)
	}
	_, err := s.call(ctx, device, kind, &actorspb.Request{Body: &actorspb.Request_OutboxSettle{
		OutboxSettle: &actorspb.OutboxSettle{Seqs: seqs}}})
	return err
}

// outboxReader is the part of the store a grain reads its outbox's last
// sequence from.
type outboxReader interface {
	OutboxLastSeq(device string) (uint64, error)
}

// routeOps matches res's events against the router's routes and returns
// the outbox ops to commit with res (nil when nothing matched).
func (g *grain) routeOps(r Router, res *entity.Result) ([]persistence.Op, error) {
	evs := make([]Event, len(res.Events))
	for i, e := range res.Events {
		evs[i] = publicEvent(e)
	}
	msgs := r.RouteEvents(evs)
	if len(msgs) == 0 {
		return nil, nil
	}
	if g.outSeq == 0 {
		// The first routed message of this activation goes after what an
		// earlier owner left in the outbox, whatever the clocks say.
		if or, ok := g.sys.store.(outboxReader); ok {
			last, err := or.OutboxLastSeq(g.id)
			if err != nil {
				return nil, fmt.Errorf("outbox of %s: %w", g.id, err)
			}
			g.outSeq = last
		}
	}
	ops := make([]persistence.Op, len(msgs))
	for i, m := range msgs {
		// Unix nanoseconds when the clock is ahead of the last entry, so
		// that an outbox emptied and refilled keeps growing.
		g.outSeq = max(g.outSeq+1, uint64(max(g.now().UnixNano(), 0)))
		ops[i] = persistence.PutOutbox(persistence.OutboxEntry{Device: g.id, Seq: g.outSeq, Endpoint: m.Endpoint, Data: m.Data})
	}
	return ops, nil
}

// settleOutbox commits the removal of outbox entries (OutboxSettle).
func (g *grain) settleOutbox(m *actorspb.OutboxSettle) *actorspb.Response {
	ops := make([]persistence.Op, len(m.Seqs))
	for i, seq := range m.Seqs {
		ops[i] = persistence.DeleteOutbox(g.id, seq)
	}
	ctx, cancel := g.reqCtx()
	defer cancel()
	// The grain's state in memory does not hold the outbox: a commit
	// whose outcome is unknown leaves nothing to diverge (the sender
	// settles again, or sends again: duplicates, never losses).
	if err := g.commitOps(ctx, "settle outbox", ops); err != nil {
		return entity.ErrorResponse(err)
	}
	return &actorspb.Response{}
}

// publicEvent is the Event sinks and routers see of a grain's event.
func publicEvent(e entity.Event) Event {
	return Event{Type: e.Type, Entity: e.Entity, Kind: e.Kind, Version: e.Version, Section: e.Section,
		SectionVersion: e.SectionVersion, Data: e.Data, TS: e.TS, Telemetry: e.Telemetry}
}

// PutAMQPDefinition stores an AMQP endpoint, route or ingress definition
// (persistence.BucketAMQP, key "<kind>/<name>") on every member, as the
// catalog is, and clears a tombstone of the key.
func (s *System) PutAMQPDefinition(ctx context.Context, key string, doc []byte) error {
	tomb := string(persistence.BucketAMQP) + "/" + key
	return s.commitCatalog(ctx, persistence.PutDoc(persistence.BucketAMQP, key, doc), untombstone(tomb))
}

// DeleteAMQPDefinition deletes a definition on every member and records a
// tombstone, so that a member away at the time deletes it when it is back.
func (s *System) DeleteAMQPDefinition(ctx context.Context, key string) error {
	tomb := string(persistence.BucketAMQP) + "/" + key
	return s.commitCatalog(ctx, persistence.DeleteDoc(persistence.BucketAMQP, key), s.tombstone(tomb))
}

// AMQPDefinitions returns the AMQP definitions this member holds, by key.
func (s *System) AMQPDefinitions() (map[string][]byte, error) {
	return s.store.ListDocs(persistence.BucketAMQP, "")
}

// AMQPDeleted returns the keys of the AMQP definitions deleted cluster-wide
// and not defined again since (their tombstones).
func (s *System) AMQPDeleted() (map[string]bool, error) {
	prefix := string(persistence.BucketAMQP) + "/"
	docs, err := s.store.ListDocs(persistence.BucketTombstones, prefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(docs))
	for k := range docs {
		out[strings.TrimPrefix(k, prefix)] = true
	}
	return out, nil
}
