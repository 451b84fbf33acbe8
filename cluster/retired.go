package cluster

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/hashicorp/memberlist"
)

// A node that a partition or a long pause cut off is declared dead by the
// others, and protoactor blocks its actor-system ID for good: when the
// network heals, memberlist sees it alive again but it gets no grains and
// its requests are refused. It must come back as a new incarnation. The
// members that blocked it tell it so (a retiredNotice, over UDP, every few
// seconds while it is alive); once the members that still accept it —
// itself included — are fewer than a majority of the known cluster, or a
// member it does not block in turn blocked it (see noticeRetired), the
// node's Provider closes Retired, and the node restarts under a new ID on
// the same addresses (api/node does). A member blocked only by a minority
// that it blocked too (the majority side hears from the node that was cut
// off) stays.

// retiredNotice tells an incarnation that the sender blocked its ID.
type retiredNotice struct {
	Retired string `json:"retired"` // actor-system ID of the blocked incarnation
	By      string `json:"by"`      // node name of the sender
}

func decodeRetiredNotice(b []byte) (retiredNotice, error) {
	var n retiredNotice
	if err := json.Unmarshal(b, &n); err != nil || n.Retired == "" || n.By == "" {
		return n, errors.New("not a retired notice")
	}
	return n, nil
}

// retiredMemory is how long a notice counts: notices are repeated every
// resync while the blocked incarnation is alive.
const retiredMemory = 10 * time.Second

// Retired returns a channel closed when a majority of the cluster has
// blocked this incarnation's actor-system ID (it was declared dead while
// it was cut off or paused): the node must restart under a new ID to take
// part again.
func (p *Provider) Retired() <-chan struct{} { return p.retiredCh }

// tellRetired tells the blocked incarnations that are alive again that
// this node will not readmit them; it logs each one once.
func (p *Provider) tellRetired(back []*peer) {
	p.mu.Lock()
	ml, by := p.ml, p.self.Node
	var fresh []*peer
	for _, b := range back {
		if !p.warned[b.meta.ID] {
			p.warned[b.meta.ID] = true
			fresh = append(fresh, b)
		}
	}
	p.mu.Unlock()
	for _, b := range fresh {
		p.log.Warn("member is back with an actor-system ID protoactor has blocked; told to restart under a new one",
			"member", b.nodeName(), "id", b.meta.ID)
	}
	if ml == nil {
		return
	}
	for _, b := range back {
		msg, _ := json.Marshal(retiredNotice{Retired: b.meta.ID, By: by})
		node := &memberlist.Node{Name: b.name, Addr: b.addr, Port: b.port}
		if err := ml.SendBestEffort(node, msg); err != nil {
			p.log.Debug("retired notice", "member", b.nodeName(), "err", err)
		}
	}
}

// noticeRetired records that a member blocked this incarnation, and closes
// Retired once the members that still accept it are fewer than a majority
// of the known cluster, or once a member that this node accepts blocked it.
//
// The second rule ends a lopsided state: after a pause, the members that
// declared the paused node dead block it, while it, having seen nothing,
// blocks nobody. Left alone it stayed a member for some peers and not for
// others — their placements disagreed and grains flapped between them —
// and a later fault could tip the majority rule into retiring it at the
// worst moment (the Jepsen harness saw a majority member retire in the
// middle of a partition, 20 s after its pause). After a partition both sides
// block each other, and the majority rule picks the side that restarts.
func (p *Provider) noticeRetired(n retiredNotice) {
	now := time.Now()
	p.mu.Lock()
	if n.Retired != p.self.ID {
		p.mu.Unlock()
		return
	}
	p.retiredBy[n.By] = now
	known := map[string]bool{p.self.Node: true}
	alive := map[string]*peer{}
	for _, pe := range p.peers {
		name := pe.nodeName()
		if pe.name == p.mlName || pe.metaErr != nil || len(pe.meta.Kinds) == 0 || pe.state == StateLeft {
			continue
		}
		known[name] = true
		if pe.state == StateAlive {
			alive[name] = pe
		}
	}
	accepting := 1 // this node
	lopsided := false
	for name, pe := range alive {
		if at, ok := p.retiredBy[name]; !ok || now.Sub(at) > retiredMemory {
			accepting++
		} else if !p.retired[pe.meta.ID] {
			lopsided = true // it blocks this node, this node does not block it
		}
	}
	retired := accepting < quorum(len(known)) || lopsided
	p.mu.Unlock()
	if retired {
		p.retiredOnce.Do(func() {
			p.log.Error("members declared this node dead and blocked its identity; restarting under a new one",
				"id", n.Retired, "accepting", accepting, "known", len(known), "lopsided", lopsided)
			close(p.retiredCh)
		})
	}
}
