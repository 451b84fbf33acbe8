package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// A node that links other kinds than the cluster's members fails its join,
// with an error naming the difference; the seed refuses it and keeps
// running without it. Kinds are compared as sets, and a client (no kinds)
// is not concerned.
func TestJoinRefusesOtherKinds(t *testing.T) {
	tests := []struct {
		name        string
		seed, kinds []string
		wantErr     string // "" means the join succeeds
	}{
		{"same kinds", []string{"device", "room"}, []string{"device", "room"}, ""},
		{"same kinds, other order", []string{"room", "device"}, []string{"device", "room"}, ""},
		{"one kind more", []string{"device", "room"}, []string{"device", "room", "thermostat"},
			"cluster: this node links kinds [thermostat] that member seed lacks — every member must link the same kinds"},
		{"one kind less", []string{"device", "room", "thermostat"}, []string{"device", "room"},
			"cluster: member seed links kinds [thermostat] that this node lacks — every member must link the same kinds"},
		{"different kinds both ways", []string{"device", "thermostat"}, []string{"device", "foo"},
			"cluster: member seed links kinds [thermostat] that this node lacks; this node links [foo] that seed lacks — every member must link the same kinds"},
		{"a client", []string{"device"}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seed, seedRec, seedSelf := gossipNode(t, Config{NodeName: "seed", Profile: ProfileLocal}, "c", tc.seed...)
			_, rec, self, err := startGossipNode(t, Config{NodeName: "joiner", Profile: ProfileLocal,
				Join: []string{seed.GossipAddr()}}, "c", tc.kinds...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				waitFor(t, 5*time.Second, "the joiner in the seed's view", func() bool { return stateOf(seed, "joiner") == StateAlive })
				return
			}
			var ke *KindsError
			if !errors.Is(err, ErrKindsMismatch) || !errors.As(err, &ke) || errors.Is(err, ErrJoin) {
				t.Fatalf("join: %v, want a *KindsError", err)
			}
			if err.Error() != tc.wantErr {
				t.Errorf("error\n got %s\nwant %s", err, tc.wantErr)
			}
			if strings.Contains(rec.topology(), seedSelf.ID) {
				t.Errorf("the refused joiner handed the seed to protoactor: %s", rec.topology())
			}
			// The seed refused the merge too: the joiner never becomes its
			// member, and the seed stays on its own.
			waitFor(t, 5*time.Second, "the seed to refuse the joiner", func() bool {
				seed.mu.Lock()
				defer seed.mu.Unlock()
				return seed.refused["joiner/"+self.ID]
			})
			if st := stateOf(seed, "joiner"); st == StateAlive {
				t.Errorf("the seed counts the refused joiner alive")
			}
			if strings.Contains(seedRec.topology(), self.ID) {
				t.Errorf("the seed put the refused joiner in its topology: %s", seedRec.topology())
			}
		})
	}
}

// Outside a join, a member with other kinds that memberlist hears of is
// refused by the alive delegate; while this node joins, the first such
// member fails the start.
func TestAliveRefusesOtherKinds(t *testing.T) {
	p, _, self := gossipNode(t, Config{NodeName: "a", Profile: ProfileLocal}, "c", "device", "room")
	d := (*aliveDelegate)(p)
	node := func(name string, m meta) *memberlist.Node {
		return &memberlist.Node{Name: name + "/" + m.ID, Meta: m.encode()}
	}
	other := meta{Cluster: "c", Node: "b", ID: "b1", Host: "127.0.0.1", Port: 1, Kinds: []string{"device"}}
	tests := []struct {
		name   string
		n      *memberlist.Node
		refuse bool
	}{
		{"same kinds", node("b", meta{Cluster: "c", Node: "b", ID: "b2", Host: "127.0.0.1", Port: 1, Kinds: []string{"room", "device"}}), false},
		{"other kinds", node("b", other), true},
		{"other cluster", node("x", meta{Cluster: "x", Node: "x", ID: "x1", Host: "127.0.0.1", Port: 1, Kinds: []string{"foo"}}), false},
		{"client", node("cl", meta{Cluster: "c", Node: "cl", ID: "c1", Host: "127.0.0.1", Port: 1}), false},
		{"another incarnation of this node", node("a", meta{Cluster: "c", Node: "a", ID: "a0", Host: "127.0.0.1", Port: 1, Kinds: []string{"x"}}), false},
		{"this node", node("a", self), false},
		{"unreadable metadata", &memberlist.Node{Name: "junk", Meta: []byte("{")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := d.NotifyAlive(tc.n)
			if (err != nil) != tc.refuse {
				t.Fatalf("NotifyAlive: %v, want refused %v", err, tc.refuse)
			}
		})
	}
	if _, seen := member(p, "b"); seen {
		t.Error("a refused member shows in Members")
	}

	// While joining, the refusal is kept for StartMember to return.
	p.mu.Lock()
	p.joining = true
	p.mu.Unlock()
	_ = d.NotifyAlive(node("b", other))
	p.mu.Lock()
	got := p.joinRefused
	p.joining = false
	p.mu.Unlock()
	if !errors.Is(got, ErrKindsMismatch) {
		t.Fatalf("refusal while joining: %v", got)
	}
}
