package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
)

// Re-replication ("repair") keeps what Claim relies on true after members
// change: every acknowledged write of a grain reached writeAcks members,
// so every majority that accepts a claim includes a member holding it. A
// member that comes back from an old copy of its data folder, or one that
// was passed over while it did not answer, holds less than it acknowledged;
// unless the newest copy is sent to writeAcks members again, the next fault
// can leave a majority that holds none, and a claim then starts from an
// old copy. Each grain is repaired by the member that ranks first for it
// (one coordinator, whatever the copies): it asks every member for the
// state of its copy, and has the member holding the newest one send it to
// the first writeAcks members in rank that hold less. Copies never replace
// newer data (persistence.StartCopyEpoch) and never mix
// (persistence.ContinueCopyEpoch), so a repair that races an owner's writes
// is safe: the owner's next write to a replica that was copied meanwhile
// finds a gap and sends its own copy.

const (
	// opStates asks a member for the GrainState of several grains.
	opStates = "states"
	// opRepair asks the member holding the newest copy of a grain to send
	// it to members that hold less.
	opRepair = "repair"
	// repairBatch is how many entities one opStates request covers.
	repairBatch = 500
	// repairParallel bounds the copies one pass makes at once.
	repairParallel = 8
)

type statesReq struct {
	IDs []string `json:"ids"`
}

type statesRes struct {
	States []persistence.GrainState `json:"states"`
}

type repairReq struct {
	ID string   `json:"id"`
	To []string `json:"to"`
	// Fences are the fences the coordinator saw on the members in To. A
	// copy is sent to each fenced by the higher of its fence and the
	// holder's: a member's fence may be above the newest copy's epoch —
	// a claim that it accepted but that failed for want of a majority
	// (the minority side of a partition) — and a copy fenced by the
	// holder's alone was refused there again and again, until the
	// members that could take it lost theirs (the 30-minute Jepsen run,
	// seed 907312974). A copy never replaces one at least as new
	// (persistence.StartCopyEpoch), whatever its epoch.
	Fences map[string]uint64 `json:"fences,omitempty"`
}

type repairRes struct {
	Copied int `json:"copied"`
}

// serveStates answers opStates.
func (p *Placement) serveStates(body []byte) ([]byte, error) {
	var r statesReq
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if len(r.IDs) > repairBatch {
		return nil, fmt.Errorf("states of %d grains asked, at most %d", len(r.IDs), repairBatch)
	}
	res := statesRes{States: make([]persistence.GrainState, len(r.IDs))}
	for i, id := range r.IDs {
		st, err := p.cfg.Store.GrainState(id)
		if err != nil {
			return nil, err
		}
		res.States[i] = st
	}
	return json.Marshal(res)
}

