package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// better reports whether state a is newer than b: the copy written by the
// newest epoch wins, then the one that holds more of that epoch's writes
// (Seq: a replica that missed writes has a lower one, even when they left
// the twin's version alone), then the higher twin version, then the one with
// more recent or more telemetry and inbox messages.
func better(a, b persistence.GrainState) bool {
	switch {
	case a.Epoch.Wrote != b.Epoch.Wrote:
		return a.Epoch.Wrote > b.Epoch.Wrote
	case a.Epoch.Seq != b.Epoch.Seq:
		return a.Epoch.Seq > b.Epoch.Seq
	case a.TwinVersion != b.TwinVersion:
		return a.TwinVersion > b.TwinVersion
	case a.NewestTelemetry != b.NewestTelemetry:
		return a.NewestTelemetry > b.NewestTelemetry
	case a.Telemetry != b.Telemetry:
		return a.Telemetry > b.Telemetry
	}
	return a.Inbox > b.Inbox
}

// sameState reports whether a and b hold the same copy of a grain: the same
// writes (epoch Wrote and Seq; the Fence is per node) and the same summary.
func sameState(a, b persistence.GrainState) bool {
	return a.Epoch.Wrote == b.Epoch.Wrote && a.Epoch.Seq == b.Epoch.Seq &&
		a.HasTwin == b.HasTwin && a.TwinVersion == b.TwinVersion && a.Telemetry == b.Telemetry &&
		a.NewestTelemetry == b.NewestTelemetry && a.Inbox == b.Inbox
}

// Claim makes this node the owner of identity's grain: it claims a new
// epoch on every member, copies the newest copy of the grain's state into
// the local store, brings the grain's replicas up to date, and returns the
// epoch the activation's writes must carry. A member that does not answer
// in time is skipped (it is dead or about to be declared dead), but a
// majority of the known members (see known) must accept the claim —
// ErrNoQuorum otherwise — so that a node cut off from the others cannot
// take grains over, and the copy it starts from includes every
// acknowledged write (each reached writeAcks nodes, which meet every
// majority). ErrFenced when other claims kept winning.
func (p *Placement) Claim(ctx context.Context, identity string) (uint64, error) {
	p.metrics.claims.Inc()
	// A node that just joined may be asked for grains before it copied the
	// catalog; without it the grain would think its entity does not exist.
	if err := p.WaitSynced(ctx); err != nil {
		return 0, err
	}
	epoch := p.nextEpoch(0)
	if p.known() == 1 {
		// Alone: the placement actor is the only place this grain can be
		// active, and the epoch's first write fences older activations.
		return epoch, nil
	}
	for attempt := 0; attempt < 5; attempt++ {
		addrs := p.memberAddrs()
		type reply struct {
			addr string
			res  claimRes
			err  error
		}
		replies := make([]reply, len(addrs))
		var wg sync.WaitGroup
		for i, a := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies[i].addr = a
				cctx, cancel := p.askCtx(ctx, a)
				defer cancel()
				replies[i].err = p.request(cctx, a, opClaim, claimReq{ID: identity, Epoch: epoch, From: p.self}, &replies[i].res)
			}()
		}
		wg.Wait()
		var maxFence uint64
		fenced := false
		answered := 0
		states := map[string]persistence.GrainState{}
		for _, r := range replies {
			if r.err != nil {
				if r.addr == p.self {
					return 0, fmt.Errorf("claim %s locally: %w", identity, r.err)
				}
				p.log.Debug("claim: member did not answer", "entity", identity, "member", r.addr, "err", r.err)
				continue
			}
			answered++
			if r.res.Fenced {
				fenced = true
				maxFence = max(maxFence, r.res.State.Epoch.Fence)
			}
			states[r.addr] = r.res.State
		}
		if fenced {
			p.metrics.fenced.Inc()
			epoch = p.nextEpoch(maxFence + 1)
			continue
		}
		if n := p.known(); answered < quorum(n) {
			p.metrics.underRepl.Inc()
			return 0, fmt.Errorf("%w: claim of %s accepted by %d of %d members", ErrNoQuorum, identity, answered, n)
		}
		src := p.self
		for a, st := range states {
			if better(st, states[src]) {
				src = a
			}
		}
		if src != p.self && !sameState(states[src], states[p.self]) {
			if err := p.pull(ctx, src, identity, epoch, states[src].Epoch); err != nil {
				return 0, fmt.Errorf("copy %s from %s: %w", identity, src, err)
			}
			p.metrics.pulls.Inc()
		}
		// The copy taken becomes this epoch's: see spreadClaimed.
		if err := p.cfg.Store.Commit(ctx, persistence.AdoptEpoch(identity, epoch, states[src].Epoch)); err != nil {
			if errors.Is(err, persistence.ErrFenced) {
				p.metrics.fenced.Inc()
				return 0, fmt.Errorf("%w: %v", ErrFenced, err)
			}
			return 0, fmt.Errorf("adopt the copy of %s: %w", identity, err)
		}
		if err := p.spreadClaimed(ctx, identity, epoch, src, states); err != nil {
			return 0, err
		}
		return epoch, nil
	}
	return 0, fmt.Errorf("%w: claim of %s kept losing to newer epochs", ErrFenced, identity)
}

