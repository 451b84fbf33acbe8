package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"

	pcluster "github.com/asynkron/protoactor-go/cluster"
)

// stubMembership lists members by node name with a state each.
type stubMembership struct {
	mu     sync.Mutex
	self   string
	states map[string]string
}

func (s *stubMembership) Members() []Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Member
	for n, st := range s.states {
		out = append(out, Member{Name: n, State: st, Self: n == s.self, Kinds: []string{"device"}})
	}
	return out
}

func (s *stubMembership) set(name, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if state == "" {
		delete(s.states, name)
		return
	}
	s.states[name] = state
}

// TestRestartedNodeCountsRecordedMembers is the regression test of the
// fork the 10-minute Jepsen run found (seed 907312974): on the minority
// side of a partition, a node restarted under a new identity heard of one
// other member before the rest, counted a cluster of two, and claimed
// grains with that member alone. The members a node once saw are recorded
// in its file, so after a restart it still counts five and refuses.
func TestRestartedNodeCountsRecordedMembers(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 5, 2)
	names := map[string]string{}
	for i, a := range f.addrs {
		names[a] = string(rune('a' + i))
	}
	for _, a := range f.addrs {
		m := &stubMembership{self: names[a], states: map[string]string{}}
		for _, n := range names {
			m.states[n] = StateAlive
		}
		f.nodes[a].cfg.Membership = m
		f.nodes[a].rememberMembers(ctx)
		if k := f.nodes[a].known(); k != 5 {
			t.Fatalf("%s knows %d members, want 5", a, k)
		}
	}
	// Node 0 restarts on the same file and, so far, sees only node 1.
	a0, a1 := f.addrs[0], f.addrs[1]
	p, err := NewPlacement(PlacementConfig{Store: f.dbs[a0], Replicas: 2, PeerTimeout: f.nodes[a0].cfg.PeerTimeout})
	if err != nil {
		t.Fatal(err)
	}
	p.self = a0
	p.cfg.Membership = &stubMembership{self: names[a0], states: map[string]string{names[a0]: StateAlive, names[a1]: StateAlive}}
	var two []*pcluster.Member
	for _, m := range *f.nodes[a0].members.Load() {
		if a := m.Address(); a == a0 || a == a1 {
			two = append(two, m)
		}
	}
	p.members.Store(&two)
	p.markSynced()
	p.send = f.sender()
	if k := p.known(); k != 5 {
		t.Fatalf("after the restart node 0 knows %d members, want 5", k)
	}
	if w := p.writeAcks(); w != 3 {
		t.Fatalf("after the restart writeAcks = %d, want 3", w)
	}
	if _, err := p.Claim(ctx, "d1"); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("claim with 2 of 5 members: %v, want ErrNoQuorum", err)
	}

	// Forget: refused for a live member; for one stopped for good, every
	// live member counts one fewer.
	owner := f.nodes[a1]
	if err := owner.Forget(ctx, names[f.addrs[2]]); !errors.Is(err, ErrMemberAlive) {
		t.Fatalf("forget a live member: %v, want ErrMemberAlive", err)
	}
	gone := f.addrs[4]
	f.kill(gone)
	f.forget(gone)
	for _, a := range f.addrs {
		f.nodes[a].cfg.Membership.(*stubMembership).set(names[gone], StateDead)
	}
	if k := owner.known(); k != 5 {
		t.Fatalf("a dead member still counts: known = %d, want 5", k)
	}
	if err := owner.Forget(ctx, names[gone]); err != nil {
		t.Fatal(err)
	}
	for _, a := range f.addrs[:4] {
		f.nodes[a].cfg.Membership.(*stubMembership).set(names[gone], "")
		if k := f.nodes[a].known(); k != 4 {
			t.Errorf("%s knows %d members after the forget, want 4", a, k)
		}
	}
}
