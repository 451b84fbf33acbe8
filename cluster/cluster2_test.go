//go:build !race

package cluster

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTwoNodes: B joins A; requests from A for 50 identities land on both;
// B leaves gracefully; A sees it left and the requests still succeed; B
// restarts and gets grains again; B crashes and A serves everything.
//
// Two protoactor members in one process race inside protoactor (a global
// grpc logger set by each remote; and its BlockList, read without its lock
// by UpdateClusterTopology while the gossip actor writes it), so this test
// is built without -race; under -race, TestTwoNodesWithoutRace runs it in a
// child `go test`.
func TestTwoNodes(t *testing.T) {
	a := startNode(t, "a", ProfileLocal)
	b := startNode(t, "b", ProfileLocal, a.p.GossipAddr())

	inTopology := func(n *node, want int) bool {
		c := 0
		for _, m := range n.p.Members() {
			if m.InTopology && m.State == StateAlive {
				c++
			}
		}
		return c == want
	}
	waitFor(t, 10*time.Second, "both nodes see two members", func() bool { return inTopology(a, 2) && inTopology(b, 2) })
	// A protoactor client (no kinds) learns the members too, and can call
	// grains, but gets none.
	cl := startClient(t, "client", ProfileLocal, a.p.GossipAddr())
	waitFor(t, 10*time.Second, "the client sees both members", func() bool { return inTopology(cl, 2) })
	waitFor(t, 10*time.Second, "a sees the client", func() bool { _, ok := member(a.p, "client"); return ok })
	if m, _ := member(a.p, "client"); m.InTopology || len(m.Kinds) != 0 || m.State != StateAlive {
		t.Fatalf("a sees the client as %+v", m)
	}
	if got, err := echo(cl.c, "from-client"); err != nil || !strings.HasSuffix(got, ":from-client") {
		t.Fatalf("request from the client: %q, %v", got, err)
	}
	a.activations.Store(0)
	b.activations.Store(0)

	for _, n := range []*node{a, b} {
		ms := slices.DeleteFunc(n.p.Members(), func(m Member) bool { return m.Name == "client" })
		if len(ms) != 2 || ms[0].Name != "a" || ms[1].Name != "b" || ms[0].Remote != a.c.ActorSystem.Address() ||
			ms[1].Remote != b.c.ActorSystem.Address() || ms[0].ID != a.c.ActorSystem.ID || ms[1].ID != b.c.ActorSystem.ID {
			t.Fatalf("%s sees %+v", n.name, ms)
		}
	}

	request := func(round string) map[string]int {
		t.Helper()
		served := map[string]int{}
		for i := 0; i < 50; i++ {
			id := fmt.Sprintf("dev-%02d", i)
			got, err := echo(a.c, id)
			if err != nil {
				t.Fatalf("%s: request %s: %v", round, id, err)
			}
			host, value, _ := strings.Cut(got, ":")
			if value != id {
				t.Fatalf("%s: request %s answered %q", round, id, got)
			}
			served[host]++
		}
		return served
	}
	served := request("two nodes")
	if served["a"] == 0 || served["b"] == 0 || served["a"]+served["b"] != 50 {
		t.Fatalf("answers per node %v", served)
	}
	if a.activations.Load() != int64(served["a"]) || b.activations.Load() != int64(served["b"]) {
		t.Fatalf("activations a=%d b=%d, answers %v", a.activations.Load(), b.activations.Load(), served)
	}
	t.Logf("50 identities: %d on a, %d on b", served["a"], served["b"])

	stopped := make(chan time.Duration)
	begin := time.Now()
	go func() {
		b.c.Shutdown(true) // calls our Shutdown(true), after stopping b's actor system
		stopped <- time.Since(begin)
	}()
	seen := waitFor(t, 10*time.Second, "a sees b left", func() bool {
		m, _ := member(a.p, "b")
		return m.State == StateLeft && !m.InTopology
	})
	waitFor(t, 5*time.Second, "a alone in its topology", func() bool { return inTopology(a, 1) })
	took := <-stopped
	t.Logf("a saw b left %v after b's Cluster.Shutdown(true) began; that call took %v",
		seen.Round(time.Millisecond), took.Round(time.Millisecond))

	served = request("after b left")
	if served["a"] != 50 {
		t.Fatalf("answers per node after b left: %v", served)
	}

	// b restarts under the same name: a new actor-system ID, which protoactor
	// has not blocked, so grains are placed on it again.
	b2 := startNode(t, "b", ProfileLocal, a.p.GossipAddr())
	waitFor(t, 10*time.Second, "a sees the new b", func() bool {
		m, _ := member(a.p, "b")
		return m.ID == b2.c.ActorSystem.ID && m.InTopology && inTopology(a, 2)
	})
	served = request("after b restarted")
	if served["b"] == 0 || int64(served["b"]) != b2.activations.Load() {
		t.Fatalf("answers per node after b restarted: %v (%d activations on the new b)", served, b2.activations.Load())
	}

	// It crashes: a declares it dead, and serves everything again.
	b2.c.Shutdown(false)
	_ = b2.p.Shutdown(false)
	dead := waitFor(t, 30*time.Second, "a sees b dead", func() bool {
		m, _ := member(a.p, "b")
		return m.State == StateDead && !m.InTopology
	})
	t.Logf("a saw the crashed b dead after %v", dead.Round(time.Millisecond))
	served = request("after b crashed")
	if served["a"] != 50 {
		t.Fatalf("answers per node after b crashed: %v", served)
	}
}

// startClient starts a protoactor cluster client: no kinds, same provider.
func startClient(t *testing.T, name, profile string, join ...string) *node {
	t.Helper()
	return start(t, true, name, profile, join...)
}