// spreadClaimed makes sure the copy a claim took (src's, now this node's
// too, adopted by epoch) is held by writeAcks members before the activation
// serves anything. The copy may hold writes that were never acknowledged
// (an owner stored them and then lost its replicas); once the activation
// reads them to a client they have taken effect, and the next claim's
// majority must meet them. Held only here and on src, the next claim could
// miss them and give their version to another write: the 30-minute Jepsen
// run (seed 907312974) saw two values read at one version that way.
//
// The copy is spread adopted — written by this epoch (Seq 0,
// persistence.AdoptEpoch) — not under the epoch of its last writer. An
// activation older than this claim that has not heard of it (its member
// was on the other side of a bridge partition) may still store a write
// on its own file, under its own epoch, which can be newer than the
// copy's writer: kept under that writer's epoch, the copy served here
// would rank below that unacknowledged write at the next claim, which
// would then give the served version a second value (seed 578929958).
// Members that hold the same copy adopt it in place; the others, in
// rendezvous order, are sent it, until writeAcks members hold it, or the
// claim fails (ErrUnderReplicated) and is retried.
func (p *Placement) spreadClaimed(ctx context.Context, identity string, epoch uint64, src string, states map[string]persistence.GrainState) error {
	need := p.writeAcks()
	held := 1 // this node
	replicas, rest := p.replicasOf(identity)
	var lastErr error
	for _, r := range append(replicas, rest...) {
		if held >= need {
			break
		}
		err := errNotSame
		if st, ok := states[r]; ok && sameState(st, states[src]) {
			err = p.adopt(ctx, r, identity, epoch, states[src].Epoch)
		}
		if errors.Is(err, errNotSame) || errors.Is(err, persistence.ErrGap) {
			err = p.push(ctx, r, identity, epoch)
			if err == nil {
				p.metrics.pushes.Inc()
			}
		}
		if err != nil {
			lastErr = err
			p.log.Warn("bring replica up to date", "entity", identity, "replica", r, "err", err)
			continue
		}
		held++
	}
	if held < need {
		p.metrics.underRepl.Inc()
		return fmt.Errorf("%w: claim of %s: its copy is on %d of %d members (last error: %v)", ErrUnderReplicated, identity, held, need, lastErr)
	}
	return nil
}

// errNotSame: the member does not hold the copy the claim took.
var errNotSame = errors.New("member holds another copy")

// adopt asks member dst, which reported the copy at from, to adopt it for
// epoch (persistence.AdoptEpoch); ErrGap if its copy changed since.
func (p *Placement) adopt(ctx context.Context, dst, identity string, epoch uint64, from persistence.Epoch) error {
	var res applyRes
	return p.request(ctx, dst, opApply, applyReq{ID: identity, Epoch: epoch, Adopt: &persistence.Epoch{Wrote: from.Wrote, Seq: from.Seq}}, &res)
}

const snapshotPage = 2000

// pull copies identity's grain-scoped state from member src into the local
// store, fenced by epoch. from is what src reported of its copy before the
// copy began (its GrainState): the copy claims that much once every page
// landed, never more than it holds.
func (p *Placement) pull(ctx context.Context, src, identity string, epoch uint64, from persistence.Epoch) error {
	var after int64
	token := copyToken()
	for {
		var res snapshotRes
		if err := p.request(ctx, src, opSnapshot, snapshotReq{ID: identity, After: after, Limit: snapshotPage}, &res); err != nil {
			return err
		}
		var ops []persistence.Op
		if after == 0 {
			// The copy replaces what this node held of the grain.
			ops = append(ops, persistence.BeginCopyEpoch(identity, epoch, token),
				persistence.ResetGrainData(identity), persistence.EmptyCopyEpoch(identity))
		} else {
			ops = append(ops, persistence.ContinueCopyEpoch(identity, epoch, token))
		}
		for _, w := range res.Ops {
			ops = append(ops, persistence.FromWire(w))
		}
		if res.Next == 0 {
			ops = append(ops, persistence.CopiedEpoch(identity, from))
		}
		if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
			return err
		}
		if res.Next == 0 {
			return nil
		}
		after = res.Next
	}
}

