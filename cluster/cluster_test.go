package cluster

// Tests with protoactor: real actor systems, remote on loopback, disthash
// placement and this provider.

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// node is one protoactor cluster member in a test.
type node struct {
	name        string
	c           *pcluster.Cluster
	p           *Provider
	activations atomic.Int64 // echo grains started on this node
}

// startNode starts an actor system with remote on 127.0.0.1:0, a cluster
// with disthash and an "echo" kind, and this provider on 127.0.0.1:0. The
// echo grain answers a StringValue with "<node>:<value>". The node is shut
// down (not gracefully) at the end of the test unless the test did it.
func startNode(t *testing.T, name, profile string, join ...string) *node {
	t.Helper()
	return start(t, false, name, profile, join...)
}

func start(t *testing.T, client bool, name, profile string, join ...string) *node {
	t.Helper()
	n := &node{name: name}
	prov, err := NewProvider(Config{NodeName: name, GossipAddr: "127.0.0.1:0", Join: join, Profile: profile, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	n.p = prov
	paLog := testLoggerAt(t, slog.LevelWarn).With("component", "protoactor", "node", name)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return paLog }))
	echo := pcluster.NewKind("echo", actor.PropsFromFunc(func(ctx actor.Context) {
		switch msg := ctx.Message().(type) {
		case *actor.Started:
			n.activations.Add(1)
		case *wrapperspb.StringValue:
			ctx.Respond(wrapperspb.String(name + ":" + msg.Value))
		}
	}))
	opts := []pcluster.ConfigOption{pcluster.WithRequestTimeout(5 * time.Second), pcluster.WithRequestLog(false)}
	if !client {
		opts = append(opts, pcluster.WithKinds(echo))
	}
	cfg := pcluster.Configure("twinmesh-test", prov, disthash.New(), remote.Configure("127.0.0.1", 0), opts...)
	n.c = pcluster.New(sys, cfg)
	t.Cleanup(func() {
		switch {
		case n.c.ActorSystem.IsStopped():
		case client:
			// Cluster.Shutdown panics on a client: it sets gossip state,
			// and a client never started gossip.
			n.c.ActorSystem.Shutdown()
			n.c.Remote.Shutdown(false)
		default:
			n.c.Shutdown(false) // does not call the provider
		}
		_ = n.p.Shutdown(false)
	})
	if client {
		n.c.StartClient() // panics if StartClient of the provider fails
	} else {
		n.c.StartMember() // panics if StartMember of the provider fails
	}
	return n
}

// echo sends identity a StringValue through c and returns the answer.
func echo(c *pcluster.Cluster, identity string) (string, error) {
	res, err := c.Request(identity, "echo", wrapperspb.String(identity))
	if err != nil {
		return "", err
	}
	sv, ok := res.(*wrapperspb.StringValue)
	if !ok {
		return "", fmt.Errorf("answer %T", res)
	}
	return sv.Value, nil
}

func TestSingleNode(t *testing.T) {
	n := startNode(t, "solo", ProfileLocal)

	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("dev-%d", i)
		got, err := echo(n.c, id)
		if err != nil || got != "solo:"+id {
			t.Fatalf("request %s: %q, %v", id, got, err)
		}
	}
	if a := n.activations.Load(); a != 10 {
		t.Fatalf("%d activations for 10 identities", a)
	}

	ms := n.p.Members()
	if len(ms) != 1 {
		t.Fatalf("members %+v", ms)
	}
	m := ms[0]
	if m.Name != "solo" || !m.Self || m.State != StateAlive || !m.InTopology ||
		m.Remote != n.c.ActorSystem.Address() || m.ID != n.c.ActorSystem.ID || m.Gossip != n.p.GossipAddr() {
		t.Fatalf("self seen as %+v (actor system %s %s, gossip %s)", m, n.c.ActorSystem.Address(), n.c.ActorSystem.ID, n.p.GossipAddr())
	}
	if strings.Join(m.Kinds, ",") != "echo,"+pcluster.TopicActorKind {
		t.Fatalf("kinds %v", m.Kinds)
	}
	if strings.HasSuffix(n.p.GossipAddr(), ":0") {
		t.Fatalf("gossip address %s: port 0 not resolved", n.p.GossipAddr())
	}
}

func TestStartMemberErrors(t *testing.T) {
	// A seed nobody listens on: StartMember fails, which protoactor turns
	// into a panic.
	func() {
		defer func() {
			r := recover()
			if r == nil || !strings.Contains(fmt.Sprint(r), ErrJoin.Error()) {
				t.Errorf("StartMember with an unreachable seed: recovered %v", r)
			}
		}()
		startNode(t, "lonely", ProfileLocal, "127.0.0.1:1")
	}()

	// Too many kinds for memberlist's 512 bytes of metadata.
	p, err := NewProvider(Config{NodeName: "big", GossipAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	self := meta{ID: "id", Host: "127.0.0.1", Port: 1}
	for i := 0; i < 40; i++ {
		self.Kinds = append(self.Kinds, fmt.Sprintf("a-rather-long-kind-name-%d", i))
	}
	if err := p.start(self, (&recorder{}).update); err == nil || !strings.Contains(err.Error(), ErrMetaTooLarge.Error()) {
		t.Fatalf("start with oversized metadata: %v", err)
	}

	// One start per provider.
	g, _, gself := gossipNode(t, Config{NodeName: "once", Profile: ProfileLocal}, "c", "echo")
	if err := g.start(gself, (&recorder{}).update); err == nil || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("second start: %v", err)
	}
}
