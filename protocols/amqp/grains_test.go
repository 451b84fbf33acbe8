package amqp

import (
	"context"
	"sync"
	"testing"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/persistence"
)

// testGrains is the node's side of the outbox for the package's tests: a
// real store, written as a grain writes it (RouteEvents' messages in one
// commit per event batch, removed by SettleOutbox), with this member
// owning every device. The grain's own path (actors, the real binary) is
// tested in api/node.
type testGrains struct {
	*persistence.DB
	mu    sync.Mutex
	last  map[string]uint64 // the last seq per device
	notMe map[string]bool   // devices another member owns
}

func newTestGrains(t *testing.T) *testGrains {
	t.Helper()
	db, err := persistence.Open(t.TempDir()+"/twinmesh.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return &testGrains{DB: db, last: map[string]uint64{}}
}

func (g *testGrains) SettleOutbox(ctx context.Context, device, _ string, seqs []uint64) error {
	ops := make([]persistence.Op, len(seqs))
	for i, s := range seqs {
		ops[i] = persistence.DeleteOutbox(device, s)
	}
	return g.Commit(ctx, ops...)
}

func (g *testGrains) Owns(device string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.notMe[device]
}

// setOwner says whether this member owns device.
func (g *testGrains) setOwner(device string, mine bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.notMe == nil {
		g.notMe = map[string]bool{}
	}
	g.notMe[device] = !mine
}

// emit routes events as a grain of their device does: matched in the
// commit, stored, then Stored.
func emit(t *testing.T, s *Service, events ...actors.Event) {
	t.Helper()
	g := s.cfg.Grains.(*testGrains)
	for _, e := range events {
		msgs := s.RouteEvents([]actors.Event{e})
		if len(msgs) == 0 {
			continue
		}
		g.mu.Lock()
		ops := make([]persistence.Op, len(msgs))
		for i, m := range msgs {
			g.last[e.Entity]++
			ops[i] = persistence.PutOutbox(persistence.OutboxEntry{Device: e.Entity, Seq: g.last[e.Entity], Endpoint: m.Endpoint, Data: m.Data})
		}
		g.mu.Unlock()
		if err := g.Commit(context.Background(), ops...); err != nil {
			t.Fatal(err)
		}
		s.Stored(e.Entity)
	}
}
