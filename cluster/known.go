package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// The size of the cluster, for its majorities, is the number of node names
// this node knows to make it up: those recorded in persistence.BucketMembers
// (every grain-hosting node seen alive, on this node or, through the
// catalog, on another) and those it sees now. A node that restarted — a
// crash, or a restart under a new identity after the others declared it
// dead — knows from its file how many there are before it hears of them
// again, and a member's departure, graceful or not, never shrinks the
// count. Counting only the members it saw during this run let a node that
// had just restarted on the minority side of a partition take the one
// other member it heard of for the whole cluster, claim grains with that
// member alone and fork them (the 10-minute Jepsen run, seed 907312974).
// The count shrinks only when an operator forgets a node (Forget).

// ErrMemberAlive: Forget was asked for a node that is a live member.
var ErrMemberAlive = errcode.New(errcode.Conflict, "cluster: the node is a live member; stop it for good before forgetting it")

// memberRecord is the BucketMembers document of one node.
type memberRecord struct {
	Node string    `json:"node"`
	Seen time.Time `json:"seen"` // first seen alive
}

// nodeSet is the set of node names recorded in BucketMembers.
type nodeSet struct {
	mu    sync.Mutex
	names map[string]bool
	gen   uint64 // bumped on every change, for Placement.known's cache
}

func (s *nodeSet) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[name]
}

func (s *nodeSet) set(names map[string]bool) {
	s.mu.Lock()
	s.names = names
	s.gen++
	s.mu.Unlock()
}

func (s *nodeSet) add(name string) {
	s.mu.Lock()
	if s.names == nil {
		s.names = map[string]bool{}
	}
	if !s.names[name] {
		s.names[name] = true
		s.gen++
	}
	s.mu.Unlock()
}

// loadNodes reads the recorded node names from the store.
func (p *Placement) loadNodes() error {
	docs, err := p.cfg.Store.ListDocs(persistence.BucketMembers, "")
	if err != nil {
		return fmt.Errorf("read cluster members: %w", err)
	}
	names := make(map[string]bool, len(docs))
	for k := range docs {
		names[k] = true
	}
	p.nodes.set(names)
	return nil
}

// rememberMembers records the grain-hosting members seen alive that are
// not recorded yet. Every member records what it sees; the catalog copy of
// a joining node brings it the others' records.
func (p *Placement) rememberMembers(ctx context.Context) {
	if p.cfg.Membership == nil {
		return
	}
	var ops []persistence.Op
	var added []string
	for _, m := range p.cfg.Membership.Members() {
		if m.Name == "" || (len(m.Kinds) == 0 && !m.Self) || (m.State != StateAlive && m.State != StateSuspect) || p.nodes.has(m.Name) {
			continue
		}
		doc, err := json.Marshal(memberRecord{Node: m.Name, Seen: time.Now().UTC()})
		if err != nil {
			continue
		}
		ops = append(ops, persistence.PutDoc(persistence.BucketMembers, m.Name, doc))
		added = append(added, m.Name)
	}
	if len(ops) == 0 {
		return
	}
	// Counted at once, stored after: a count too high for a moment only
	// asks for more acknowledgements.
	for _, n := range added {
		p.nodes.add(n)
	}
	if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
		p.log.Warn("record cluster members", "members", added, "err", err)
		return
	}
	p.log.Info("cluster members recorded", "added", added, "known", p.known())
}

// Forget removes node from the members the cluster counts, on every live
// member: for a node that was stopped for good, whose absence would
// otherwise go on counting against every majority. A node that is a live
// member is ErrMemberAlive; forgetting a node that is not recorded is not
// an error. A member that is down while it runs keeps the name until it is
// forgotten again.
func (p *Placement) Forget(ctx context.Context, node string) error {
	if node == "" {
		return errcode.New(errcode.BadRequest, "cluster: forget needs a node name")
	}
	if p.cfg.Membership != nil {
		for _, m := range p.cfg.Membership.Members() {
			if m.Name == node && (m.Self || m.State == StateAlive || m.State == StateSuspect) {
				return ErrMemberAlive
			}
		}
	}
	if err := p.CommitCatalog(ctx, []persistence.Op{persistence.DeleteDoc(persistence.BucketMembers, node)}); err != nil {
		return fmt.Errorf("forget %s: %w", node, err)
	}
	if err := p.loadNodes(); err != nil {
		return err
	}
	p.log.Info("cluster member forgotten", "node", node, "known", p.known())
	return nil
}

// Known returns the number of nodes the cluster's majorities count (see
// known): GET /api/v1/cluster shows it.
func (p *Placement) Known() int { return p.known() }
