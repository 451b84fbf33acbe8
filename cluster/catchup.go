package cluster

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Catalog catch-up. Catalog writes (entities, identities, rules, grants,
// access tokens) go to every member, but are acknowledged once a few hold
// them; a member that did not answer got one more try in the background
// and otherwise kept its old copy until it restarted and copied the
// catalog on joining. A member that stayed up through a short cut — a slow
// link, a one-way partition, a request lost on the way — could so go on
// accepting a revoked access token or a disabled device's key for good.
//
// Now the writer remembers every member that missed a catalog write
// (behind) and, once that member answers again, asks it to copy the
// catalog from the writer (opCatchUp): the member takes the writer's copy
// of what both hold, as a joining node does, and hands back what only it
// has. What the writer remembers lives in its memory: a writer that
// restarts before the member is back forgets it, and the member then
// catches up only when it restarts itself.

// opCatchUp asks a member to copy the catalog from the sender
// (catchUpReq).
const opCatchUp = "catchup"

type catchUpReq struct {
	From string `json:"from"` // the sender's remote address
}

// catchUpEvery is how often a node looks for members that missed a catalog
// write and answer again.
var catchUpEvery = 3 * time.Second

// behindSet is the set of members that missed a catalog write of this
// node, by address.
type behindSet struct {
	mu    sync.Mutex
	addrs map[string]bool
}

func (b *behindSet) add(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.addrs == nil {
		b.addrs = map[string]bool{}
	}
	b.addrs[addr] = true
}

// take returns the members behind and forgets them; those that do not
// catch up are added again.
func (b *behindSet) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.addrs))
	for a := range b.addrs {
		out = append(out, a)
	}
	b.addrs = nil
	return out
}

// missedCatalog records that the member at addr did not take a catalog
// write of this node.
func (p *Placement) missedCatalog(addr string) {
	if addr != p.self {
		p.behind.add(addr)
	}
}

// catchUp asks every member that missed a catalog write of this node, and
// is in the topology and answering again, to copy the catalog from it.
// Members that are away, or whose copy fails, stay behind for the next
// round.
func (p *Placement) catchUp(ctx context.Context) {
	in := map[string]bool{}
	for _, a := range p.memberAddrs() {
		in[a] = true
	}
	for _, a := range p.behind.take() {
		if !in[a] || p.isDown(a) {
			if in[a] {
				p.behind.add(a)
			}
			// A member no longer in the topology copies the catalog when
			// it joins again.
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := p.request(cctx, a, opCatchUp, catchUpReq{From: p.self}, nil)
		cancel()
		if err != nil {
			p.log.Debug("catalog catch-up of member failed", "member", a, "err", err)
			p.behind.add(a)
			continue
		}
		p.log.Info("member that missed catalog writes caught up", "member", a)
	}
}

// serveCatchUp copies the catalog from the member that asked.
func (p *Placement) serveCatchUp(ctx context.Context, body []byte) ([]byte, error) {
	var r catchUpReq
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	n, err := p.pullCatalogFrom(ctx, r.From)
	if err != nil {
		return nil, err
	}
	p.log.Info("catalog copied from a member whose writes this node missed", "from", r.From, "records", n)
	return []byte(`{}`), nil
}

// catchUpLoop runs catchUp every catchUpEvery until the Placement stops.
func (p *Placement) catchUpLoop() {
	defer p.wg.Done()
	t := time.NewTicker(catchUpEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.catchUp(p.ctx)
		}
	}
}
