package cluster

import "context"

// Membership is the cluster membership as the Placement reads it; the
// Provider implements it. Members must be safe for concurrent use.
type Membership interface {
	// Members returns every node seen, this one included (see
	// Provider.Members). The caller owns the slice.
	Members() []Member
}

// View is the cluster as this node sees it: the body of GET
// /api/v1/cluster (CONTRACT section 2).
type View struct {
	// Self is this node's name.
	Self    string       `json:"self"`
	Members []MemberView `json:"members"`
	// Known is how many nodes the cluster's majorities count: every node
	// recorded as a member, down or not, until it is forgotten (DELETE
	// /api/v1/cluster/members/{node}).
	Known int `json:"known"`
}

// MemberView is one member in a View.
type MemberView struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip"`
	Remote string `json:"remote"`
	// State is StateAlive, StateSuspect, StateDead or StateLeft.
	State string `json:"state"`
	// Grains is the number of grains active on the member: 0 for a member
	// that left or failed, -1 for a live one that did not answer in time.
	Grains int64 `json:"grains"`
	Self   bool  `json:"self,omitempty"`
}

// View returns the cluster as this node sees it, with the grain count of
// every live member, asked of each in parallel (each request bounded by
// PlacementConfig.PeerTimeout and ctx).
func (p *Placement) View(ctx context.Context) View {
	var members []Member
	if p.cfg.Membership != nil {
		members = p.cfg.Membership.Members()
	}
	v := view(members, p.GrainCounts(ctx))
	v.Known = p.known()
	return v
}

// view builds a View from the members and the grain counts by remote
// address of those that answered.
func view(members []Member, grains map[string]int64) View {
	v := View{Members: make([]MemberView, 0, len(members))}
	for _, m := range members {
		mv := MemberView{Name: m.Name, Gossip: m.Gossip, Remote: m.Remote, State: m.State, Self: m.Self, Grains: -1}
		switch g, ok := grains[m.Remote]; {
		case m.State == StateDead || m.State == StateLeft:
			mv.Grains = 0
		case ok && m.Remote != "":
			mv.Grains = g
		}
		if m.Self {
			v.Self = m.Name
		}
		v.Members = append(v.Members, mv)
	}
	return v
}

// resolve returns the protoactor address of the live member named node.
func (p *Placement) resolve(node string) (string, bool) {
	if p.cfg.Membership == nil {
		return "", false
	}
	for _, m := range p.cfg.Membership.Members() {
		if m.Name == node && m.Remote != "" && (m.State == StateAlive || m.State == StateSuspect) {
			return m.Remote, true
		}
	}
	return "", false
}

var _ Membership = (*Provider)(nil)
