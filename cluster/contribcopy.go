package cluster

import (
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
)

// Rollup contributions change with every numeric telemetry message, and
// every member keeps a copy of them (a parent grain activated anywhere reads
// its children's). The members that are not the writing grain's replicas
// got them in a request of their own per grain commit: one more request per
// telemetry message on a three-node cluster. They are now coalesced per
// member and key (a newer contribution replaces the one not yet sent) and
// sent together every contribEvery. That copy was, and stays, best effort:
// the parent grain is also told directly, and a copy that fails is not
// retried.
const (
	contribEvery = 50 * time.Millisecond
	// contribMaxKeys bounds what waits for one member; a write that finds
	// the buffer full sends its own ops, as before.
	contribMaxKeys = 100000
	// contribPage bounds one request's ops.
	contribPage = 2000
)

// contribCopies holds the contribution ops waiting to be sent, by member
// address, then by bucket key.
type contribCopies struct {
	mu sync.Mutex
	m  map[string]map[string]persistence.WireOp
}

// add queues ops (contribution puts and deletes) for addr; it reports false
// when the member's buffer is full and the caller must send them itself.
func (c *contribCopies) add(addr string, ops []persistence.WireOp) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]map[string]persistence.WireOp{}
	}
	q := c.m[addr]
	if q == nil {
		q = map[string]persistence.WireOp{}
		c.m[addr] = q
	}
	if len(q)+len(ops) > contribMaxKeys {
		return false
	}
	for _, w := range ops {
		q[w.K] = w
	}
	return true
}

// take returns and forgets everything queued.
func (c *contribCopies) take() map[string]map[string]persistence.WireOp {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.m
	c.m = nil
	return m
}

// copyContribs sends the queued contribution copies. It runs every
// contribEvery (see Placement.every).
func (p *Placement) copyContribs() {
	for addr, q := range p.contribs.take() {
		if p.isDown(addr) {
			continue // it copies the catalog when it comes back
		}
		ops := make([]persistence.WireOp, 0, min(len(q), contribPage))
		for _, w := range q {
			ops = append(ops, w)
			if len(ops) == contribPage {
				p.sendContribs(addr, ops)
				ops = ops[:0]
			}
		}
		if len(ops) > 0 {
			p.sendContribs(addr, ops)
		}
	}
}

func (p *Placement) sendContribs(addr string, ops []persistence.WireOp) {
	if err := p.request(p.ctx, addr, opApply, applyReq{Ops: ops}, nil); err != nil {
		p.log.Debug("contribution copy to member failed", "member", addr, "ops", len(ops), "err", err)
	}
}