// push sends identity's grain-scoped state from the local store to member
// dst, fenced by epoch: the copy replaces dst's — unless dst holds one at
// least as new, which it keeps — and claims this node's (Wrote, Seq) as
// read before the first page once the last page landed.
// Pushes of one grain to one member take turns: two interleaved copies
// (a replica brought up to date by its owner while re-replication copies
// it too) would mix their pages.
func (p *Placement) push(ctx context.Context, dst, identity string, epoch uint64) error {
	h := fnv.New32a()
	h.Write([]byte(identity))
	h.Write([]byte{0})
	h.Write([]byte(dst))
	mu := &p.pushing[h.Sum32()%uint32(len(p.pushing))]
	mu.Lock()
	defer mu.Unlock()
	from, err := p.cfg.Store.GetEpoch(identity)
	if err != nil {
		return err
	}
	var after int64
	token := copyToken()
	for {
		ops, next, err := p.cfg.Store.GrainSnapshot(identity, after, snapshotPage)
		if err != nil {
			return err
		}
		req := applyReq{ID: identity, Epoch: epoch, Ops: ops, Reset: after == 0, Copy: token}
		if after == 0 {
			req.From = &from
		}
		if next == 0 {
			req.Copied = &from
		}
		var res applyRes
		if err := p.request(ctx, dst, opApply, req, &res); err != nil {
			return err
		}
		if res.Held {
			return nil // dst holds this copy or a newer one
		}
		if next == 0 {
			return nil
		}
		after = next
	}
}

// copyToken returns a random, non-zero token for one copy of a grain
// (persistence.StartCopyEpoch): copies made at once by different members
// must not share one.
func copyToken() uint64 {
	for {
		if t := rand.Uint64(); t != 0 {
			return t
		}
	}
}

// Commit writes ops of identity's grain, fenced by epoch, to the local
// store and to the grain's replicas, and returns once writeAcks nodes
// committed them (ErrUnderReplicated otherwise: on the minority side of a
// partition every write fails). Catalog ops among them go to every member.
// When a replica does not answer, the next member in rendezvous order
// takes its place.
func (p *Placement) Commit(ctx context.Context, identity string, epoch uint64, ops []persistence.Op) error {
	var step seqStep
	local := make([]persistence.Op, 0, len(ops)+1)
	local = append(local, persistence.CheckEpochReport(identity, epoch, func(prev, next persistence.Epoch) {
		step = seqStep{prev: prev, seq: next.Seq}
	}))
	local = append(local, ops...)
	if err := p.cfg.Store.Commit(ctx, local...); err != nil {
		if errors.Is(err, persistence.ErrFenced) {
			p.metrics.fenced.Inc()
			return fmt.Errorf("%w: %v", ErrFenced, err)
		}
		return err
	}
	return p.ship(ctx, identity, epoch, &step, ops)
}

// seqStep is a write's place in its epoch's sequence on the owner: the
// owner's (Wrote, Seq) before it and its Seq after (persistence.ApplyEpoch).
type seqStep struct {
	prev persistence.Epoch
	seq  uint64
}

// CommitCatalog writes cluster-wide ops (identities, rules, grants) that
// belong to no grain: locally, then to every member, acknowledged once
// min(Replicas, members) nodes hold them.
func (p *Placement) CommitCatalog(ctx context.Context, ops []persistence.Op) error {
	if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
		return err
	}
	return p.ship(ctx, "", 0, nil, ops)
}

// onlyContrib reports whether every op writes a rollup contribution.
func onlyContrib(ops []persistence.WireOp) bool {
	for _, w := range ops {
		if w.B != string(persistence.BucketContrib) {
			return false
		}
	}
	return true
}

// copyInBackground sends catalog ops to a member without waiting for its
// answer. At most cap(p.async) copies are in flight; beyond that the copy
// is made in the caller's goroutine, which pushes back on writers instead
// of queueing without bound.
func (p *Placement) copyInBackground(ctx context.Context, addr string, ops []persistence.WireOp) {
	if p.closed.Load() {
		return
	}
	if onlyContrib(ops) && p.contribs.add(addr, ops) {
		return // sent with others by copyContribs
	}
	select {
	case p.async <- struct{}{}:
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.async }()
			if err := p.request(p.ctx, addr, opApply, applyReq{Ops: ops}, nil); err != nil && !onlyContrib(ops) {
				p.missedCatalog(addr)
			}
		}()
	default:
		if p.isDown(addr) || p.request(ctx, addr, opApply, applyReq{Ops: ops}, nil) != nil {
			if !onlyContrib(ops) {
				p.missedCatalog(addr)
			}
		}
	}
}

