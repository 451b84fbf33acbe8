package cluster

import (
	"testing"
)

// TestTopologyRules drives the peer table directly: which members are handed
// to protoactor, and what happens to IDs protoactor has blocked.
func TestTopologyRules(t *testing.T) {
	p, err := NewProvider(Config{NodeName: "self", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	p.self = meta{Cluster: "c", Node: "self", ID: "self-1", Host: "127.0.0.1", Port: 1, Kinds: []string{"k"}}
	p.mlName = "self/self-1"
	p.sink = rec.update
	add := func(node, id, state string, kinds ...string) *peer {
		p.seq++
		pe := &peer{name: node + "/" + id, seq: p.seq, state: state,
			meta: meta{Cluster: "c", Node: node, ID: id, Host: "127.0.0.1", Port: 2, Kinds: kinds}}
		p.peers[pe.name] = pe
		return pe
	}
	add("self", "self-1", StateAlive, "k")
	add("b", "b-1", StateAlive, "k")
	add("client", "client-1", StateAlive)
	add("leaving", "l-1", StateAlive, "k")
	p.leaving["leaving/l-1"] = "l-1"
	add("left", "left-1", StateLeft, "k")
	add("foreign", "f-1", StateAlive, "k").meta.Cluster = "other"
	add("garbled", "g-1", StateAlive, "k").metaErr = errBadMeta
	old := add("restarted", "r-1", StateAlive, "k")
	add("restarted", "r-2", StateAlive, "k") // before r-1 was declared dead
	dead := add("dead", "dead-1", StateAlive, "k")

	p.push(false)
	if got := rec.topology(); got != "b-1,dead-1,r-2,self-1" {
		t.Fatalf("topology %q", got)
	}

	// Declared dead: out, and protoactor blocks the ID.
	dead.state = StateDead
	p.push(false)
	if got := rec.topology(); got != "b-1,r-2,self-1" {
		t.Fatalf("topology %q", got)
	}
	// Back under the same ID: protoactor would refuse it, so it is not
	// handed over.
	dead.state = StateAlive
	p.push(false)
	if got := rec.topology(); got != "b-1,r-2,self-1" {
		t.Fatalf("blocked ID handed over again: %q", got)
	}

	// Unchanged: no call unless forced (the resync).
	calls := rec.calls
	p.push(false)
	if rec.calls != calls {
		t.Fatal("unchanged topology handed over again")
	}
	p.push(true)
	if rec.calls != calls+1 {
		t.Fatal("forced push did not reach protoactor")
	}

	// One entry per node name, the newest incarnation.
	got := map[string]Member{}
	for _, m := range p.Members() {
		got[m.Name] = m
	}
	if len(got) != 9 || got["restarted"].ID != "r-2" || !got["self"].Self || got["b"].Self {
		t.Fatalf("members %+v", got)
	}
	want := map[string]bool{"self": true, "b": true, "restarted": true, "dead": false, "client": false,
		"leaving": false, "left": false, "foreign": false}
	for name, w := range want {
		if got[name].InTopology != w {
			t.Errorf("%s: InTopology = %v, want %v", name, got[name].InTopology, w)
		}
	}
	if m, ok := got["garbled/g-1"]; !ok || m.ID != "" || m.InTopology {
		t.Errorf("garbled metadata shown as %+v", got)
	}

	// The old incarnation dies: it is forgotten.
	old.state = StateLeft // by its leave notice: memberlist still knows it
	p.pruneLocked("restarted")
	if _, ok := p.peers[old.name]; !ok {
		t.Error("old incarnation forgotten before memberlist let it go")
	}
	old.state, old.gone = StateDead, true
	p.pruneLocked("restarted")
	if _, ok := p.peers[old.name]; ok {
		t.Error("dead old incarnation kept")
	}
}
