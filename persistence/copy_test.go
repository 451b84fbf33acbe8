package persistence

import (
	"context"
	"errors"
	"testing"
	"time"
)

// copyPages returns the GrainSnapshot pages of grain d1 in src, limit ops
// each, as the ops a receiver commits for the copy with the given token
// (fenced by epoch; the first page starts the copy, the last ends it).
func copyPages(t *testing.T, src *DB, epoch, token uint64, limit int) [][]Op {
	t.Helper()
	from, err := src.GetEpoch("d1")
	if err != nil {
		t.Fatal(err)
	}
	var pages [][]Op
	var after int64
	for {
		ops, next, err := src.GrainSnapshot("d1", after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var page []Op
		if after == 0 {
			page = append(page, StartCopyEpoch("d1", epoch, from, token), ResetGrainData("d1"), EmptyCopyEpoch("d1"))
		} else {
			page = append(page, ContinueCopyEpoch("d1", epoch, token))
		}
		for _, w := range ops {
			page = append(page, FromWire(w))
		}
		if next == 0 {
			pages = append(pages, append(page, CopiedEpoch("d1", from)))
			return pages
		}
		pages = append(pages, page)
		after = next
	}
}

// TestCopiesNeverMix is the regression test of two members copying the same
// grain into one replica at once (the owner after a gap, and re-replication):
// their pages interleaved, and the replica ended with a mix of both copies
// that claimed to be the last one complete. A copy that another one
// replaced is refused page by page (ErrCopyAbandoned) and writes nothing;
// a replica write during a copy is a gap; the owner's own write ends a
// copy under way.
func TestCopiesNeverMix(t *testing.T) {
	ctx := context.Background()
	a, x := openTemp(t, nil), openTemp(t, nil)
	buildGrainSource(t, a) // d1 at {3, 3, 1}, grainRecords telemetry records
	commit(t, x, ClaimEpoch("d1", 3), CheckEpoch("d1", 3), PutTwin("d1", []byte(`{"id":"d1","version":9}`)))
	commit(t, x, CheckEpoch("d1", 3)) // {3, 3, 2}: x is newer than a

	t.Run("a copy replaced by another is refused", func(t *testing.T) {
		b := openTemp(t, nil)
		slow := copyPages(t, a, 3, 1, 4)
		if len(slow) < 3 {
			t.Fatalf("%d pages; the test wants several", len(slow))
		}
		commit(t, b, slow[0]...)
		for _, page := range copyPages(t, x, 3, 2, 1000) {
			commit(t, b, page...)
		}
		for i, page := range slow[1:] {
			err := b.Commit(ctx, page...)
			if !errors.Is(err, ErrCopyAbandoned) {
				t.Fatalf("page %d of the replaced copy: %v, want ErrCopyAbandoned", i+2, err)
			}
		}
		sb, _ := b.GrainState("d1")
		sx, _ := x.GrainState("d1")
		sb.HasEntity = sx.HasEntity
		if sb != sx {
			t.Fatalf("replica holds %+v, want the second copy %+v", sb, sx)
		}
	})

	t.Run("a replica write during a copy is a gap", func(t *testing.T) {
		b := openTemp(t, nil)
		pages := copyPages(t, a, 3, 7, 4)
		commit(t, b, pages[0]...)
		err := b.Commit(ctx, ApplyEpoch("d1", 3, Epoch{}, 1), PutTwin("d1", []byte(`{"version":1}`)))
		if !errors.Is(err, ErrGap) {
			t.Fatalf("write shipped during a copy: %v, want ErrGap", err)
		}
		for _, page := range pages[1:] {
			commit(t, b, page...)
		}
		if e, _ := b.GetEpoch("d1"); e != (Epoch{Fence: 3, Wrote: 3, Seq: 1}) {
			t.Fatalf("after the copy: %+v", e)
		}
	})

	t.Run("the owner's write ends a copy under way", func(t *testing.T) {
		b := openTemp(t, nil)
		pages := copyPages(t, a, 3, 8, 4)
		commit(t, b, pages[0]...)
		commit(t, b, CheckEpoch("d1", 3), AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(time.Hour)}))
		if err := b.Commit(ctx, pages[1]...); !errors.Is(err, ErrCopyAbandoned) {
			t.Fatalf("page after the owner's write: %v, want ErrCopyAbandoned", err)
		}
		if e, _ := b.GetEpoch("d1"); e != (Epoch{Fence: 3, Wrote: 3, Seq: 1}) {
			t.Fatalf("after the owner's write: %+v", e)
		}
	})
}
