package actors_test

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/twinmesh/twinmesh/actors"
)

// telemetryRouter routes every telemetry event to endpoint "e" while on,
// and records what grains tell it.
type telemetryRouter struct {
	mu     sync.Mutex
	on     bool
	calls  int
	stored []string
}

func (r *telemetryRouter) Active() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.on }

func (r *telemetryRouter) RouteEvents(evs []actors.Event) []actors.OutboxMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	var out []actors.OutboxMessage
	for _, e := range evs {
		if e.Type == actors.EventTelemetry {
			m, _ := e.Message()
			out = append(out, actors.OutboxMessage{Endpoint: "e", Data: append([]byte(e.Entity+":"), m.MessageID...)})
		}
	}
	return out
}

func (r *telemetryRouter) Stored(device string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stored = append(r.stored, device)
}

// TestGrainRoutesIntoItsOutbox: with an active router, a grain's
// telemetry commit holds the routed messages in its outbox, in order, and
// SettleOutbox removes them through the grain; an inactive router is not
// called and nothing is written; the outbox survives the grain's
// passivation and a new activation writes after what it holds.
func TestGrainRoutesIntoItsOutbox(t *testing.T) {
	e := start(t, filepath.Join(t.TempDir(), "twinmesh.db"), options{})
	put(t, e.sys, "d1", "device", "")
	r := &telemetryRouter{}
	e.sys.SetRouter(r)
	send := func(mid string) {
		t.Helper()
		e.clock.Add(1)
		if err := e.sys.Telemetry(ctx(t), "d1", actors.TelemetryIn{Points: map[string]any{"t": 1.0}, MessageID: mid}); err != nil {
			t.Fatal(err)
		}
	}
	send("m0")
	if out, _ := e.db.Outbox("d1", 0, 0); len(out) != 0 || r.calls != 0 {
		t.Fatalf("inactive router: %d entries, %d calls", len(out), r.calls)
	}
	r.mu.Lock()
	r.on = true
	r.mu.Unlock()
	send("m1")
	send("m2")
	out, err := e.db.Outbox("d1", 0, 0)
	if err != nil || len(out) != 2 || string(out[0].Data) != "d1:m1" || string(out[1].Data) != "d1:m2" ||
		out[0].Endpoint != "e" || out[0].Seq >= out[1].Seq {
		t.Fatalf("outbox %+v %v", out, err)
	}
	if len(r.stored) != 2 || r.stored[0] != "d1" {
		t.Fatalf("stored calls %v", r.stored)
	}
	if err := e.sys.SettleOutbox(ctx(t), "d1", "", []uint64{out[0].Seq}); err != nil {
		t.Fatal(err)
	}
	left, _ := e.db.Outbox("d1", 0, 0)
	if len(left) != 1 || left[0].Seq != out[1].Seq {
		t.Fatalf("after settling the first: %+v", left)
	}
	// A new activation (after a restart) appends after what is left.
	path := e.path
	e.stop()
	e = start(t, path, options{})
	e.sys.SetRouter(r)
	send("m3")
	out, _ = e.db.Outbox("d1", 0, 0)
	if len(out) != 2 || string(out[1].Data) != "d1:m3" || out[1].Seq <= left[0].Seq {
		t.Fatalf("after a restart: %+v", out)
	}
}
