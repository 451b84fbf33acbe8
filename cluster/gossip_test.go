package cluster

// Gossip-level tests: real memberlists on loopback, protoactor replaced by a
// recorder, so several nodes run in one process under -race.

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestJoinUnreachableSeed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()
	p, _, _, err := startGossipNode(t, Config{NodeName: "lonely", Profile: ProfileLocal, Join: []string{closed}}, "c", "echo")
	if !errors.Is(err, ErrJoin) || !strings.Contains(err.Error(), closed) {
		t.Fatalf("err = %v, want ErrJoin naming %s", err, closed)
	}
	if p.GossipAddr() == "" {
		t.Fatal("no gossip address")
	}
	// The listener is released: the same address can be bound again.
	if _, _, _, err := startGossipNode(t, Config{NodeName: "again", GossipAddr: p.GossipAddr(), Profile: ProfileLocal}, "c", "echo"); err != nil {
		t.Fatalf("gossip port not released after a failed join: %v", err)
	}
}

func TestJoinRejections(t *testing.T) {
	key1, key2 := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	cases := []struct {
		name           string
		seedKey, key   []byte
		seedCl, cl     string
		wantJoinToFail bool
	}{
		{"same key", key1, key1, "c", "c", false},
		{"wrong key", key1, key2, "c", "c", true},
		{"no key against encrypted seed", key1, nil, "c", "c", true},
		{"other cluster", nil, nil, "c", "other", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seed, _, _ := gossipNode(t, Config{NodeName: "seed", Profile: ProfileLocal, GossipKey: tc.seedKey}, tc.seedCl, "echo")
			_, rec, self, err := startGossipNode(t, Config{NodeName: "joiner", Profile: ProfileLocal, GossipKey: tc.key,
				Join: []string{seed.GossipAddr()}}, tc.cl, "echo")
			if tc.wantJoinToFail {
				if !errors.Is(err, ErrJoin) {
					t.Fatalf("join succeeded or failed otherwise: %v", err)
				}
				if _, seen := member(seed, "joiner"); seen && stateOf(seed, "joiner") == StateAlive {
					if m, _ := member(seed, "joiner"); m.InTopology {
						t.Fatalf("seed put a rejected joiner in its topology: %+v", m)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "both in the joiner's topology", func() bool {
				return strings.Contains(rec.topology(), self.ID) && strings.Count(rec.topology(), ",") == 1
			})
		})
	}
}

// TestMembership walks one cluster through a join, a graceful leave, a
// restart under the same name and crashes, checking Members and the
// topology handed to protoactor at each step.
func TestMembership(t *testing.T) {
	a, recA, selfA := gossipNode(t, Config{NodeName: "a", Profile: ProfileLocal}, "c", "echo")
	join := []string{a.GossipAddr()}
	b, _, selfB := gossipNode(t, Config{NodeName: "b", Profile: ProfileLocal, Join: join}, "c", "echo")
	client, recC, selfC := gossipNode(t, Config{NodeName: "client", Profile: ProfileLocal, Join: join}, "c") // no kinds
	// A fourth node confirms suspicions: with DefaultLocalConfig, once it
	// knows three nodes (dead and left ones included) memberlist waits for
	// one confirmation before declaring a node dead, or else 18 s.
	witness, _, _ := gossipNode(t, Config{NodeName: "witness", Profile: ProfileLocal, Join: join}, "c")
	waitFor(t, 5*time.Second, "a hands over a and b", func() bool {
		return recA.topology() == sortedIDs(selfA.ID, selfB.ID)
	})
	waitFor(t, 5*time.Second, "the client hands over a and b", func() bool {
		return recC.topology() == sortedIDs(selfA.ID, selfB.ID)
	})

	waitFor(t, 5*time.Second, "a sees four nodes", func() bool { return len(a.Members()) == 4 })
	ms := a.Members()
	if len(ms) != 4 || ms[0].Name != "a" || ms[1].Name != "b" || ms[2].Name != "client" {
		t.Fatalf("members %+v", ms)
	}
	if !ms[0].Self || ms[1].Self || ms[0].State != StateAlive || ms[1].State != StateAlive || ms[2].State != StateAlive {
		t.Fatalf("states %+v", ms)
	}
	if ms[1].ID != selfB.ID || ms[1].Remote != selfB.remote() || ms[1].Gossip != b.GossipAddr() || len(ms[1].Kinds) != 1 {
		t.Fatalf("b seen as %+v", ms[1])
	}
	if !ms[0].InTopology || !ms[1].InTopology || ms[2].InTopology || ms[2].ID != selfC.ID || len(ms[2].Kinds) != 0 {
		t.Fatalf("topology flags %+v", ms)
	}

	// Graceful leave: "left" everywhere, out of the topology.
	if err := b.Shutdown(true); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	if st := stateOf(b, "b"); st != StateLeft {
		t.Fatalf("b sees itself %q after leaving", st)
	}
	waitFor(t, 5*time.Second, "a sees b left", func() bool { return stateOf(a, "b") == StateLeft })
	waitFor(t, 5*time.Second, "b out of a's topology", func() bool { return recA.topology() == selfA.ID })
	waitFor(t, 5*time.Second, "the client sees b left", func() bool { return stateOf(client, "b") == StateLeft })
	waitFor(t, 5*time.Second, "the witness sees b left", func() bool { return stateOf(witness, "b") == StateLeft })
	if m, _ := member(a, "b"); m.InTopology || m.ID != selfB.ID {
		t.Fatalf("b after leaving: %+v", m)
	}

	// Restart under the same name: a new incarnation, a new ID.
	// It joins through a and the witness, so that both know it at once
	// (memberlist spreads a join by gossip with few retransmissions, then
	// push/pull every 15 s) and the witness can confirm its failure below.
	b2, _, selfB2 := gossipNode(t, Config{NodeName: "b", Profile: ProfileLocal,
		Join: []string{a.GossipAddr(), witness.GossipAddr()}}, "c", "echo")
	waitFor(t, 5*time.Second, "b's new incarnation in a's topology", func() bool {
		return recA.topology() == sortedIDs(selfA.ID, selfB2.ID)
	})
	// Each incarnation is its own memberlist node: the view switches to it.
	waitFor(t, 5*time.Second, "a sees the new b alive", func() bool {
		m, _ := member(a, "b")
		return m.ID == selfB2.ID && m.State == StateAlive && m.InTopology
	})
	waitFor(t, 5*time.Second, "the witness sees the new b", func() bool {
		m, _ := member(witness, "b")
		return m.ID == selfB2.ID && m.State == StateAlive
	})

	// Crash of the client: "dead"; the topology does not change.
	if err := client.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	// Up to memberlist's maximum suspicion (18 s with DefaultLocalConfig)
	// when the confirming suspicion gets lost: DefaultLocalConfig
	// retransmits each message only twice, and spends transmissions on nodes
	// that died less than 15 s ago.
	waitFor(t, 30*time.Second, "a sees the client dead", func() bool { return stateOf(a, "client") == StateDead })
	if got := recA.topology(); got != sortedIDs(selfA.ID, selfB2.ID) {
		t.Fatalf("a client's crash changed the topology: %s", got)
	}

	// Crash of b: dead, and out of the topology.
	if err := b2.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a sees b dead", func() bool { return stateOf(a, "b") == StateDead })
	waitFor(t, 5*time.Second, "b out of a's topology", func() bool { return recA.topology() == selfA.ID })

	ms = a.Members()
	if len(ms) != 4 || ms[1].ID != selfB2.ID || ms[1].InTopology || ms[2].State != StateDead {
		t.Fatalf("final view %+v", ms)
	}
}

// TestDepartureTiming measures how long a peer takes to notice a graceful
// leave and a crash with each profile (go test -v -run TestDepartureTiming
// shows the figures). Scenarios: two nodes; three nodes, where the third
// confirms the suspicion; and two nodes plus one that left a moment ago,
// which memberlist still counts when it sizes the suspicion timeout.
func TestDepartureTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 20 s")
	}
	for _, profile := range []string{ProfileLAN, ProfileLocal} {
		for _, sc := range []struct {
			name            string
			witness, leaver bool
			crashWithin     time.Duration
		}{
			{"leave", false, true, 0},
			{"crash of 1 in 2", false, false, 10 * time.Second},
			{"crash of 1 in 3", true, false, 10 * time.Second},
			{"crash of 1 in 2 after a leave", false, true, 30 * time.Second},
		} {
			if sc.name == "leave" || sc.crashWithin > 0 {
				t.Run(profile+"/"+sc.name, func(t *testing.T) {
					t.Parallel()
					departure(t, profile, sc.name, sc.witness, sc.leaver, sc.crashWithin)
				})
			}
		}
	}
}

