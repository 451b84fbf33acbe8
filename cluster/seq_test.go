package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// st is a compact GrainState with an epoch record for the tables below.
func st(fence, wrote, seq uint64, version int64) persistence.GrainState {
	return persistence.GrainState{Epoch: persistence.Epoch{Fence: fence, Wrote: wrote, Seq: seq}, HasTwin: true, TwinVersion: version}
}

// TestBetterStateSeq: within an epoch the copy that holds more of its
// writes wins, though the twin versions tie (live state such as telemetry
// and connections no longer moves the version).
func TestBetterStateSeq(t *testing.T) {
	tests := []struct {
		name string
		a, b persistence.GrainState
		want bool
	}{
		{"higher seq, equal versions", st(5, 5, 3, 7), st(5, 5, 2, 7), true},
		{"lower seq, equal versions", st(5, 5, 2, 7), st(5, 5, 3, 7), false},
		{"seq before the twin version", st(5, 5, 3, 7), st(5, 5, 2, 8), true},
		{"seq before telemetry", st(5, 5, 3, 7), func() persistence.GrainState {
			s := st(5, 5, 2, 7)
			s.NewestTelemetry, s.Telemetry = 9, 4
			return s
		}(), true},
		{"the newer epoch before seq", st(6, 6, 1, 7), st(6, 5, 9, 7), true},
		{"an older epoch loses whatever its seq", st(6, 5, 9, 7), st(6, 6, 1, 7), false},
		{"the fence does not count", st(9, 5, 2, 7), st(5, 5, 3, 7), false},
		{"an older member's state (no seq) loses in the same epoch", st(5, 5, 0, 7), st(5, 5, 1, 7), false},
		{"equal seq: the version decides", st(5, 5, 2, 8), st(5, 5, 2, 7), true},
		{"equal is not better", st(5, 5, 2, 7), st(5, 5, 2, 7), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := better(tt.a, tt.b); got != tt.want {
				t.Errorf("better = %v, want %v", got, tt.want)
			}
			if tt.want && better(tt.b, tt.a) {
				t.Error("better both ways")
			}
		})
	}
}

// TestSameStateSeq: copies with the same summary but different writes
// (Wrote or Seq) are not in sync; the fence, which is per node, does not
// matter.
func TestSameStateSeq(t *testing.T) {
	tests := []struct {
		name string
		a, b persistence.GrainState
		want bool
	}{
		{"same", st(5, 5, 3, 7), st(5, 5, 3, 7), true},
		{"different fences", st(9, 5, 3, 7), st(5, 5, 3, 7), true},
		{"different seq, equal versions", st(5, 5, 3, 7), st(5, 5, 2, 7), false},
		{"different wrote, same seq", st(6, 6, 3, 7), st(6, 5, 3, 7), false},
		{"different versions", st(5, 5, 3, 8), st(5, 5, 3, 7), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, back := sameState(tt.a, tt.b), sameState(tt.b, tt.a); got != tt.want || back != tt.want {
				t.Errorf("sameState = %v, %v; want %v", got, back, tt.want)
			}
		})
	}
}

// TestClaimOrdersCopiesBySeq: a replica that missed a write that left the
// twin's version alone (the device connected) neither wins the next claim
// nor is taken to be in sync.
func TestClaimOrdersCopiesBySeq(t *testing.T) {
	doc := func(connected bool) []byte {
		if connected {
			return []byte(`{"id":"d1","kind":"device","version":1,"connected":true}`)
		}
		return []byte(`{"id":"d1","kind":"device","version":1,"connected":false}`)
	}
	for _, claimer := range []string{"the replica that missed the write", "the replica that has it"} {
		t.Run(claimer, func(t *testing.T) {
			ctx := context.Background()
			f := newFakeNet(t, 4, 3)
			r := f.ranked("d1")
			owner, full, missed := r[0], r[1], r[2]
			epoch, err := owner.Claim(ctx, "d1")
			if err != nil {
				t.Fatal(err)
			}
			if err := owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", doc(false))}); err != nil {
				t.Fatal(err)
			}
			f.kill(missed.self)
			if err := owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", doc(true))}); err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			f.dead[missed.self] = false
			f.mu.Unlock()
			sf, sm := state(t, full, "d1"), state(t, missed, "d1")
			if sf.TwinVersion != sm.TwinVersion || sf.Epoch.Wrote != sm.Epoch.Wrote || sf.Epoch.Seq != sm.Epoch.Seq+1 {
				t.Fatalf("setup: full replica %+v, the one that missed a write %+v", sf, sm)
			}
			// The owner crashes.
			f.kill(owner.self)
			f.forget(owner.self)
			p := missed
			if claimer == "the replica that has it" {
				p = full
			}
			next, err := p.Claim(ctx, "d1")
			if err != nil {
				t.Fatal(err)
			}
			var want persistence.GrainState
			for _, q := range []*Placement{full, missed, r[3]} {
				twin, err := q.cfg.Store.(*persistence.DB).GetTwin("d1")
				if err != nil || string(twin) != string(doc(true)) {
					t.Errorf("%s holds %s, %v after the claim; want the connected twin", q.self, twin, err)
				}
				s := state(t, q, "d1")
				if q == full {
					want = s
				} else if !sameState(s, want) {
					t.Errorf("%s: %+v, want the same copy as %+v", q.self, s.Epoch, want.Epoch)
				}
			}
			// The new owner's first write: every copy counts it alike.
			if err := p.Commit(ctx, "d1", next, []persistence.Op{persistence.PutTwin("d1", doc(false))}); err != nil {
				t.Fatal(err)
			}
			for _, q := range []*Placement{full, missed, r[3]} {
				if e := state(t, q, "d1").Epoch; e.Wrote != next || e.Seq != 1 {
					t.Errorf("%s after the first write of epoch %d: %+v", q.self, next, e)
				}
			}
		})
	}
}

