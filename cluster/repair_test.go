package cluster

import (
	"context"
	"errors"
	"testing"

	"github.com/twinmesh/twinmesh/persistence"
)

// TestRepairAfterStaleRestarts is the regression test of the 30-minute
// Jepsen run's lost twins: members restarted one after another from old
// copies of their data folders, re-replication sent a grain's copy only
// from the first member in rank (which may be the stale one) and only to
// --replicas members, fewer than the writeAcks every claim majority is
// sure to meet; the next partition left a majority without the newest
// copy, and idle twins went back to their first version. After a repair
// pass, the newest copy must be on the first writeAcks members in rank
// again, whichever of them lost it, so that any majority still meets it
// after one more member loses its copy.
func TestRepairAfterStaleRestarts(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 5, 2)
	ids := []string{"g0", "g1", "g2", "g3", "g4", "g5", "g6", "g7", "g8", "g9"}
	want := map[string]persistence.GrainState{}
	for _, id := range ids {
		owner := f.ranked(id)[0]
		e, err := owner.Claim(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := owner.Commit(ctx, id, e, []persistence.Op{persistence.PutEntity(persistence.Entity{ID: id, Kind: "device"})}); err != nil {
			t.Fatal(err)
		}
		for v := 1; v <= 3; v++ {
			if err := owner.Commit(ctx, id, e, []persistence.Op{persistence.PutTwin(id, twinDoc(id, v))}); err != nil {
				t.Fatal(err)
			}
		}
		want[id] = state(t, owner, id)
	}
	acks := f.nodes[f.addrs[0]].writeAcks()
	if acks != 3 {
		t.Fatalf("writeAcks on 5 members = %d, the test wants 3", acks)
	}
	// Lose the copy of one of the first three in rank, a different rank
	// for each grain: the rank-first member itself for some.
	for i, id := range ids {
		stale := f.ranked(id)[i%acks]
		if err := stale.cfg.Store.Commit(ctx, persistence.ResetGrainData(id), persistence.EmptyCopyEpoch(id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range f.addrs {
		f.nodes[a].rereplicate(ctx)
	}
	for _, id := range ids {
		for rank, p := range f.ranked(id)[:acks] {
			got := state(t, p, id)
			if !got.Epoch.Holds(want[id].Epoch) || got.TwinVersion != 3 {
				t.Errorf("%s: member ranked %d holds %+v after the repair, want %+v", id, rank, got, want[id])
			}
		}
	}
	// A second member loses its copy: a claim by a majority that leaves
	// out the third holder still starts from version 3.
	for i, id := range ids {
		r := f.ranked(id)
		lost, keeper := r[(i+1)%acks], r[(i+2)%acks]
		if err := lost.cfg.Store.Commit(ctx, persistence.ResetGrainData(id), persistence.EmptyCopyEpoch(id)); err != nil {
			t.Fatal(err)
		}
		f.kill(keeper.self)
		var claimer *Placement
		for _, p := range r {
			if p != keeper && p != lost {
				claimer = p
				break
			}
		}
		f.dead[keeper.self] = false
		if _, err := claimer.Claim(ctx, id); err != nil {
			t.Fatal(err)
		}
		if got := state(t, claimer, id); got.TwinVersion != 3 {
			t.Errorf("%s: claim after a second loss starts from version %d, want 3", id, got.TwinVersion)
		}
	}
}

// TestRepairPlan: the source is the newest copy (this node on a tie), the
// targets the first writeAcks members in rank that are not down and hold
// less; members that did not answer are left for the next pass.
func TestRepairPlan(t *testing.T) {
	all := []string{"a", "b", "c", "d", "e"}
	id := "grain"
	ranked := Rank(id, all)
	old := persistence.GrainState{Epoch: persistence.Epoch{Fence: 5, Wrote: 5, Seq: 1}, HasTwin: true, TwinVersion: 1}
	cur := persistence.GrainState{Epoch: persistence.Epoch{Fence: 5, Wrote: 5, Seq: 3}, HasTwin: true, TwinVersion: 3}
	none := persistence.GrainState{}
	noDown := func(string) bool { return false }
	mk := func(m map[string]persistence.GrainState) map[string][]persistence.GrainState {
		out := map[string][]persistence.GrainState{}
		for a, s := range m {
			out[a] = []persistence.GrainState{s}
		}
		return out
	}
	self := ranked[0]
	tests := []struct {
		name    string
		states  map[string]persistence.GrainState
		down    func(string) bool
		wantSrc string
		wantTo  []string
	}{
		{"all hold it", map[string]persistence.GrainState{ranked[0]: cur, ranked[1]: cur, ranked[2]: cur}, noDown, self, nil},
		{"self stale", map[string]persistence.GrainState{ranked[0]: old, ranked[1]: cur, ranked[2]: cur, ranked[3]: none}, noDown, ranked[1], []string{ranked[0]}},
		{"two lost it", map[string]persistence.GrainState{ranked[0]: cur, ranked[1]: none, ranked[2]: old}, noDown, self, []string{ranked[1], ranked[2]}},
		{"down member skipped", map[string]persistence.GrainState{ranked[0]: cur, ranked[1]: cur, ranked[2]: cur, ranked[3]: none},
			func(a string) bool { return a == ranked[1] }, self, []string{ranked[3]}},
		{"silent member left alone", map[string]persistence.GrainState{ranked[0]: cur, ranked[2]: none}, noDown, self, []string{ranked[2]}},
		{"never written", map[string]persistence.GrainState{ranked[0]: none, ranked[1]: none, ranked[2]: none}, noDown, self, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, to := repairPlan(id, 0, mk(tt.states), all, self, 3, tt.down)
			if src != tt.wantSrc || len(to) != len(tt.wantTo) {
				t.Fatalf("plan = %s → %v, want %s → %v", src, to, tt.wantSrc, tt.wantTo)
			}
			for i := range to {
				if to[i] != tt.wantTo[i] {
					t.Fatalf("plan = %s → %v, want %s → %v", src, to, tt.wantSrc, tt.wantTo)
				}
			}
		})
	}
}

// TestRepairReachesMembersFencedByAFailedClaim is the regression test of
// the twins the second 30-minute Jepsen run forked (seed 907312974): on the
// minority side of a partition, a claim that failed for want of a majority
// still raised the fence of the members it reached above the epoch of the
// newest copy (written by the majority side's owner). Repair sent that copy
// fenced by its holder's epoch, so those members refused it every time, the
// copy lived on fewer and fewer members as others were restarted from old
// data, and was lost; an unacknowledged write of the minority side took its
// version. Now a repair copy is fenced by the target's fence when that is
// higher, and the target takes it.
func TestRepairReachesMembersFencedByAFailedClaim(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 5, 2)
	id := "jt1-3"
	r := f.ranked(id)
	owner := r[0]
	e, err := owner.Claim(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Commit(ctx, id, e, []persistence.Op{persistence.PutEntity(persistence.Entity{ID: id, Kind: "device"}),
		persistence.PutTwin(id, twinDoc(id, 404))}); err != nil {
		t.Fatal(err)
	}
	want := state(t, owner, id)
	// Two members accepted a claim that failed, newer than the owner's
	// epoch, and lost their copies (restarted from old data).
	failed := e + 1000
	for _, p := range r[1:3] {
		if err := p.cfg.Store.Commit(ctx, persistence.ClaimEpoch(id, failed), persistence.ResetGrainData(id), persistence.EmptyCopyEpoch(id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range f.addrs {
		f.nodes[a].rereplicate(ctx)
	}
	for rank, p := range r[1:3] {
		got := state(t, p, id)
		if !got.Epoch.Holds(want.Epoch) || got.TwinVersion != 404 {
			t.Errorf("member ranked %d (fence %d) holds %+v after the repair, want %+v", rank+1, failed, got, want)
		}
		if got.Epoch.Fence != failed {
			t.Errorf("member ranked %d: fence %d after the repair, want it unchanged (%d)", rank+1, got.Epoch.Fence, failed)
		}
	}
}

// TestClaimSpreadsWhatItServes is the regression test of the other forks of
// that run: a claim took a copy holding a write that was never
// acknowledged (its owner stored it, then lost its replicas), could not
// bring the replicas up to date, and the activation served that write to
// readers anyway; a later claim by a majority without the copy gave its
// version to another write. A claim now fails unless writeAcks members hold
// the copy it took.
func TestClaimSpreadsWhatItServes(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 5, 2)
	id := "jt16-3"
	r := f.ranked(id)
	a := r[0]
	e, err := a.Claim(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx, id, e, []persistence.Op{persistence.PutTwin(id, twinDoc(id, 24))}); err != nil {
		t.Fatal(err)
	}
	// Version 25 reaches only a's file: every other member is away.
	for _, p := range r[1:] {
		f.kill(p.self)
	}
	if err := a.Commit(ctx, id, e, []persistence.Op{persistence.PutTwin(id, twinDoc(id, 25))}); err == nil {
		t.Fatal("a write without replicas was acknowledged")
	}
	for _, p := range r[1:] {
		f.dead[p.self] = false
	}
	// Two members are away, and c answers the claim but not the copy: only
	// a and b would hold version 25.
	b, c := r[1], r[2]
	f.kill(r[3].self)
	f.kill(r[4].self)
	f.drops = map[string]string{c.self: opApply}
	_, err = b.Claim(ctx, id)
	if !errors.Is(err, ErrUnderReplicated) {
		t.Fatalf("claim whose copy only 2 of 5 members hold: %v, want ErrUnderReplicated (version 25 on %d members)", err, copiesOf(f, id, 25))
	}
	// With c reachable for copies, the claim spreads version 25 to it.
	f2 := newFakeNet(t, 5, 2)
	r2 := f2.ranked(id)
	a2 := r2[0]
	e2, _ := a2.Claim(ctx, id)
	_ = a2.Commit(ctx, id, e2, []persistence.Op{persistence.PutTwin(id, twinDoc(id, 24))})
	for _, p := range r2[1:] {
		f2.kill(p.self)
	}
	_ = a2.Commit(ctx, id, e2, []persistence.Op{persistence.PutTwin(id, twinDoc(id, 25))})
	for _, p := range r2[1:3] {
		f2.dead[p.self] = false
	}
	if _, err := r2[1].Claim(ctx, id); err != nil {
		t.Fatalf("claim with three members reachable: %v", err)
	}
	if n := copiesOf(f2, id, 25); n < 3 {
		t.Fatalf("version 25 on %d members after the claim, want 3", n)
	}
}

func copiesOf(f *fakeNet, id string, version int64) int {
	n := 0
	for _, db := range f.dbs {
		if st, err := db.GrainState(id); err == nil && st.TwinVersion == version {
			n++
		}
	}
	return n
}
