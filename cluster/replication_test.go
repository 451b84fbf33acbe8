package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/persistence"
)

// fakeNet connects Placements in one process: a request to a member is
// handled by that member's Placement on its own bbolt file, exactly as the
// node actor would; a member marked dead does not answer (like a crashed
// process whose requests time out).
type fakeNet struct {
	mu    sync.Mutex
	nodes map[string]*Placement
	dbs   map[string]*persistence.DB
	dead  map[string]bool
	addrs []string
	// drops makes a member time out on one operation (addr → op).
	drops map[string]string
	// hangs makes a member never answer one operation (addr → op): the
	// request waits its whole timeout, like a reply lost on the way.
	hangs map[string]string
}

func newFakeNet(t *testing.T, n, replicas int) *fakeNet {
	t.Helper()
	f := &fakeNet{nodes: map[string]*Placement{}, dbs: map[string]*persistence.DB{}, dead: map[string]bool{}}
	var members []*pcluster.Member
	for i := 0; i < n; i++ {
		members = append(members, &pcluster.Member{Id: fmt.Sprintf("id-%d", i), Host: "10.0.0.1", Port: int32(4001 + i)})
	}
	for _, m := range members {
		addr := m.Address()
		f.addrs = append(f.addrs, addr)
		db, err := persistence.Open(filepath.Join(t.TempDir(), "node.db"), &persistence.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		p, err := NewPlacement(PlacementConfig{Store: db, Replicas: replicas, PeerTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		p.self = addr
		ms := append([]*pcluster.Member(nil), members...)
		p.members.Store(&ms)
		p.markSynced()
		p.send = f.sender()
		f.nodes[addr], f.dbs[addr] = p, db
	}
	return f
}

func (f *fakeNet) sender() func(string, *actorspb.MemberRequest, time.Duration) (any, error) {
	return func(addr string, req *actorspb.MemberRequest, timeout time.Duration) (any, error) {
		f.mu.Lock()
		dead, target := f.dead[addr], f.nodes[addr]
		dropped := f.drops[addr] == req.Op
		hung := f.hangs[addr] == req.Op
		f.mu.Unlock()
		if hung {
			time.Sleep(timeout)
			return nil, errors.New("future: timeout")
		}
		if dead || target == nil || dropped {
			time.Sleep(min(timeout, 50*time.Millisecond))
			return nil, errors.New("future: timeout")
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return target.handle(ctx, req), nil
	}
}

func (f *fakeNet) kill(addr string) {
	f.mu.Lock()
	f.dead[addr] = true
	f.mu.Unlock()
}

// forget removes a dead member from every survivor's member list, as the
// topology does once memberlist declares it dead.
func (f *fakeNet) forget(addr string) {
	for a, p := range f.nodes {
		if a == addr {
			continue
		}
		var ms []*pcluster.Member
		for _, m := range *p.members.Load() {
			if m.Address() != addr {
				ms = append(ms, m)
			}
		}
		p.members.Store(&ms)
	}
}

// ranked returns the members in identity's rendezvous order.
func (f *fakeNet) ranked(identity string) []*Placement {
	var out []*Placement
	for _, a := range Rank(identity, f.addrs) {
		out = append(out, f.nodes[a])
	}
	return out
}

func twinDoc(id string, version int) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"kind":"device","version":%d}`, id, version))
}

func state(t *testing.T, p *Placement, id string) persistence.GrainState {
	t.Helper()
	st, err := p.cfg.Store.GrainState(id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCommitReachesReplicasAndCatalogEveryMember(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	r := f.ranked("d1")
	owner, replica, other := r[0], r[1], r[2]
	epoch, err := owner.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	ops := []persistence.Op{
		persistence.PutEntity(persistence.Entity{ID: "d1", Kind: "device"}),
		persistence.PutTwin("d1", twinDoc("d1", 1)),
		persistence.AppendTelemetry("d1", persistence.TelemetryRecord{TS: time.Unix(100, 0), Points: map[string]any{"t": 1.0}}),
	}
	if err := owner.Commit(ctx, "d1", epoch, ops); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name            string
		p               *Placement
		twin, telemetry bool
	}{{"owner", owner, true, true}, {"replica", replica, true, true}, {"third member", other, false, false}} {
		st := state(t, tc.p, "d1")
		if st.HasTwin != tc.twin || (st.Telemetry == 1) != tc.telemetry {
			t.Errorf("%s holds twin=%v telemetry=%d, want twin=%v telemetry=%v", tc.name, st.HasTwin, st.Telemetry, tc.twin, tc.telemetry)
		}
		if _, err := tc.p.cfg.Store.(*persistence.DB).GetEntity("d1"); err != nil {
			t.Errorf("%s lacks the catalog entity: %v", tc.name, err)
		}
	}
	if st := state(t, replica, "d1"); st.Epoch.Wrote != epoch {
		t.Errorf("replica recorded writer epoch %d, want %d", st.Epoch.Wrote, epoch)
	}
}

func TestCommitReplacesADeadReplica(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	r := f.ranked("d1")
	owner, replica, next := r[0], r[1], r[2]
	epoch, _ := owner.Claim(ctx, "d1")
	f.kill(replica.self)
	if err := owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 1))}); err != nil {
		t.Fatalf("commit with one replica dead: %v", err)
	}
	if !state(t, next, "d1").HasTwin {
		t.Error("the next member in rendezvous order did not take the dead replica's copy")
	}
	if !owner.isDown(replica.self) {
		t.Error("the dead replica is not marked down")
	}
	select {
	case <-owner.Unreachable(replica.self):
	default:
		t.Error("Unreachable of a member marked down is not closed")
	}
	// The owner now routes the dead member's grains to the next member.
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		if got := owner.ownerOf(id, ""); got == replica.self {
			t.Errorf("ownerOf(%s) is the member marked down", id)
		}
	}
}

func TestCommitUnderReplicated(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 2, 2)
	r := f.ranked("d1")
	owner, replica := r[0], r[1]
	epoch, _ := owner.Claim(ctx, "d1")
	f.kill(replica.self)
	err := owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 1))})
	if !errors.Is(err, ErrUnderReplicated) {
		t.Fatalf("commit with the only replica dead: %v, want ErrUnderReplicated", err)
	}
	// Once the dead member leaves the topology the cap is one copy.
	f.forget(replica.self)
	if err := owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 2))}); err != nil {
		t.Fatalf("commit alone: %v", err)
	}
}

func TestStaleActivationIsFenced(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	r := f.ranked("d1")
	old, newer := r[0], r[1]
	e1, err := old.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Commit(ctx, "d1", e1, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 1))}); err != nil {
		t.Fatal(err)
	}
	// Another member activates the grain (its view of the membership
	// differs): its claim fences the first activation everywhere.
	e2, err := newer.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if e2 <= e1 {
		t.Fatalf("second epoch %d not above first %d", e2, e1)
	}
	err = old.Commit(ctx, "d1", e1, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 2))})
	if !errors.Is(err, persistence.ErrFenced) || !errors.Is(err, ErrFenced) {
		t.Fatalf("stale write: %v, want ErrFenced", err)
	}
	for _, p := range f.nodes {
		if st := state(t, p, "d1"); st.TwinVersion > 1 {
			t.Errorf("member %s holds the refused write (version %d)", p.self, st.TwinVersion)
		}
	}
	if err := newer.Commit(ctx, "d1", e2, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 2))}); err != nil {
		t.Fatalf("write of the newer activation: %v", err)
	}
	// A claim that meets a higher fence retries above it.
	newer.lastEpoch.Store(0)
	old.lastEpoch.Store(0)
	e3, err := old.Claim(ctx, "d1")
	if err != nil || e3 <= e2 {
		t.Fatalf("re-claim: epoch %d (err %v), want above %d", e3, err, e2)
	}
}

func TestClaimCopiesTheNewestStateAndFillsReplicas(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	r := f.ranked("d1")
	owner, replica, third := r[0], r[1], r[2]
	epoch, _ := owner.Claim(ctx, "d1")
	for v := 1; v <= 3; v++ {
		ops := []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", v)),
			persistence.AppendTelemetry("d1", persistence.TelemetryRecord{TS: time.Unix(int64(100+v), 0), Points: map[string]any{"v": float64(v)}})}
		if err := owner.Commit(ctx, "d1", epoch, ops); err != nil {
			t.Fatal(err)
		}
	}
	// The owner crashes and leaves the topology; the grain activates on the
	// replica, which holds everything, and the third member becomes its
	// replica and gets a full copy.
	f.kill(owner.self)
	f.forget(owner.self)
	if _, err := replica.Claim(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	want := state(t, replica, "d1")
	if want.TwinVersion != 3 || want.Telemetry != 3 {
		t.Fatalf("new owner holds %+v", want)
	}
	got := state(t, third, "d1")
	if !sameState(got, want) {
		t.Errorf("new replica after the claim: %+v, want %+v", got, want)
	}

	// Now the third member activates it while holding the copy, and the
	// former replica is the one that lags: a claim pulls the newest copy.
	f2 := newFakeNet(t, 3, 2)
	r2 := f2.ranked("d2")
	a := r2[0]
	e, _ := a.Claim(ctx, "d2")
	if err := a.Commit(ctx, "d2", e, []persistence.Op{persistence.PutTwin("d2", twinDoc("d2", 7))}); err != nil {
		t.Fatal(err)
	}
	c := r2[2]
	if state(t, c, "d2").HasTwin {
		t.Fatal("the third member should not hold d2 yet")
	}
	if _, err := c.Claim(ctx, "d2"); err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "d2"); st.TwinVersion != 7 {
		t.Errorf("claim on a member without the grain copied version %d, want 7", st.TwinVersion)
	}
}

func TestRereplicateRestoresCopies(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	ids := []string{"g1", "g2", "g3", "g4", "g5", "g6", "g7", "g8", "g9"}
	for _, id := range ids {
		owner := f.ranked(id)[0]
		e, _ := owner.Claim(ctx, id)
		ops := []persistence.Op{persistence.PutEntity(persistence.Entity{ID: id, Kind: "device"}), persistence.PutTwin(id, twinDoc(id, 1))}
		if err := owner.Commit(ctx, id, e, ops); err != nil {
			t.Fatal(err)
		}
	}
	victim := f.addrs[0]
	f.kill(victim)
	f.forget(victim)
	for a, p := range f.nodes {
		if a != victim {
			p.rereplicate(ctx)
		}
	}
	for _, id := range ids {
		copies := 0
		for a, p := range f.nodes {
			if a != victim && state(t, p, id).HasTwin {
				copies++
			}
		}
		if copies != 2 {
			t.Errorf("%s has %d copies on the survivors after re-replication, want 2", id, copies)
		}
	}
}

func TestCommitCatalogReachesEveryMember(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	p := f.nodes[f.addrs[1]]
	idn := persistence.Identity{DeviceID: "d9", PrimaryKey: "k1", SecondaryKey: "k2", Status: "enabled"}
	if err := p.CommitCatalog(ctx, []persistence.Op{persistence.PutIdentity(idn)}); err != nil {
		t.Fatal(err)
	}
	for a, db := range f.dbs {
		if _, err := db.GetIdentity("d9"); err != nil {
			t.Errorf("member %s lacks the identity: %v", a, err)
		}
	}
}

func TestOnlyContrib(t *testing.T) {
	tests := []struct {
		name string
		ops  []persistence.WireOp
		want bool
	}{
		{"contributions", []persistence.WireOp{{T: "doc.put", B: "contrib", K: "r/c/d"}}, true},
		{"an entity among them", []persistence.WireOp{{T: "doc.put", B: "contrib", K: "r/c/d"}, {T: "entity.put", K: "d"}}, false},
		{"alerts", []persistence.WireOp{{T: "doc.put", B: "alerts", K: "x"}}, false},
	}
	for _, tt := range tests {
		if got := onlyContrib(tt.ops); got != tt.want {
			t.Errorf("%s: onlyContrib = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzServe: whatever another member sends (any operation, any body), the
// node answers with a result or an error and never panics, and a store it
// writes to stays usable.
func FuzzServe(f *testing.F) {
	for _, seed := range []struct{ op, body string }{
		{opApply, `{"id":"d1","epoch":5,"ops":[{"t":"twin.put","k":"d1","v":"eyJ2ZXJzaW9uIjoxfQ=="}]}`},
		{opApply, `{"ops":[{"t":"entity.put","k":"e1","v":"eyJpZCI6ImUxIiwia2luZCI6InJvb20ifQ=="}]}`},
		{opClaim, `{"id":"d1","epoch":7}`},
		{opClaim, `{"id":"","epoch":0}`},
		{opSnapshot, `{"id":"d1","after":0,"limit":10}`},
		{opCatalog, `{"cursor":"x"}`},
		{opStates, `{"ids":["d1","d2"]}`},
		{opRepair, `{"id":"d1","to":["10.0.0.9:1"]}`},
		{opInvoke, `{"device":"d1","method":"m","timeoutMs":1}`},
		{opStats, `{}`},
		{opQuery, `{"name":"echo","body":{"a":1}}`},
		{opQuery, `{"name":"unknown"}`},
		{"nope", `[]`},
		{opApply, `{"ops":[{"t":"telemetry","k":"d1","v":"bnVsbA=="}]}`},
	} {
		f.Add(seed.op, []byte(seed.body))
	}
	db, err := persistence.Open(filepath.Join(f.TempDir(), "fuzz.db"), &persistence.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	p, err := NewPlacement(PlacementConfig{Store: db})
	if err != nil {
		f.Fatal(err)
	}
	p.HandleQuery("echo", func(_ context.Context, b json.RawMessage) (json.RawMessage, error) { return b, nil })
	f.Fuzz(func(t *testing.T, op string, body []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		res := p.handle(ctx, &actorspb.MemberRequest{Op: op, Body: body})
		if res == nil || (res.Status >= 400 && res.Message == "") {
			t.Fatalf("op %q: answer %+v", op, res)
		}
		if _, err := db.GrainState("d1"); err != nil {
			t.Fatalf("store unusable after op %q: %v", op, err)
		}
	})
}

// A node that was down when an entity and a rule were deleted removes them
// (and the device's identity) when it copies the catalog back; what was
// created meanwhile, on either side, survives and reaches both.
func TestCatalogCopyCatchesUpWithDeletions(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 2, 2)
	away, src := f.nodes[f.addrs[0]], f.nodes[f.addrs[1]]
	old := time.Now().Add(-time.Hour)
	catalog := []persistence.Op{
		persistence.PutEntity(persistence.Entity{ID: "gone", Kind: "device", CreatedAt: old, UpdatedAt: old}),
		persistence.PutIdentity(persistence.Identity{DeviceID: "gone", PrimaryKey: "k", SecondaryKey: "k2", Status: "enabled"}),
		persistence.PutEntity(persistence.Entity{ID: "kept", Kind: "device", CreatedAt: old, UpdatedAt: old}),
		persistence.PutDoc(persistence.BucketRules, "old-rule", []byte(`{"id":"old-rule"}`)),
		persistence.PutDoc(persistence.BucketRules, "rule", []byte(`{"id":"rule"}`)),
	}
	if err := src.CommitCatalog(ctx, catalog); err != nil {
		t.Fatal(err)
	}
	f.kill(away.self)
	tomb := func(key string) persistence.Op {
		return persistence.PutDoc(persistence.BucketTombstones, key, []byte(fmt.Sprintf(`{"at":%q}`, time.Now().UTC().Format(time.RFC3339Nano))))
	}
	if err := src.cfg.Store.Commit(ctx, persistence.DeleteEntity("gone"), tomb("entity/gone"),
		persistence.DeleteDoc(persistence.BucketRules, "old-rule"), tomb("rules/old-rule"),
		persistence.PutEntity(persistence.Entity{ID: "new-there", Kind: "device", CreatedAt: time.Now(), UpdatedAt: time.Now()})); err != nil {
		t.Fatal(err)
	}
	// Written on the away node alone (say it was the first one back).
	if err := away.cfg.Store.Commit(ctx, persistence.PutEntity(persistence.Entity{ID: "new-here", Kind: "device",
		CreatedAt: time.Now(), UpdatedAt: time.Now()})); err != nil {
		t.Fatal(err)
	}
	// Disabled while the node was away: its stale "enabled" copy must not
	// come back.
	if err := src.cfg.Store.Commit(ctx, persistence.PutIdentity(persistence.Identity{DeviceID: "kept", PrimaryKey: "k", SecondaryKey: "k2", Status: "disabled"})); err != nil {
		t.Fatal(err)
	}
	if err := away.cfg.Store.Commit(ctx, persistence.PutIdentity(persistence.Identity{DeviceID: "kept", PrimaryKey: "k", SecondaryKey: "k2", Status: "enabled"})); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.dead[away.self] = false
	f.mu.Unlock()
	if _, err := away.pullCatalogFrom(ctx, src.self); err != nil {
		t.Fatal(err)
	}
	for _, db := range []*persistence.DB{f.dbs[away.self], f.dbs[src.self]} {
		if _, err := db.GetEntity("gone"); !errors.Is(err, persistence.ErrNotFound) {
			t.Errorf("entity deleted while the node was away: %v, want not found", err)
		}
		if _, err := db.GetIdentity("gone"); !errors.Is(err, persistence.ErrNotFound) {
			t.Errorf("identity of the deleted device: %v, want not found (it could still connect)", err)
		}
		for _, id := range []string{"kept", "new-there", "new-here"} {
			if _, err := db.GetEntity(id); err != nil {
				t.Errorf("entity %s: %v", id, err)
			}
		}
		if _, err := db.GetDoc(persistence.BucketRules, "old-rule"); !errors.Is(err, persistence.ErrNotFound) {
			t.Errorf("rule deleted while the node was away: %v, want not found (it would still apply here)", err)
		}
		if _, err := db.GetDoc(persistence.BucketRules, "rule"); err != nil {
			t.Errorf("rule: %v", err)
		}
		if idn, err := db.GetIdentity("kept"); err != nil || idn.Status != "disabled" {
			t.Errorf("identity disabled while the node was away: %+v, %v", idn, err)
		}
	}

	// An entity re-created while a node that had seen its deletion was
	// away comes back on that node too: its tombstone is stale.
	if err := away.cfg.Store.Commit(ctx, tomb("entity/kept"), persistence.DeleteEntity("kept")); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := src.cfg.Store.Commit(ctx, persistence.PutEntity(persistence.Entity{ID: "kept", Kind: "device", CreatedAt: later, UpdatedAt: later})); err != nil {
		t.Fatal(err)
	}
	if _, err := away.pullCatalogFrom(ctx, src.self); err != nil {
		t.Fatal(err)
	}
	if _, err := f.dbs[away.self].GetEntity("kept"); err != nil {
		t.Errorf("entity created again after its deletion: %v", err)
	}
	if _, err := f.dbs[away.self].GetDoc(persistence.BucketTombstones, "entity/kept"); !errors.Is(err, persistence.ErrNotFound) {
		t.Errorf("stale tombstone kept: %v", err)
	}
}

// TestCatalogCopyPassesOverAMemberThatNeverAnswers: a node restarted on old
// data (the 30-minute Jepsen run, seed 578929958) asked the first member
// for the catalog; the answer was lost (the member's connection to the
// node's previous incarnation was closing) and the node waited for the
// copy's whole two-minute deadline, not ready, until it was killed. A page
// now has its own deadline and the next member is asked.
func TestCatalogCopyPassesOverAMemberThatNeverAnswers(t *testing.T) {
	defer func(d time.Duration) { catalogPageTimeout = d }(catalogPageTimeout)
	catalogPageTimeout = 300 * time.Millisecond
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	joiner := f.nodes[f.addrs[0]]
	var others []string
	for _, a := range joiner.memberAddrs() {
		if a != joiner.self {
			others = append(others, a)
		}
	}
	if err := f.dbs[others[1]].Commit(ctx,
		persistence.PutEntity(persistence.Entity{ID: "b1", Kind: "building", CreatedAt: time.Now(), UpdatedAt: time.Now()})); err != nil {
		t.Fatal(err)
	}
	joiner.synced = make(chan struct{})
	joiner.syncOnce = sync.Once{}
	f.hangs = map[string]string{others[0]: opCatalog}
	start := time.Now()
	joiner.pullCatalog()
	if !joiner.isSynced() {
		t.Fatalf("catalog not copied after %v although %s answers", time.Since(start), others[1])
	}
	if took := time.Since(start); took > 5*catalogPageTimeout {
		t.Fatalf("catalog copy took %v with a page deadline of %v", took, catalogPageTimeout)
	}
	if _, err := f.dbs[joiner.self].GetEntity("b1"); err != nil {
		t.Fatalf("catalog copied without the member's entity: %v", err)
	}
}
