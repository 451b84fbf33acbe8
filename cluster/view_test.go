package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// members is a fixed Membership.
type members []Member

func (ms members) Members() []Member { return append([]Member(nil), ms...) }

func TestView(t *testing.T) {
	tests := []struct {
		name   string
		m      Member
		grains map[string]int64
		want   int64
	}{
		{"alive, answered", Member{Name: "a", Remote: "h:1", State: StateAlive}, map[string]int64{"h:1": 7}, 7},
		{"suspect, answered", Member{Name: "a", Remote: "h:1", State: StateSuspect}, map[string]int64{"h:1": 3}, 3},
		{"alive, no answer", Member{Name: "a", Remote: "h:1", State: StateAlive}, nil, -1},
		{"alive, metadata unreadable", Member{Name: "a", State: StateAlive}, map[string]int64{"": 5}, -1},
		{"dead", Member{Name: "a", Remote: "h:1", State: StateDead}, map[string]int64{"h:1": 9}, 0},
		{"left", Member{Name: "a", Remote: "h:1", State: StateLeft}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := view([]Member{tc.m}, tc.grains)
			if len(v.Members) != 1 || v.Members[0].Grains != tc.want {
				t.Fatalf("view %+v, want grains %d", v, tc.want)
			}
		})
	}
}

// The view encodes as CONTRACT section 2 shows it; an empty cluster has a
// members array, not null.
func TestViewJSON(t *testing.T) {
	v := view([]Member{
		{Name: "n1", Gossip: "g:1", Remote: "r:1", ID: "x", State: StateAlive, Self: true, Kinds: []string{"device"}, InTopology: true},
		{Name: "n2", Gossip: "g:2", Remote: "r:2", State: StateDead},
	}, map[string]int64{"r:1": 4})
	v.Known = 2
	b, _ := json.Marshal(v)
	want := `{"self":"n1","members":[{"name":"n1","gossip":"g:1","remote":"r:1","state":"alive","grains":4,"self":true},` +
		`{"name":"n2","gossip":"g:2","remote":"r:2","state":"dead","grains":0}],"known":2}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	if b, _ := json.Marshal(view(nil, nil)); string(b) != `{"self":"","members":[],"known":0}` {
		t.Errorf("empty view %s", b)
	}
}

// Invoke reaches the member holding the session by its node name, only
// while that member is alive or suspect.
func TestResolve(t *testing.T) {
	f := newFakeNet(t, 1, 1)
	p := f.nodes[f.addrs[0]]
	p.cfg.Membership = members{
		{Name: "up", Remote: "r:1", State: StateAlive},
		{Name: "slow", Remote: "r:2", State: StateSuspect},
		{Name: "gone", Remote: "r:3", State: StateDead},
		{Name: "left", Remote: "r:4", State: StateLeft},
		{Name: "odd", State: StateAlive},
	}
	for node, want := range map[string]string{"up": "r:1", "slow": "r:2", "gone": "", "left": "", "odd": "", "nobody": ""} {
		if got, ok := p.resolve(node); got != want || ok != (want != "") {
			t.Errorf("resolve(%s) = %q, %v; want %q", node, got, ok, want)
		}
	}
	if _, _, err := p.Invoke(context.Background(), "gone", "d", "m", nil); !errors.Is(err, ErrNoMember) || !errors.Is(err, errcode.ErrNotConnected) {
		t.Errorf("Invoke on a dead member: %v, want ErrNoMember (not connected)", err)
	}
}