// serveRepair answers opRepair: it sends this node's copy of the grain to
// each member named, fenced by the highest epoch this node saw for it. A
// member that holds a copy at least as new keeps it; one that saw a newer
// claim refuses (its owner brings the replicas up to date).
func (p *Placement) serveRepair(ctx context.Context, body []byte) ([]byte, error) {
	var r repairReq
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if r.ID == "" || len(r.To) > 16 {
		return nil, fmt.Errorf("repair: grain id and at most 16 members needed")
	}
	e, err := p.cfg.Store.GetEpoch(r.ID)
	if err != nil {
		return nil, err
	}
	members := map[string]bool{}
	for _, a := range p.memberAddrs() {
		members[a] = true
	}
	var res repairRes
	var firstErr error
	for _, to := range r.To {
		if to == p.self || !members[to] {
			continue // only members get copies
		}
		if err := p.push(ctx, to, r.ID, max(e.Fence, r.Fences[to])); err != nil {
			firstErr = cmpErr(firstErr, fmt.Errorf("copy %s to %s: %w", r.ID, to, err))
			continue
		}
		res.Copied++
		p.metrics.pushes.Inc()
	}
	if res.Copied == 0 && firstErr != nil {
		return nil, firstErr
	}
	return json.Marshal(res)
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// rereplicate runs one repair pass over the entities of the local catalog
// that this node ranks first.
func (p *Placement) rereplicate(ctx context.Context) {
	if p.Members() <= 1 || !p.isSynced() {
		return
	}
	start := time.Now()
	var checked, copied, skipped int
	after := ""
	for ctx.Err() == nil {
		ents, next, err := p.cfg.Store.ListEntities(persistence.EntityFilter{}, after, repairBatch)
		if err != nil {
			p.log.Warn("re-replication: list entities", "err", err)
			break
		}
		all := p.memberAddrs()
		var ids []string
		for _, e := range ents {
			if r := Rank(e.ID, all); len(r) > 0 && r[0] == p.self {
				ids = append(ids, e.ID)
			}
		}
		c, n, s := p.repairBatch(ctx, ids, all)
		checked, copied, skipped = checked+c, copied+n, skipped+s
		if next == "" {
			break
		}
		after = next
	}
	if copied > 0 || skipped > 0 {
		p.log.Info("re-replication pass", "checked", checked, "copied", copied,
			"skipped (no majority answered)", skipped, "took", time.Since(start).Round(time.Millisecond))
	}
}

// repairBatch repairs the grains ids (ranked first here among all): it
// returns how many it checked, how many copies it had made, and how many
// it skipped because fewer than a majority of the members told their state.
func (p *Placement) repairBatch(ctx context.Context, ids, all []string) (checked, copied, skipped int) {
	if len(ids) == 0 {
		return 0, 0, 0
	}
	states := make(map[string][]persistence.GrainState, len(all))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res statesRes
			var err error
			if a == p.self {
				var raw []byte
				if raw, err = p.serveStates(mustJSON(statesReq{IDs: ids})); err == nil {
					err = json.Unmarshal(raw, &res)
				}
			} else {
				cctx, cancel := p.askCtx(ctx, a)
				err = p.request(cctx, a, opStates, statesReq{IDs: ids}, &res)
				cancel()
			}
			if err != nil || len(res.States) != len(ids) {
				p.log.Debug("re-replication: states", "member", a, "err", err)
				return
			}
			mu.Lock()
			states[a] = res.States
			mu.Unlock()
		}()
	}
	wg.Wait()
	if _, ok := states[p.self]; !ok || len(states) < quorum(p.known()) {
		return 0, 0, len(ids)
	}
	sem := make(chan struct{}, repairParallel)
	var n int
	for i, id := range ids {
		checked++
		src, to := repairPlan(id, i, states, all, p.self, p.writeAcks(), p.isDown)
		if len(to) == 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fences := make(map[string]uint64, len(to))
			for _, a := range to {
				fences[a] = states[a][i].Epoch.Fence
			}
			var res repairRes
			err := p.request(ctx, src, opRepair, repairReq{ID: id, To: to, Fences: fences}, &res)
			if err != nil {
				p.log.Debug("re-replication: repair", "entity", id, "from", src, "to", to, "err", err)
			}
			mu.Lock()
			n += res.Copied
			mu.Unlock()
		}()
	}
	wg.Wait()
	return checked, n, 0
}

// repairPlan picks, for the i-th grain of a batch, the member holding its
// newest copy (this node when it holds one as new, else the first in
// rank) and the members among
// the first writeAcks in rank (those not down) that hold less.
func repairPlan(id string, i int, states map[string][]persistence.GrainState, all []string, self string, writeAcks int, down func(string) bool) (src string, to []string) {
	ranked := Rank(id, all)
	src = self
	best := states[self][i]
	for _, a := range ranked { // on a tie, this node, then the first in rank
		if sts, ok := states[a]; ok && better(sts[i], best) {
			src, best = a, sts[i]
		}
	}
	if best.Epoch.Wrote == 0 && !best.HasTwin && best.Telemetry == 0 && best.Inbox == 0 {
		return src, nil // nothing was ever written
	}
	picked := 0
	for _, a := range ranked {
		if picked == writeAcks {
			break
		}
		if down(a) {
			continue
		}
		picked++
		sts, ok := states[a]
		if !ok || a == src {
			continue // did not answer: it may hold it; the next pass sees
		}
		if !sts[i].Epoch.Holds(best.Epoch) {
			to = append(to, a)
		}
	}
	return src, to
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// settle is how long the topology must stay unchanged before a
// re-replication pass starts (memberlist reports a crash to members a few
// hundred milliseconds apart).
const settle = 3 * time.Second

// rereplicateLoop runs a re-replication pass after every topology change,
// once it settled; a change during a pass restarts it. It runs until
// Shutdown.
func (p *Placement) rereplicateLoop() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case <-p.topoChanged:
		}
	wait:
		for {
			select {
			case <-p.stop:
				return
			case <-p.topoChanged:
			case <-time.After(settle):
				break wait
			}
		}
		ctx, cancel := context.WithCancel(p.ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.rereplicate(ctx)
		}()
		select {
		case <-done:
			cancel()
		case <-p.topoChanged:
			cancel()
			<-done
			// Run again after the new change settles.
			select {
			case p.topoChanged <- struct{}{}:
			default:
			}
		case <-p.stop:
			cancel()
			<-done
			return
		}
	}
}
