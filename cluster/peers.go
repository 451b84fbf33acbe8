package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// Broadcast queues an event of type eventType (encoded as JSON) for the
// other members that want it (see interest.go). It never blocks: when the
// bounded queue is full the event is dropped and counted (events are
// notifications; state is always read from grains).
func (p *Placement) Broadcast(eventType string, ev any) {
	if p.Members() <= 1 || p.closed.Load() {
		return // alone: not even worth encoding
	}
	bit := bulkBit(eventType)
	if bit != 0 && !p.wantedByAny(bit) {
		p.metrics.eventsUnwanted.Inc()
		return // nobody listens: not worth encoding either
	}
	b, err := json.Marshal(ev)
	if err != nil {
		p.log.Warn("event not forwarded: cannot encode", "err", err)
		return
	}
	select {
	case p.events <- queuedEvent{bit: bit, b: b}:
	default:
		p.metrics.eventsDropped.Inc()
	}
}

// queuedEvent is an encoded event waiting for forwardEvents; bit is its
// bulk type's, 0 for an event every member gets.
type queuedEvent struct {
	bit uint8
	b   json.RawMessage
}

// forwardEvents batches queued events and sends each member the events of
// a batch it wants. It runs until Shutdown.
func (p *Placement) forwardEvents() {
	defer p.wg.Done()
	const maxBatch = 256
	batch := make([]queuedEvent, 0, maxBatch)
	var bodies [allBulk + 1][]byte // by what a member wants
	flush := func() {
		if len(batch) == 0 {
			return
		}
		clear(bodies[:])
		now := time.Now()
		for _, a := range p.memberAddrs() {
			if a == p.self {
				continue
			}
			want := p.wantedBy(a, now)
			if bodies[want] == nil {
				evs := make([]json.RawMessage, 0, len(batch))
				for _, e := range batch {
					if e.bit == 0 || e.bit&want != 0 {
						evs = append(evs, e.b)
					}
				}
				if len(evs) == 0 {
					bodies[want] = []byte{} // nothing for such members
				} else {
					bodies[want], _ = json.Marshal(evs)
				}
			}
			if len(bodies[want]) > 0 {
				p.c.ActorSystem.Root.Send(actor.NewPID(a, nodeActorName), &actorspb.MemberNotify{Op: opEvents, Body: bodies[want]})
			}
		}
		batch = batch[:0]
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case ev := <-p.events:
			batch = append(batch, ev)
			if len(batch) == maxBatch {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// Invoke runs a direct method on a device whose MQTT session is on the
// member named node. Its errors carry errcode codes: the member's own
// (errcode.NotConnected, errcode.Timeout, …), errcode.NotConnected when no
// live member has that name (ErrNoMember), errcode.Unavailable when the
// member could not be reached.
func (p *Placement) Invoke(ctx context.Context, node, device, method string, payload []byte) (int, []byte, error) {
	addr, ok := p.resolve(node)
	if !ok {
		return 0, nil, fmt.Errorf("%w: %s", ErrNoMember, node)
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	var res invokeRes
	if err := p.request(ctx, addr, opInvoke, invokeReq{Device: device, Method: method, Payload: payload, Timeout: timeout.Milliseconds()}, &res); err != nil {
		if errcode.Of(err) == errcode.Internal {
			err = errcode.Wrap(errcode.Unavailable, err)
		}
		return 0, nil, err
	}
	return res.Status, res.Payload, nil
}

// GrainCounts asks every member how many grains it hosts, by remote
// address; members that do not answer within the peer timeout are absent.
func (p *Placement) GrainCounts(ctx context.Context) map[string]int64 {
	out := map[string]int64{}
	p.askEvery(ctx, opStats, struct{}{}, func(addr string, body json.RawMessage, err error) {
		var r statsRes
		if err == nil && json.Unmarshal(body, &r) == nil {
			out[addr] = r.Grains
		}
	})
	return out
}

// askEvery sends op to every live member, this one included, at once,
// and hands each answer (or error) to each, one call at a time.
func (p *Placement) askEvery(ctx context.Context, op string, in any, each func(addr string, body json.RawMessage, err error)) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range p.memberAddrs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res json.RawMessage
			err := p.request(ctx, a, op, in, &res)
			mu.Lock()
			defer mu.Unlock()
			each(a, res, err)
		}()
	}
	wg.Wait()
}

func (p *Placement) markSynced() { p.syncOnce.Do(func() { close(p.synced) }) }

func (p *Placement) isSynced() bool {
	select {
	case <-p.synced:
		return true
	default:
		return false
	}
}

// WaitSynced returns once a joining node copied the catalog (entities,
// identities, rules, alerts, grants, rollup contributions) from a member,
// or at once for a node that did not join.
//
// A node whose seeds answered but that found no other member (its own
// address was its only live seed: the first node of a cluster, or every
// node of a cluster restarted at once) has nothing to copy: after
// aloneAfter without another member it counts as synced. A copy that
// failed on every member is retried every second.
func (p *Placement) WaitSynced(ctx context.Context) error {
	alone := time.NewTimer(aloneAfter)
	defer alone.Stop()
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-p.synced:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("catalog not copied from the cluster: %w", ctx.Err())
		case <-alone.C:
			if p.Members() <= 1 {
				p.log.Info("no other member to copy the catalog from: this node's copy stands")
				p.markSynced()
				return nil
			}
		case <-retry.C:
			p.trySync()
		}
	}
}

// aloneAfter is how long a joining node waits for another member to show
// up in the topology before it takes its own catalog as the cluster's.
const aloneAfter = 2 * time.Second

