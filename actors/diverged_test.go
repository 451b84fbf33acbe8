package actors_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/persistence"
)

// flakyReplication stands in for the cluster's replication on one node: it
// writes to the local store like the real one, then reports too few
// replicas for as many commits as failNext says — the write is stored here
// but not acknowledged, as on a member cut off right after its own commit.
type flakyReplication struct {
	db         *persistence.DB
	failNext   atomic.Int32
	fenceNext  atomic.Int32          // commits refused by a replica after the local commit
	confirmErr atomic.Pointer[error] // what Confirm answers; nil: confirmed
}

func (f *flakyReplication) Claim(context.Context, string) (uint64, error) { return 1, nil }

func (f *flakyReplication) Commit(ctx context.Context, id string, epoch uint64, ops []persistence.Op) error {
	if err := f.db.Commit(ctx, append([]persistence.Op{persistence.CheckEpoch(id, epoch)}, ops...)...); err != nil {
		return err
	}
	if f.failNext.Add(-1) >= 0 {
		return tmcluster.ErrUnderReplicated
	}
	if f.fenceNext.Add(-1) >= 0 {
		// What cluster.Placement.Commit returns then (TestReplicaFenceAfterLocalCommit).
		return errcode.Wrap(errcode.Unavailable, fmt.Errorf("%w: a replica holds a newer claim", tmcluster.ErrFenced))
	}
	return nil
}

func (f *flakyReplication) CommitCatalog(ctx context.Context, ops []persistence.Op) error {
	return f.db.Commit(ctx, ops...)
}
func (f *flakyReplication) Confirm(context.Context, string, uint64) error {
	if e := f.confirmErr.Load(); e != nil {
		return *e
	}
	return nil
}
func (f *flakyReplication) Broadcast(string, any) {}
func (f *flakyReplication) Invoke(context.Context, string, string, string, []byte) (int, []byte, error) {
	return 0, nil, actors.ErrNotConnected
}
func (f *flakyReplication) Unreachable(string) <-chan struct{} { return nil }