// ship sends ops to the grain's replicas (every member for catalog ops,
// step nil) and waits for writeAcks of them. A replica whose copy misses
// earlier writes (persistence.ErrGap) gets this node's whole copy instead,
// which holds the write.
func (p *Placement) ship(ctx context.Context, identity string, epoch uint64, step *seqStep, ops []persistence.Op) error {
	if p.known() <= 1 {
		return nil // a cluster of one: the local commit is all there is
	}
	var full, catalog []persistence.WireOp
	for _, op := range ops {
		w, ok := op.Wire()
		if !ok {
			continue
		}
		full = append(full, w)
		if op.Catalog() {
			catalog = append(catalog, w)
		}
	}
	if len(full) == 0 {
		return nil
	}
	replicas, rest := p.replicasOf(identity)
	if identity == "" {
		// Catalog writes: every member gets everything.
		replicas, rest = append(replicas, rest...), nil
	}
	start := time.Now()
	need := p.writeAcks() - 1
	type result struct {
		addr string
		full bool
		err  error
	}
	results := make(chan result, len(replicas)+2*len(rest))
	send := func(addr string, payload []persistence.WireOp, isFull bool) {
		req := applyReq{ID: identity, Epoch: epoch, Ops: payload}
		if isFull && step != nil {
			req.Prev, req.Seq = &step.prev, step.seq
		}
		go func() {
			err := p.request(ctx, addr, opApply, req, nil)
			if errors.Is(err, persistence.ErrGap) {
				p.metrics.gaps.Inc()
				err = p.push(ctx, addr, identity, epoch)
			}
			results <- result{addr, isFull, err}
		}()
	}
	pending := 0
	for _, a := range replicas {
		if p.isDown(a) && identity == "" {
			// Catalog copy to a member that is down: in the background.
			p.copyInBackground(ctx, a, full)
			continue
		}
		send(a, full, true)
		pending++
	}
	fallbacks := rest
	if len(catalog) > 0 {
		// Rollup contributions are internal (the parent grain is also told
		// directly) and change with every numeric telemetry message: the
		// members that are not replicas get them in the background, so a
		// telemetry write waits only for its replicas. User-visible catalog
		// data (entities, identities, rules, alerts, grants) is waited for,
		// so that a read on any node right after the write sees it.
		background := onlyContrib(catalog)
		for _, a := range rest {
			if p.isDown(a) || background {
				p.copyInBackground(ctx, a, catalog)
				continue
			}
			send(a, catalog, false)
			pending++
		}
	}
	acks := 0
	fullTo := map[string]bool{}
	for _, a := range replicas {
		fullTo[a] = true
	}
	var fencedErr, lastErr error
	for pending > 0 {
		r := <-results
		pending--
		if r.err == nil {
			if r.full {
				acks++
			}
			continue
		}
		if errors.Is(r.err, persistence.ErrFenced) {
			fencedErr = r.err
			continue
		}
		if !r.full {
			p.log.Debug("catalog copy to member failed", "member", r.addr, "err", r.err)
			p.missedCatalog(r.addr)
			continue
		}
		if len(catalog) > 0 {
			p.missedCatalog(r.addr)
		}
		lastErr = r.err
		p.log.Warn("replica did not acknowledge; trying the next member", "entity", identity, "replica", r.addr, "err", r.err)
		for len(fallbacks) > 0 {
			next := fallbacks[0]
			fallbacks = fallbacks[1:]
			if fullTo[next] {
				continue
			}
			fullTo[next] = true
			send(next, full, true)
			pending++
			break
		}
	}
	p.metrics.replSeconds.Observe(time.Since(start).Seconds())
	if fencedErr != nil {
		p.metrics.fenced.Inc()
		err := fmt.Errorf("%w: %v", ErrFenced, fencedErr)
		if identity != "" {
			// This node committed the write before a replica refused it:
			// its outcome is unknown (a later claim may adopt this copy),
			// so the caller must not send it again as if it were refused.
			err = errcode.Wrap(errcode.Unavailable, err)
		}
		return err
	}
	if acks < need {
		p.metrics.underRepl.Inc()
		return fmt.Errorf("%w: %d of %d (last error: %v)", ErrUnderReplicated, acks+1, need+1, lastErr)
	}
	return nil
}