func departure(t *testing.T, profile, name string, witness, leaver bool, crashWithin time.Duration) {
	a, recA, selfA := gossipNode(t, Config{NodeName: "a", Profile: profile}, "c", "echo")
	join := []string{a.GossipAddr()}
	want := 1
	var l *Provider
	if leaver {
		l, _, _ = gossipNode(t, Config{NodeName: "leaver", Profile: profile, Join: join}, "c", "echo")
		want++
	}
	if witness {
		gossipNode(t, Config{NodeName: "witness", Profile: profile, Join: join}, "c", "echo")
		want++
	}
	var c *Provider
	if crashWithin > 0 {
		c, _, _ = gossipNode(t, Config{NodeName: "crasher", Profile: profile, Join: join}, "c", "echo")
		want++
	}
	waitFor(t, 10*time.Second, "everyone in a's topology", func() bool { return strings.Count(recA.topology(), ",") == want-1 })

	if leaver {
		took := make(chan time.Duration, 1)
		begin := time.Now()
		go func() {
			if err := l.Shutdown(true); err != nil {
				t.Error(err)
			}
			took <- time.Since(begin)
		}()
		seen := waitFor(t, 10*time.Second, "leave seen", func() bool { return stateOf(a, "leaver") == StateLeft })
		if crashWithin == 0 {
			waitFor(t, time.Second, "leaver out of the topology", func() bool { return recA.topology() == selfA.ID })
			t.Logf("%s %s: the peer saw \"left\" %v after Shutdown(true) began; Shutdown took %v",
				profile, name, seen.Round(time.Millisecond), (<-took).Round(time.Millisecond))
			return
		}
		<-took
	}

	begin := time.Now()
	if err := c.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	var suspect time.Duration
	dead := waitFor(t, crashWithin, "crash seen", func() bool {
		st := stateOf(a, "crasher")
		if st == StateSuspect && suspect == 0 {
			suspect = time.Since(begin)
		}
		return st == StateDead
	})
	out := waitFor(t, 5*time.Second, "crasher out of the topology", func() bool { return !strings.Contains(recA.topology(), "crasher") })
	t.Logf("%s %s: suspect after %v, dead after %v, out of the topology after %v",
		profile, name, suspect.Round(time.Millisecond), dead.Round(time.Millisecond), (dead + out).Round(time.Millisecond))
	if !witness && !leaver && suspect == 0 {
		t.Error("the crasher was never reported suspect before dead")
	}
}

func sortedIDs(ids ...string) string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return strings.Join(out, ",")
}