// startFlaky starts a node whose replication is repl, with device d1.
func startFlaky(t *testing.T) (*actors.System, *flakyReplication) {
	t.Helper()
	db, err := persistence.Open(filepath.Join(t.TempDir(), "n.db"), &persistence.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	prov, err := tmcluster.NewProvider(tmcluster.Config{NodeName: "t-flaky", GossipAddr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	repl := &flakyReplication{db: db}
	sys, err := actors.New(actors.Config{NodeName: "n1", Provider: prov, Store: db, Replication: repl})
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop(false) })
	if _, _, err := sys.PutEntity(ctx(t), "d1", actors.EntitySpec{Kind: "device"}); err != nil {
		t.Fatal(err)
	}
	return sys, repl
}

// TestUnconfirmedOwnerAnswersNothingFromMemory is the regression test of
// the stale answers the Jepsen harness saw from a former owner cut off by
// a partition (seeds 232146396, 401776788): a read, and a conditional patch
// refused with 412 — which observes the version as much as a read does —
// are answered only once a majority confirmed the owner.
func TestUnconfirmedOwnerAnswersNothingFromMemory(t *testing.T) {
	sys, repl := startFlaky(t)
	c := ctx(t)
	_, v, err := sys.PatchTwin(c, "d1", actors.PatchBody{Desired: []byte(`{"c":1}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	noQuorum := error(tmcluster.ErrNoQuorum)
	repl.confirmErr.Store(&noQuorum)
	if _, _, err := sys.GetTwin(c, "d1"); !errors.Is(err, actors.ErrUnavailable) {
		t.Errorf("read without a majority: %v, want unavailable", err)
	}
	stale := v - 1
	if _, _, err := sys.PatchTwin(c, "d1", actors.PatchBody{Desired: []byte(`{"c":2}`)}, &stale); !errors.Is(err, actors.ErrUnavailable) {
		t.Errorf("conditional patch on a moved version without a majority: %v, want unavailable (not 412)", err)
	}
	if _, err := sys.TelemetryHistory(c, "d1", persistence.TelemetryQuery{Limit: 1}); !errors.Is(err, actors.ErrUnavailable) {
		t.Errorf("telemetry history without a majority: %v, want unavailable", err)
	}

	// A newer activation claimed the grain elsewhere: this one is fenced
	// and stops; the next one (here, the same node again) answers.
	fenced := error(tmcluster.ErrFenced)
	repl.confirmErr.Store(&fenced)
	cc, cancel := context.WithTimeout(c, 300*time.Millisecond)
	defer cancel()
	if _, _, err := sys.GetTwin(cc, "d1"); err == nil {
		t.Error("a superseded owner answered a read")
	}
	repl.confirmErr.Store(nil)
	if err := retry(t, func() error { _, _, err := sys.GetTwin(c, "d1"); return err }); err != nil {
		t.Errorf("read once confirmed: %v", err)
	}
}

// TestFailedCommitReloadsWhatWasStored is the regression test of two Jepsen
// findings (issue 20): a commit that reached this node's store but not
// enough replicas left the grain's memory behind its store, so (1) a
// device that resent the message after the error had it stored twice, and
// (2) the next desired patch got the twin version the failed one had
// already written. The grain now stops after such a commit and the next
// activation loads what was stored.
func TestFailedCommitReloadsWhatWasStored(t *testing.T) {
	sys, repl := startFlaky(t)
	c := ctx(t)

	msg := actors.TelemetryIn{MessageID: "m-1", Points: map[string]any{"t": 21.5}}
	repl.failNext.Store(1)
	if err := sys.Telemetry(c, "d1", msg); err == nil {
		t.Fatal("telemetry acknowledged although too few replicas took it")
	}
	// The device resends the message it got no acknowledgement for.
	if err := retry(t, func() error { return sys.Telemetry(c, "d1", msg) }); err != nil {
		t.Fatalf("resent telemetry: %v", err)
	}
	recs, err := sys.TelemetryHistory(c, "d1", persistence.TelemetryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Errorf("message stored %d times, want once", len(recs))
	}

	_, v0, err := sys.GetTwin(c, "d1")
	if err != nil {
		t.Fatal(err)
	}
	repl.failNext.Store(1)
	if _, _, err := sys.PatchTwin(c, "d1", actors.PatchBody{Desired: []byte(`{"c":1}`)}, nil); err == nil {
		t.Fatal("patch acknowledged although too few replicas took it")
	}
	var v2 int64
	if err := retry(t, func() error {
		var err error
		_, v2, err = sys.PatchTwin(c, "d1", actors.PatchBody{Desired: []byte(`{"c":2}`)}, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The failed patch may have happened (it is stored here): the next one
	// must come after it, not take its version.
	if v2 != v0+2 {
		t.Errorf("version after a failed and a successful patch: %d, want %d (the failed one's %d not reused)", v2, v0+2, v0+1)
	}
}

// retry calls f until it succeeds or 5 s pass: the first call after a
// failed commit may meet the stopping activation.
func retry(t *testing.T, f func() error) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		if !errors.Is(err, actors.ErrFenced) && !errors.Is(err, actors.ErrUnavailable) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWriteFencedByAReplicaIsNotSentAgain is the regression test of a patch
// applied twice (Jepsen seed 16166532, after a pause): the owner committed
// it, a replica refused it (another member had claimed the grain), and the
// grain answered "superseded", which callers send again to the new owner —
// while the owner's copy, holding the write, could still be adopted. The
// answer is now "unavailable" (outcome unknown), and the grain reloads.
func TestWriteFencedByAReplicaIsNotSentAgain(t *testing.T) {
	sys, repl := startFlaky(t)
	c := ctx(t)
	_, v0, err := sys.GetTwin(c, "d1")
	if err != nil {
		t.Fatal(err)
	}
	repl.fenceNext.Store(1)
	_, _, err = sys.PatchTwin(c, "d1", actors.PatchBody{Desired: []byte(`{"c":1}`)}, nil)
	if !errors.Is(err, actors.ErrUnavailable) || errors.Is(err, actors.ErrFenced) {
		t.Fatalf("patch refused by a replica after the local commit: %v, want unavailable, not fenced", err)
	}
	var v int64
	if err := retry(t, func() error { _, v, err = sys.GetTwin(c, "d1"); return err }); err != nil {
		t.Fatal(err)
	}
	if v != v0+1 {
		t.Errorf("version after the patch: %d, want %d (applied once)", v, v0+1)
	}
}
