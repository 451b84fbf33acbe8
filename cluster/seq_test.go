package cluster

import (
	"context"
	"testing"

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
