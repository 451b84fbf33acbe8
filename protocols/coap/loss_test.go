package coap

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// Through a link that drops 20 % of the datagrams and duplicates 10 %, in
// both directions, every confirmable message is acknowledged and stored
// exactly once: the client retransmits what was lost, the node answers
// duplicates and retransmissions from its exchange cache.
func TestLossyLink(t *testing.T) {
	const devices, perDevice = 4, 40
	var ids []string
	for i := 0; i < devices; i++ {
		ids = append(ids, fmt.Sprintf("d%d", i))
	}
	f := newFake(ids...)
	s := startServer(t, f, func(c *Config) {
		c.AckTimeout = 200 * time.Millisecond
		c.MaxRetransmit = 8
	})
	p := testutil.NewUDPProxy(t, s.Addr(), 0.2, 0.1, 15)
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co := dialAddr(t, p.Addr(), options.WithTransmission(1, 100*time.Millisecond, 12))
			tok := token(t, id, time.Hour)
			for i := 0; i < perDevice; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				res, err := co.Post(ctx, "/devices/"+id+"/messages/events", message.AppJSON, jsonReader(map[string]int{"seq": i}), sasOpt(tok))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("%s message %d: %w", id, i, err)
					return
				}
				if res.Code() != codes.Changed {
					errs <- fmt.Errorf("%s message %d: %v", id, i, res.Code())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, id := range ids {
		seen := map[int]int{}
		for _, m := range f.storedOf(id) {
			var v struct{ Seq int }
			if err := json.Unmarshal(m.Payload, &v); err != nil {
				t.Fatal(err)
			}
			seen[v.Seq]++
		}
		for i := 0; i < perDevice; i++ {
			if seen[i] != 1 {
				t.Fatalf("%s message %d stored %d times", id, i, seen[i])
			}
		}
		if len(seen) != perDevice {
			t.Fatalf("%s: %d distinct messages stored, want %d", id, len(seen), perDevice)
		}
	}
	if p.Dropped.Load() == 0 || p.Duplicated.Load() == 0 {
		t.Fatalf("the proxy dropped %d and duplicated %d datagrams", p.Dropped.Load(), p.Duplicated.Load())
	}
	t.Logf("%d datagrams relayed, %d dropped, %d duplicated", p.Relayed.Load(), p.Dropped.Load(), p.Duplicated.Load())
}

// Notifications cross the same link: the observer ends up with the last
// desired document.
func TestLossyObserve(t *testing.T) {
	f := newFake("d1")
	s := startServer(t, f, func(c *Config) {
		c.AckTimeout = 200 * time.Millisecond
		c.MaxRetransmit = 8
	})
	p := testutil.NewUDPProxy(t, s.Addr(), 0.2, 0.1, 16)
	co := dialAddr(t, p.Addr(), options.WithTransmission(1, 100*time.Millisecond, 12))
	var n notes
	if _, err := co.Observe(ctxT(t), "/devices/d1/twin/desired", func(m *pool.Message) { n.add(t, m) }, sasOpt(token(t, "d1", time.Hour))); err != nil {
		t.Fatal(err)
	}
	var last string
	for v := 2; v <= 6; v++ {
		last = fmt.Sprintf(`{"$version":%d}`, v)
		f.desiredChanged(s, "d1", last)
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, "the last desired document", func() bool { d, _ := n.last(); return d == last })
}