// pullCatalog copies the catalog from the first other member that answers.
func (p *Placement) pullCatalog() {
	for _, a := range p.memberAddrs() {
		if a == p.self {
			continue
		}
		select {
		case <-p.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(p.ctx, 2*time.Minute)
		n, err := p.pullCatalogFrom(ctx, a)
		cancel()
		if err != nil {
			p.log.Warn("catalog copy failed; trying another member", "member", a, "err", err)
			continue
		}
		p.log.Info("catalog copied", "from", a, "records", n)
		p.markSynced()
		return
	}
}

func (p *Placement) pullCatalogFrom(ctx context.Context, addr string) (int, error) {
	cursor, n := "", 0
	var all []persistence.WireOp
	for {
		var res catalogRes
		if err := p.request(ctx, addr, opCatalog, catalogReq{Cursor: cursor}, &res); err != nil {
			return n, err
		}
		ops := make([]persistence.Op, len(res.Ops))
		for i, w := range res.Ops {
			ops[i] = persistence.FromWire(w)
		}
		if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
			return n, err
		}
		n += len(ops)
		all = append(all, res.Ops...)
		if res.Next == "" {
			break
		}
		cursor = res.Next
	}
	removed, err := p.enforceTombstones(ctx, all)
	if err != nil {
		return n, err
	}
	again, err := p.reconcileTombstones(ctx, all)
	if err != nil {
		return n, err
	}
	removed += again
	if removed > 0 {
		p.log.Info("catalog copy: removed what was deleted while this node was away", "items", removed)
	}
	// Hand the member what only this node has (written while the member
	// was away, e.g. when this node is the first of a restarted cluster to
	// come back and the member started alone): the catalog is a union,
	// deletions travel as tombstones. What both have, the member's copy
	// (just taken) wins: this node's may be stale (an identity disabled
	// while it was away must not be enabled again).
	if err := p.pushCatalogTo(ctx, addr, all); err != nil {
		p.log.Warn("catalog copy back to member", "member", addr, "err", err)
	}
	p.catalogChanged(all)
	return n, nil
}

// pushCatalogTo sends the member at addr the catalog items of this node
// that are not among theirs (what the member just sent).
func (p *Placement) pushCatalogTo(ctx context.Context, addr string, theirs []persistence.WireOp) error {
	have := make(map[string]bool, len(theirs))
	for _, w := range theirs {
		have[w.T+"\x00"+w.B+"\x00"+w.K] = true
	}
	cursor := ""
	for {
		ops, next, err := p.cfg.Store.CatalogSnapshot(cursor, 1000)
		if err != nil {
			return err
		}
		var only []persistence.WireOp
		for _, w := range ops {
			if !have[w.T+"\x00"+w.B+"\x00"+w.K] {
				only = append(only, w)
			}
		}
		if len(only) > 0 {
			if err := p.request(ctx, addr, opApply, applyReq{Ops: only}, nil); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}

// reconcileTombstones settles this node's own tombstones against what it
// just copied: an entity deleted here after the member's copy of it was
// last changed stays deleted (the copy had brought it back); a tombstone of
// an entity changed later, or of a rule or grant the member has, is stale
// (the item was created again while this node was away) and goes.
func (p *Placement) reconcileTombstones(ctx context.Context, pulled []persistence.WireOp) (int, error) {
	theirs := map[string]bool{}
	for _, w := range pulled {
		switch w.T {
		case "entity.put":
			theirs["entity/"+w.K] = true
		case "doc.put":
			theirs[w.B+"/"+w.K] = true
		}
	}
	mine, err := p.cfg.Store.ListDocs(persistence.BucketTombstones, "")
	if err != nil {
		return 0, err
	}
	var ops []persistence.Op
	removed := 0
	for key, doc := range mine {
		if !theirs[key] {
			continue
		}
		ts, _ := persistence.DecodeTombstone(doc)
		if id, ok := strings.CutPrefix(key, "entity/"); ok {
			if e, err := p.cfg.Store.GetEntity(id); err == nil && !e.UpdatedAt.After(ts.At) {
				ops = append(ops, persistence.DeleteEntity(id))
				removed++
				continue
			}
		}
		ops = append(ops, persistence.DeleteDoc(persistence.BucketTombstones, key))
	}
	if len(ops) == 0 {
		return 0, nil
	}
	if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
		return 0, fmt.Errorf("settle tombstones: %w", err)
	}
	return removed, nil
}

// enforceTombstones applies the deletions that the tombstones among ops
// record: an entity (with its identity, twin, inbox and telemetry) that was
// not changed after its tombstone, a rule, a grant. It returns how many
// items it removed.
func (p *Placement) enforceTombstones(ctx context.Context, ops []persistence.WireOp) (int, error) {
	var dels []persistence.Op
	for _, w := range ops {
		if w.T != "doc.put" || w.B != string(persistence.BucketTombstones) {
			continue
		}
		ts, err := persistence.DecodeTombstone(w.V)
		if err != nil {
			continue
		}
		kind, key, ok := strings.Cut(w.K, "/")
		if !ok || key == "" {
			continue
		}
		switch kind {
		case "entity":
			if e, err := p.cfg.Store.GetEntity(key); err == nil && !e.UpdatedAt.After(ts.At) {
				dels = append(dels, persistence.DeleteEntity(key))
			}
		case string(persistence.BucketRules), string(persistence.BucketGrants), string(persistence.BucketModels), string(persistence.BucketAMQP):
			if _, err := p.cfg.Store.GetDoc(persistence.Bucket(kind), key); err == nil {
				dels = append(dels, persistence.DeleteDoc(persistence.Bucket(kind), key))
			}
		}
	}
	if len(dels) == 0 {
		return 0, nil
	}
	if err := p.cfg.Store.Commit(ctx, dels...); err != nil {
		return 0, fmt.Errorf("apply deletions from tombstones: %w", err)
	}
	return len(dels), nil
}
