package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/twinmesh/twinmesh/persistence"
)

// knownMembers is a Membership that knows every node of a fake network as
// dead; record adds them to the members a node has recorded, as it would
// have when it saw them alive.
type knownMembers struct{ addrs []string }

func (k knownMembers) record(p *Placement) {
	names := map[string]bool{}
	for _, a := range k.addrs {
		names[a] = true
	}
	p.nodes.set(names)
}

func (k knownMembers) Members() []Member {
	out := make([]Member, len(k.addrs))
	for i, a := range k.addrs {
		out[i] = Member{Name: a, Remote: a, State: StateDead, Kinds: []string{"device"}}
	}
	return out
}

// TestMinorityRefuses: a node that sees none of the others alive (a
// partition, or a pause that outlasted failure detection) still knows the
// cluster has three members, so it can neither take a grain over nor
// acknowledge a write.
func TestMinorityRefuses(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	for _, p := range f.nodes {
		p.cfg.Membership = knownMembers{f.addrs}
		knownMembers{f.addrs}.record(p)
	}
	r := f.ranked("d1")
	owner := r[0]
	epoch, err := owner.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 1))}); err != nil {
		t.Fatal(err)
	}
	// The owner is cut off: the others are dead to it.
	for _, p := range r[1:] {
		f.kill(p.self)
	}
	for _, p := range r[1:] {
		f.forget(p.self)
	}
	own := r[0]
	if n := own.Members(); n != 1 {
		t.Fatalf("setup: the owner sees %d members", n)
	}
	if n := own.known(); n != 3 {
		t.Fatalf("known = %d, want 3", n)
	}
	if err := own.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 2))}); !errors.Is(err, ErrUnderReplicated) {
		t.Fatalf("write on the minority: %v, want ErrUnderReplicated", err)
	}
	if _, err := own.Claim(ctx, "d2"); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("claim on the minority: %v, want ErrNoQuorum", err)
	}
}

// TestWriteAcks is the arithmetic of write sets that meet every claim
// majority.
func TestWriteAcks(t *testing.T) {
	for _, tc := range []struct{ known, replicas, want int }{
		{1, 2, 1}, {2, 2, 2}, {3, 2, 2}, {4, 2, 2}, {5, 2, 3}, {7, 2, 4}, {5, 4, 4}, {3, 1, 2},
	} {
		addrs := make([]string, tc.known)
		for i := range addrs {
			addrs[i] = string(rune('a' + i))
		}
		p := &Placement{cfg: PlacementConfig{Replicas: tc.replicas, Membership: knownMembers{addrs}}, self: "a"}
		alive := []*pcluster.Member{}
		p.members.Store(&alive)
		knownMembers{addrs}.record(p)
		if got := p.writeAcks(); got != tc.want {
			t.Errorf("%d known, --replicas %d: writeAcks %d, want %d", tc.known, tc.replicas, got, tc.want)
		}
		if q := quorum(tc.known); p.writeAcks()+q <= tc.known {
			t.Errorf("%d known: a write set of %d misses a majority of %d", tc.known, p.writeAcks(), q)
		}
	}
}

// TestClaimDropsUnacknowledgedRecords: an owner stored a message locally,
// could not replicate it (no acknowledgement), and died; the device sent
// it again to the next owner. When the first node takes the grain back,
// the copy it pulls replaces what it held, so the message is stored once.
func TestClaimDropsUnacknowledgedRecords(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	for _, p := range f.nodes {
		p.cfg.Membership = knownMembers{f.addrs}
		knownMembers{f.addrs}.record(p)
	}
	r := f.ranked("d1")
	a, b, c := r[0], r[1], r[2]
	epoch, err := a.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	rec := func(ts time.Time) persistence.Op {
		return persistence.AppendTelemetry("d1", persistence.TelemetryRecord{TS: ts, Points: map[string]any{"t": 1.0}, MessageID: "m1"})
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.kill(b.self)
	f.kill(c.self)
	if err := a.Commit(ctx, "d1", epoch, []persistence.Op{rec(t0)}); err == nil {
		t.Fatal("a write that reached no replica was acknowledged")
	}
	// a dies; b and c come back and b takes the grain over.
	f.mu.Lock()
	f.dead[b.self], f.dead[c.self], f.dead[a.self] = false, false, true
	f.mu.Unlock()
	e2, err := b.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, "d1", e2, []persistence.Op{rec(t0.Add(time.Second))}); err != nil {
		t.Fatal(err)
	}
	// a is back and takes the grain again.
	f.mu.Lock()
	f.dead[a.self] = false
	f.mu.Unlock()
	if _, err := a.Claim(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	recs, err := f.dbs[a.self].QueryTelemetry(ctx, "d1", persistence.TelemetryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || !recs[0].TS.Equal(t0.Add(time.Second)) {
		t.Fatalf("after taking the grain back a holds %d records (%v); want only the acknowledged one", len(recs), recs)
	}
}
