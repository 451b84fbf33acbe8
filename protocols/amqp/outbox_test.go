package amqp

import (
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestBrokerRestartKeepsEverythingInOrder stops the broker in the middle of
// a load and starts it again: the outbox holds what could not be sent and
// drains it; every message arrives, in order per device.
func TestBrokerRestartKeepsEverythingInOrder(t *testing.T) {
	rb := testutil.RabbitMQ(t)
	s, c, _ := newService(t, Config{})
	c.MustDo(t, "PUT", "/api/v1/endpoints/load", fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/restart"}`, rb.URL()), 200)
	c.MustDo(t, "PUT", "/api/v1/routes/all", `{"source":"telemetry","endpoint":"load","enabled":true}`, 200)
	const devices, perDevice = 4, 60
	status := func() EndpointStatus {
		var st EndpointStatus
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/endpoints/load", nil, 200), &st)
		return st
	}
	emit := func(from, to int) {
		for n := from; n < to; n++ {
			for d := range devices {
				emit(t, s, telemetry("dev"+strconv.Itoa(d), map[string]any{"n": float64(n)}))
			}
			time.Sleep(time.Millisecond)
		}
	}
	emit(0, perDevice/3)
	testutil.Eventually(t, 10*time.Second, "first third delivered", func() bool { return status().Delivered == devices*perDevice/3 })
	// Taken before the restart: whether the broker keeps what it accepted
	// across one is its business, not the outbox's.
	msgs := consume(t, rb.URL(), "/queue/restart", devices*perDevice/3, 2*time.Second)
	rb.Stop()
	emit(perDevice/3, perDevice)
	testutil.Eventually(t, 10*time.Second, "the endpoint retrying with a backlog", func() bool {
		st := status()
		return st.State == StateRetrying && st.Backlog == devices*(perDevice-perDevice/3) && st.LastError != ""
	})
	if err := rb.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the outbox drained", func() bool { return status().Backlog == 0 })

	// The idle wait ends the read (duplicates may follow the last one); on
	// a loaded machine a restarted broker can pause longer than 2 s.
	msgs = append(msgs, consume(t, rb.URL(), "/queue/restart", devices*perDevice*2, 5*time.Second)...)
	next := map[string]int{} // the next number expected per device
	for _, m := range msgs {
		dev, _ := m.Annotations["iothub-connection-device-id"].(string)
		var b struct{ Points map[string]float64 }
		if err := json.Unmarshal(m.GetData(), &b); err != nil {
			t.Fatal(err)
		}
		n := int(b.Points["n"])
		switch {
		case n == next[dev]:
			next[dev]++
		case n < next[dev]: // a duplicate after the reconnect: allowed
		default:
			t.Fatalf("device %s: got %d, want %d next (lost or out of order)", dev, n, next[dev])
		}
	}
	for d := range devices {
		if got := next["dev"+strconv.Itoa(d)]; got != perDevice {
			t.Fatalf("device dev%d: %d of %d messages arrived", d, got, perDevice)
		}
	}
	if st := status(); st.Dropped != 0 {
		t.Fatalf("dropped %d", st.Dropped)
	}
}

// TestOutboxBoundDropsAndCounts fills an unreachable endpoint's outbox past
// its bound: the excess is dropped and counted (not written to the grain's
// outbox); the outbox survives a restart of the service.
func TestOutboxBoundDropsAndCounts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	path := t.TempDir() + "/amqp.db"
	s, c, _ := newService(t, Config{Path: path, Bounds: Bounds{MaxCount: 10}})
	c.MustDo(t, "PUT", "/api/v1/endpoints/gone", fmt.Sprintf(`{"type":"amqp","url":"amqp://%s","address":"/queue/x"}`, dead), 200)
	c.MustDo(t, "PUT", "/api/v1/routes/all", `{"source":"telemetry","endpoint":"gone","enabled":true}`, 200)
	for n := range 15 {
		emit(t, s, telemetry("d1", map[string]any{"n": float64(n)}))
	}
	var st EndpointStatus
	testutil.Eventually(t, 5*time.Second, "10 kept, 5 dropped", func() bool {
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/endpoints/gone", nil, 200), &st)
		return st.Backlog == 10 && st.Dropped == 5
	})
	if st.State != StateRetrying || st.LastError == "" {
		t.Fatalf("state %q, last error %q", st.State, st.LastError)
	}
	g := s.cfg.Grains.(*testGrains)
	entries, err := g.Outbox("d1", 0, 100)
	if err != nil || len(entries) != 10 {
		t.Fatalf("%d entries in the outbox (%v), want 10", len(entries), err)
	}
	for i, e := range entries {
		var r record
		_ = json.Unmarshal(e.Data, &r)
		var b struct{ Points map[string]float64 }
		_ = json.Unmarshal(r.Body, &b)
		if int(b.Points["n"]) != i || e.Endpoint != "gone" {
			t.Fatalf("outbox entry %d holds message %v for %q", i, b.Points["n"], e.Endpoint)
		}
	}
	// Definitions and outbox survive a restart.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := New(Config{Path: path, Grains: g})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s2.rescan()
	eps := s2.Endpoints()
	if len(eps) != 1 || eps[0].Backlog != 10 || len(s2.Routes()) != 1 || s2.enabled.Load() != 1 {
		t.Fatalf("after a restart: %+v, routes %+v", eps, s2.Routes())
	}
}

// TestOnlyTheOwnerSends: a device whose grain another member owns is not
// sent from here, though its outbox is in this member's store (a replica's
// copy); once this member owns it (the owner died), the next scan finds
// the outbox and sends it, in order.
func TestOnlyTheOwnerSends(t *testing.T) {
	rb := testutil.RabbitMQ(t)
	s, c, _ := newService(t, Config{RescanEvery: 100 * time.Millisecond})
	g := s.cfg.Grains.(*testGrains)
	g.setOwner("theirs", false)
	c.MustDo(t, "PUT", "/api/v1/endpoints/own", fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/owner"}`, rb.URL()), 200)
	c.MustDo(t, "PUT", "/api/v1/routes/all", `{"source":"telemetry","endpoint":"own","enabled":true}`, 200)
	for n := range 3 {
		emit(t, s, telemetry("mine", map[string]any{"n": float64(n)}), telemetry("theirs", map[string]any{"n": float64(n)}))
	}
	seen := func(msgs []*amqp.Message) map[string][]int {
		out := map[string][]int{}
		for _, m := range msgs {
			dev, _ := m.Annotations["iothub-connection-device-id"].(string)
			var b struct{ Points map[string]float64 }
			_ = json.Unmarshal(m.GetData(), &b)
			out[dev] = append(out[dev], int(b.Points["n"]))
		}
		return out
	}
	got := seen(consume(t, rb.URL(), "/queue/owner", 10, 2*time.Second))
	if !reflect.DeepEqual(got, map[string][]int{"mine": {0, 1, 2}}) {
		t.Fatalf("before the takeover: %v", got)
	}
	if left, _ := g.Outbox("theirs", 0, 0); len(left) != 3 {
		t.Fatalf("the other member's device: %d entries here, want 3", len(left))
	}
	g.setOwner("theirs", true)
	got = seen(consume(t, rb.URL(), "/queue/owner", 10, 3*time.Second))
	if !reflect.DeepEqual(got, map[string][]int{"theirs": {0, 1, 2}}) {
		t.Fatalf("after the takeover: %v", got)
	}
	testutil.Eventually(t, 5*time.Second, "the outbox emptied", func() bool {
		left, _ := g.Outbox("theirs", 0, 0)
		return len(left) == 0
	})
}
