package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/persistence"
)

// Broadcast queues an event (encoded as JSON) for every other member. It
// never blocks: when the bounded queue is full the event is dropped and
// counted (events are notifications; state is always read from grains).
func (p *Placement) Broadcast(ev any) {
	if p.Members() <= 1 || p.closed.Load() {
		return // alone: not even worth encoding
	}
	b, err := json.Marshal(ev)
	if err != nil {
		p.log.Warn("event not forwarded: cannot encode", "err", err)
		return
	}
	select {
	case p.events <- b:
	default:
		p.metrics.eventsDropped.Inc()
	}
}

// forwardEvents batches queued events and sends each batch to every other
// member. It runs until Shutdown.
func (p *Placement) forwardEvents() {
	defer p.wg.Done()
	const maxBatch = 256
	batch := make([]json.RawMessage, 0, maxBatch)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		body, _ := json.Marshal(batch)
		for _, a := range p.memberAddrs() {
			if a != p.self {
				p.c.ActorSystem.Root.Send(actor.NewPID(a, nodeActorName), &actorspb.Notify{Op: opEvents, Body: body})
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
// member named node.
func (p *Placement) Invoke(ctx context.Context, node, device, method string, payload []byte) (int, []byte, error) {
	if p.cfg.Resolve == nil {
		return 0, nil, ErrNoMember
	}
	addr, ok := p.cfg.Resolve(node)
	if !ok {
		return 0, nil, fmt.Errorf("%w: %s", ErrNoMember, node)
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	var res invokeRes
	if err := p.request(ctx, addr, opInvoke, invokeReq{Device: device, Method: method, Payload: payload, Timeout: timeout.Milliseconds()}, &res); err != nil {
		return 0, nil, err
	}
	return res.Status, res.Payload, nil
}

// GrainCounts asks every member how many grains it hosts, by remote
// address; members that do not answer within the peer timeout are absent.
func (p *Placement) GrainCounts(ctx context.Context) map[string]int64 {
	addrs := p.memberAddrs()
	out := make(map[string]int64, len(addrs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r statsRes
			if err := p.request(ctx, a, opStats, struct{}{}, &r); err == nil {
				mu.Lock()
				out[a] = r.Grains
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
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
func (p *Placement) WaitSynced(ctx context.Context) error {
	select {
	case <-p.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("catalog not copied from the cluster: %w", ctx.Err())
	}
}

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
	started := time.Now()
	theirs, theirDocs := map[string]bool{}, map[string]bool{}
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
		for _, w := range res.Ops {
			switch w.T {
			case "entity.put":
				theirs[w.K] = true
			case "doc.put":
				theirDocs[w.B+"\x00"+w.K] = true
			}
		}
		if res.Next == "" {
			break
		}
		cursor = res.Next
	}
	gone, err := p.dropDeletedEntities(ctx, theirs, started.Add(-deletionMargin))
	if err != nil {
		return n, err
	}
	docs, err := p.dropDeletedDocs(ctx, theirDocs)
	if err != nil {
		return n, err
	}
	if gone > 0 || docs > 0 {
		p.log.Info("catalog copy: removed what was deleted while this node was away", "entities", gone, "documents", docs)
	}
	if h := p.handlers.Load(); h.Catalog != nil {
		h.Catalog(all)
	}
	return n, nil
}

// syncedBuckets are the document buckets whose deletions a returning node
// catches up with: a rule or grant deleted while it was away must not keep
// applying here, nor a contribution of a child that moved. Alerts are
// never deleted, only cleared, so copying them suffices.
var syncedBuckets = []persistence.Bucket{persistence.BucketRules, persistence.BucketGrants, persistence.BucketContrib}

// dropDeletedDocs deletes local documents of syncedBuckets that the
// member's catalog does not have. Documents carry no timestamps: one
// written in the milliseconds of the copy itself could be dropped too,
// and comes back with its next write.
func (p *Placement) dropDeletedDocs(ctx context.Context, theirs map[string]bool) (int, error) {
	var ops []persistence.Op
	for _, b := range syncedBuckets {
		mine, err := p.cfg.Store.ListDocs(b, "")
		if err != nil {
			return 0, err
		}
		for k := range mine {
			if !theirs[string(b)+"\x00"+k] {
				ops = append(ops, persistence.DeleteDoc(b, k))
			}
		}
	}
	if len(ops) == 0 {
		return 0, nil
	}
	if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
		return 0, fmt.Errorf("remove documents deleted elsewhere: %w", err)
	}
	return len(ops), nil
}

// deletionMargin: an entity this node holds but the member it copies the
// catalog from does not is taken as deleted while this node was away only
// if it was last changed this long before the copy began, so that an
// entity created during the copy (which reached this node directly) is kept
// despite clocks that differ between nodes.
const deletionMargin = time.Minute

// dropDeletedEntities deletes (with their twin, identity, inbox and
// telemetry, as DeleteEntity does) the local entities that the member's
// catalog no longer has and that were last changed before cutoff: a node
// that was down missed their deletion.
func (p *Placement) dropDeletedEntities(ctx context.Context, theirs map[string]bool, cutoff time.Time) (int, error) {
	var doomed []string
	after := ""
	for {
		ents, next, err := p.cfg.Store.ListEntities(persistence.EntityFilter{}, after, 1000)
		if err != nil {
			return 0, err
		}
		for _, e := range ents {
			if !theirs[e.ID] && e.UpdatedAt.Before(cutoff) {
				doomed = append(doomed, e.ID)
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	for _, id := range doomed {
		if err := p.cfg.Store.Commit(ctx, persistence.DeleteEntity(id)); err != nil {
			return 0, fmt.Errorf("remove entity %s deleted elsewhere: %w", id, err)
		}
	}
	return len(doomed), nil
}
