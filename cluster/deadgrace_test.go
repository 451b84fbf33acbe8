package cluster

import (
	"testing"
	"time"
)

// TestDeadVerdictGrace is the regression test of a majority member retired
// after a partition healed (Jepsen seed 16166532): the minority's stale dead
// verdict about it reached its peers, they dropped it from protoactor's
// topology at once — protoactor then blocks the ID for good — and, blocked
// by a majority, it restarted although it had never been cut off. A dead
// verdict now removes a member only once it held for deadGrace; one that
// is refuted in the meantime leaves no trace.
func TestDeadVerdictGrace(t *testing.T) {
	p, err := NewProvider(Config{NodeName: "n1", GossipAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	p.self = meta{Cluster: "c", Node: "n1", ID: "id-1"}
	peerOf := func(name, id string) *peer {
		return &peer{name: name + "/" + id, seq: 1, state: StateAlive,
			meta: meta{Cluster: "c", Node: name, ID: id, Host: "10.0.0.1", Port: 4000, Kinds: []string{"device"}}}
	}
	n3 := peerOf("n3", "id-3")
	p.peers[n3.name] = n3
	inTopology := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, ids, _ := p.topologyLocked()
		return ids["id-3"]
	}
	if !inTopology() {
		t.Fatal("an alive member is not in the topology")
	}
	p.mu.Lock()
	n3.state, n3.deadAt = StateDead, time.Now()
	p.mu.Unlock()
	if !inTopology() {
		t.Error("a member declared dead a moment ago left the topology (protoactor would block it for good)")
	}
	p.mu.Lock()
	n3.deadAt = time.Now().Add(-deadGrace - time.Millisecond)
	p.mu.Unlock()
	if inTopology() {
		t.Error("a member dead for longer than deadGrace is still in the topology")
	}
}