// TestFallbackReplicaKeepsEveryWrite is the regression test of the loss the
// Jepsen harness found (seed 232146396): acknowledged telemetry went
// missing after the owner crashed because a replica skipped while it did
// not answer, then used again, counted more writes (Seq) than the member
// that took its place — and a claim copied it, although it lacked the
// newest writes. Now a write is applied only on the copy it was made on
// (persistence.ApplyEpoch): a replica that missed writes refuses the next
// one and gets the owner's whole copy, so the copy with the highest Seq
// holds every write.
func TestFallbackReplicaKeepsEveryWrite(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	r := f.ranked("d1")
	owner, rep, next := r[0], r[1], r[2]
	epoch, err := owner.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1_800_000_000, 0)
	write := func(i int) {
		t.Helper()
		rec := persistence.TelemetryRecord{TS: base.Add(time.Duration(i) * time.Second), MessageID: fmt.Sprintf("m%d", i),
			Points: map[string]any{"t": float64(i)}}
		if err := owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.AppendTelemetry("d1", rec)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	revive := func(p *Placement) {
		f.mu.Lock()
		f.dead[p.self] = false
		f.mu.Unlock()
		owner.down.Delete(p.self)
	}
	write(1) // owner + rep
	f.kill(rep.self)
	write(2) // owner + next, in rep's place
	write(3)
	revive(rep)
	write(4) // owner + rep, which missed 2 and 3: it gets the whole copy
	write(5)
	if got := state(t, rep, "d1"); got.Telemetry != 5 || got.Epoch.Seq != 5 {
		t.Fatalf("replica back after missing writes: %+v, want all 5 records at seq 5", got)
	}
	if got := state(t, next, "d1"); got.Telemetry != 3 || got.Epoch.Seq != 3 {
		t.Fatalf("member that stood in: %+v, want the first 3 records at seq 3", got)
	}
	// The owner crashes; the member that stood in claims the grain.
	f.kill(owner.self)
	f.forget(owner.self)
	if _, err := next.Claim(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Placement{rep, next} {
		if got := state(t, p, "d1"); got.Telemetry != 5 {
			t.Errorf("%s holds %d records after the claim, want 5", p.self, got.Telemetry)
		}
	}
}

// TestApplyEpoch is the replica's rule for a shipped write, case by case.
func TestApplyEpoch(t *testing.T) {
	const e1, e2 = 10, 20
	tests := []struct {
		name  string
		epoch uint64 // the writer's
		cur   persistence.Epoch
		prev  persistence.Epoch
		seq   uint64
		want  error
	}{
		{"next write", e1, persistence.Epoch{Fence: e1, Wrote: e1, Seq: 4}, persistence.Epoch{Wrote: e1, Seq: 4}, 5, nil},
		{"first write of an epoch on the claim's copy", e2, persistence.Epoch{Fence: e2, Wrote: e1, Seq: 4}, persistence.Epoch{Wrote: e1, Seq: 4}, 1, nil},
		{"missed a write", e1, persistence.Epoch{Fence: e1, Wrote: e1, Seq: 3}, persistence.Epoch{Wrote: e1, Seq: 4}, 5, persistence.ErrGap},
		{"not brought up to date by the claim", e2, persistence.Epoch{Fence: e2, Wrote: e1, Seq: 2}, persistence.Epoch{Wrote: e1, Seq: 4}, 1, persistence.ErrGap},
		{"empty copy", e1, persistence.Epoch{Fence: e1}, persistence.Epoch{Wrote: e1, Seq: 1}, 2, persistence.ErrGap},
		{"already held", e1, persistence.Epoch{Fence: e1, Wrote: e1, Seq: 6}, persistence.Epoch{Wrote: e1, Seq: 4}, 5, persistence.ErrApplied},
		{"stale owner", e1, persistence.Epoch{Fence: e2, Wrote: e2, Seq: 1}, persistence.Epoch{Wrote: e1, Seq: 4}, 5, persistence.ErrFenced},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := persistence.Open(filepath.Join(t.TempDir(), "n.db"), &persistence.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			// Reach cur: a copy claimed at cur, then the fence raised.
			ops := []persistence.Op{persistence.FenceEpoch("d1", max(tt.cur.Wrote, 1))}
			if tt.cur.Wrote > 0 {
				ops = append(ops, persistence.CopiedEpoch("d1", tt.cur))
			}
			if err := db.Commit(ctx, ops...); err != nil {
				t.Fatal(err)
			}
			if tt.cur.Fence > tt.cur.Wrote {
				if err := db.Commit(ctx, persistence.ClaimEpoch("d1", tt.cur.Fence)); err != nil {
					t.Fatal(err)
				}
			}
			if got, _ := db.GetEpoch("d1"); got != tt.cur {
				t.Fatalf("setup: %+v, want %+v", got, tt.cur)
			}
			err = db.Commit(ctx, persistence.ApplyEpoch("d1", tt.epoch, tt.prev, tt.seq),
				persistence.PutTwin("d1", twinDoc("d1", 1)))
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("apply: %v, want %v", err, tt.want)
			}
			has, _ := db.GetTwin("d1")
			if (tt.want == nil) != (has != nil) {
				t.Errorf("twin written: %v, want %v", has != nil, tt.want == nil)
			}
		})
	}
}

