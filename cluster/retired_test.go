package cluster

import (
	"encoding/json"
	"testing"
	"time"
)

// TestNoticeRetired: a node restarts under a new identity when the members
// that still accept it, itself included, are fewer than a majority of the
// cluster it knows — after a partition, where both sides blocked each other
// (mutual) — or when a member it does not block blocked it (after a pause:
// the lopsided state the Jepsen harness saw tip a majority member into
// retiring mid-partition, seed 401776788).
func TestNoticeRetired(t *testing.T) {
	for _, tc := range []struct {
		name    string
		others  map[string]string // node → state
		by      []string          // members that blocked this node
		stale   []string          // members whose notice is old
		mutual  []string          // members this node blocked in turn
		retired bool
	}{
		{"both others blocked it (it was cut off)", map[string]string{"n1": StateAlive, "n2": StateAlive}, []string{"n1", "n2"}, nil, []string{"n1", "n2"}, true},
		{"only the former minority blocked it", map[string]string{"n1": StateAlive, "n4": StateAlive}, []string{"n4"}, nil, []string{"n4"}, false},
		{"one of two, the other dead", map[string]string{"n1": StateAlive, "n2": StateDead}, []string{"n1"}, nil, []string{"n1"}, true},
		{"five nodes, two blocked it", map[string]string{"n1": StateAlive, "n2": StateAlive, "n4": StateAlive, "n5": StateAlive}, []string{"n1", "n2"}, nil, []string{"n1", "n2"}, false},
		{"five nodes, three blocked it", map[string]string{"n1": StateAlive, "n2": StateAlive, "n4": StateAlive, "n5": StateAlive}, []string{"n1", "n2", "n4"}, nil, []string{"n1", "n2", "n4"}, true},
		{"old notices do not count", map[string]string{"n1": StateAlive, "n2": StateAlive}, []string{"n1"}, []string{"n2"}, []string{"n1"}, false},
		{"a member that left does not count", map[string]string{"n1": StateAlive, "n2": StateLeft}, []string{"n1"}, nil, []string{"n1"}, true},
		{"after a pause: one member it accepts blocked it", map[string]string{"n1": StateAlive, "n2": StateAlive}, []string{"n2"}, nil, nil, true},
		{"five nodes, one it accepts blocked it", map[string]string{"n1": StateAlive, "n2": StateAlive, "n4": StateAlive, "n5": StateAlive}, []string{"n4"}, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewProvider(Config{NodeName: "n3", GossipAddr: "127.0.0.1:0", Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			p.self = meta{Node: "n3", ID: "id-n3", Kinds: []string{"device"}}
			p.mlName = "n3/id-n3"
			for node, state := range tc.others {
				name := node + "/id-" + node
				p.peers[name] = &peer{name: name, state: state, meta: meta{Node: node, ID: "id-" + node, Kinds: []string{"device"}}}
			}
			for _, n := range tc.mutual {
				p.retired["id-"+n] = true
			}
			for _, n := range tc.stale {
				p.retiredBy[n] = time.Now().Add(-2 * retiredMemory)
			}
			for _, by := range tc.by {
				b, _ := json.Marshal(retiredNotice{Retired: "id-n3", By: by})
				(*nodeDelegate)(p).NotifyMsg(b)
			}
			// A notice about another incarnation changes nothing.
			b, _ := json.Marshal(retiredNotice{Retired: "id-old", By: "n1"})
			(*nodeDelegate)(p).NotifyMsg(b)
			select {
			case <-p.Retired():
				if !tc.retired {
					t.Fatal("retired, want not")
				}
			default:
				if tc.retired {
					t.Fatal("not retired, want retired")
				}
			}
		})
	}
}
