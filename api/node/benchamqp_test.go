package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestBenchAMQPRoutes measures routed messages per second from MQTT in to
// AMQP out (publish with QoS 1 until the broker accepted the last one),
// and go-amqp sending the same bodies straight to the same broker with the
// same window (64 in flight), in one run. Opt-in (TWINMESH_BENCH_AMQP=1):
// it is a measurement, not a check; BENCHMARKS.md has the figures.
func TestBenchAMQPRoutes(t *testing.T) {
	if os.Getenv("TWINMESH_BENCH_AMQP") == "" {
		t.Skip("set TWINMESH_BENCH_AMQP=1 to measure")
	}
	const devices, perDevice = 10, 500
	total := devices * perDevice
	rb := testutil.RabbitMQ(t)
	n := testutil.Start(t, t.TempDir(), "--device-rate", "1000000", "--device-burst", "1000000")
	c := n.Client()
	c.MustDo(t, "PUT", "/api/v1/endpoints/bench", fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/bench-routed"}`, rb.URL()), 200)
	c.MustDo(t, "PUT", "/api/v1/routes/all", `{"source":"telemetry","endpoint":"bench","enabled":true}`, 200)
	body := func(d, i int) string { return fmt.Sprintf(`{"temp":%d.5,"seq":%d,"dev":%d}`, i%40, i, d) }

	var wg sync.WaitGroup
	clients := make([]func(), devices)
	for d := range devices {
		dev := register(t, c, fmt.Sprintf("bench-%d", d), `{}`)
		cl := connectDevice(t, n, dev)
		clients[d] = func() {
			defer wg.Done()
			for i := range perDevice {
				tok := cl.Publish("devices/"+dev.ID+"/messages/events/", 1, false, body(d, i))
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					t.Errorf("publish: %v", tok.Error())
					return
				}
			}
		}
	}
	start := time.Now()
	for _, f := range clients {
		wg.Add(1)
		go f()
	}
	wg.Wait()
	published := time.Since(start)
	var st struct{ Delivered int }
	testutil.Eventually(t, 2*time.Minute, "all routed", func() bool {
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/endpoints/bench", nil, 200), &st)
		return st.Delivered >= total
	})
	routed := time.Since(start)

	ctx := context.Background()
	conn, err := amqp.Dial(ctx, rb.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := sess.NewSender(ctx, "/queue/bench-direct", nil)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	var window []amqp.SendReceipt
	flush := func() {
		for _, r := range window {
			if _, err := r.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		window = window[:0]
	}
	for i := range total {
		m := amqp.NewMessage([]byte(body(i%devices, i/devices)))
		m.Header = &amqp.MessageHeader{Durable: true}
		r, err := snd.SendWithReceipt(ctx, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		if window = append(window, r); len(window) == 64 {
			flush()
		}
	}
	flush()
	direct := time.Since(start)
	ours, bare := float64(total)/routed.Seconds(), float64(total)/direct.Seconds()
	t.Logf("routed MQTT→AMQP: %d messages in %v = %.0f msg/s (the last PUBACK after %v); go-amqp direct: %v = %.0f msg/s; ratio %.3f",
		total, routed.Round(time.Millisecond), ours, published.Round(time.Millisecond), direct.Round(time.Millisecond), bare, ours/bare)
}