// TestCopyNeverReplacesNewerData: a member that re-replicates the copy it
// holds (it ranks first for the grain in its own view) may meet the owner,
// or a replica, that wrote since it looked; the copy must not replace the
// newer data (it would leave a copy that claims writes it no longer holds).
func TestCopyNeverReplacesNewerData(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	r := f.ranked("d1")
	owner, rep := r[0], r[1]
	epoch, err := owner.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1_800_000_000, 0)
	for i := 1; i <= 3; i++ {
		rec := persistence.TelemetryRecord{TS: base.Add(time.Duration(i) * time.Second), Points: map[string]any{"t": float64(i)}}
		if err := owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.AppendTelemetry("d1", rec)}); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			f.kill(rep.self) // rep keeps the copy of write 2
		}
	}
	f.mu.Lock()
	f.dead[rep.self] = false
	f.mu.Unlock()
	before := state(t, owner, "d1")
	if err := rep.push(ctx, owner.self, "d1", epoch); err != nil {
		t.Fatalf("push of an older copy: %v", err)
	}
	if got := state(t, owner, "d1"); got.Telemetry != before.Telemetry || got.Epoch != before.Epoch {
		t.Errorf("owner after an older copy was pushed to it: %+v, want %+v", got, before)
	}
}

// TestReplicaFenceAfterLocalCommit: a write this node committed but a
// replica refused (a newer owner claimed the grain there) has an unknown
// outcome — a later claim may adopt this node's copy — so Commit reports it
// as unavailable as well as fenced, and callers do not send it again as if
// it had been refused (Jepsen seed 16166532: such a patch, sent again to the
// next owner, was applied twice).
func TestReplicaFenceAfterLocalCommit(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	r := f.ranked("d1")
	owner, rep := r[0], r[1]
	epoch, err := owner.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.cfg.Store.Commit(ctx, persistence.ClaimEpoch("d1", epoch+1)); err != nil {
		t.Fatal(err)
	}
	f.kill(r[2].self) // no other member to take the write
	err = owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 1))})
	if !errors.Is(err, ErrFenced) || errcode.Of(err) != errcode.Unavailable {
		t.Fatalf("commit refused by a replica after the local commit: %v (code %v), want fenced and unavailable", err, errcode.Of(err))
	}
	if !state(t, owner, "d1").HasTwin {
		t.Fatal("setup: the local commit did not happen")
	}
	// Refused locally: nothing written anywhere, plain fenced.
	if err := owner.cfg.Store.Commit(ctx, persistence.ClaimEpoch("d1", epoch+2)); err != nil {
		t.Fatal(err)
	}
	err = owner.Commit(ctx, "d1", epoch, []persistence.Op{persistence.PutTwin("d1", twinDoc("d1", 2))})
	if !errors.Is(err, ErrFenced) || errcode.Of(err) == errcode.Unavailable {
		t.Fatalf("commit refused locally: %v (code %v), want fenced only", err, errcode.Of(err))
	}
}
