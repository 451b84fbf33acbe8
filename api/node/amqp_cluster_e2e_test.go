package node

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestAMQPRoutesInACluster runs routes on two members, each with the same
// endpoint and route (definitions are per member): devices publish over
// MQTT to either member, and each device's telemetry is routed once, by
// the member hosting its grain (not again by the member that hears of it
// as a remote event), in order, as the device's own bytes and message ID
// (which crossed to the grain's member in the grain call), filtered by the
// device's tags.
func TestAMQPRoutesInACluster(t *testing.T) {
	rb := testutil.RabbitMQ(t)
	root := t.TempDir()
	n1 := ceStart(t, "n1", "n1#1", filepath.Join(root, "n1"), "")
	n2 := ceStart(t, "n2", "n2#1", filepath.Join(root, "n2"), n1.node.Addr("gossip"))
	members := []*cmember{n1, n2}
	waitAlive(t, 60*time.Second, members)

	const queue = "/queue/cluster-out"
	for _, m := range members {
		ceDo(t, 30*time.Second, []*cmember{m}, "PUT", "/api/v1/endpoints/out",
			fmt.Sprintf(`{"type":"amqp","url":%q,"address":%q}`, rb.URL(), queue), 200)
		ceDo(t, 30*time.Second, []*cmember{m}, "PUT", "/api/v1/routes/hq",
			`{"source":"telemetry","condition":"tags.site == \"hq\"","endpoint":"out","enabled":true}`, 200)
	}
	const devices, perDevice = 12, 3
	routed := 0
	for i := range devices {
		d := ceRegister(t, members[i%2], fmt.Sprintf("cd%02d", i), `{}`)
		site := "hq"
		if i%6 == 5 {
			site = "plant" // not routed
		} else {
			routed++
		}
		ceDo(t, 30*time.Second, []*cmember{members[(i+1)%2]}, "PATCH", "/api/v1/twins/"+d.ID,
			fmt.Sprintf(`{"tags":{"site":%q}}`, site), 200)
		mc, err := ceConnect(members[i%2], d, token(t, d.ID, d.Primary, time.Hour))
		if err != nil {
			t.Fatalf("connect %s: %v", d.ID, err)
		}
		for n := range perDevice {
			must(t, mc.Publish(fmt.Sprintf("devices/%s/messages/events/$.mid=%s-%d", d.ID, d.ID, n), 1, false,
				fmt.Sprintf(`{"n": %d,  "dev": %q}`, n, d.ID)))
		}
		mc.Disconnect(50)
	}

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
	rcv, err := sess.NewReceiver(ctx, queue, &amqp.ReceiverOptions{Credit: 50})
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	for got := 0; ; got++ {
		// Wait long for the messages expected, briefly for a duplicate.
		wait := 20 * time.Second
		if got == routed*perDevice {
			wait = 2 * time.Second
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		m, err := rcv.Receive(rctx, nil)
		cancel()
		if err != nil {
			if got < routed*perDevice {
				t.Fatalf("%d of %d routed messages arrived: %v", got, routed*perDevice, err)
			}
			break
		}
		_ = rcv.AcceptMessage(ctx, m)
		if got >= routed*perDevice {
			t.Fatalf("an extra message (routed twice?): %v %s", m.Annotations, m.GetData())
		}
		dev, _ := m.Annotations["iothub-connection-device-id"].(string)
		n := next[dev]
		want := fmt.Sprintf(`{"n": %d,  "dev": %q}`, n, dev)
		if string(m.GetData()) != want || m.Properties == nil || m.Properties.MessageID != fmt.Sprintf("%s-%d", dev, n) {
			t.Fatalf("device %s: got %s (id %v), want %s next", dev, m.GetData(), m.Properties, want)
		}
		next[dev] = n + 1
	}
	if len(next) != routed {
		t.Fatalf("messages of %d devices arrived, want %d: %v", len(next), routed, next)
	}
	var total int64
	for _, m := range members {
		var st struct{ Delivered int64 }
		_ = json.Unmarshal(ceDo(t, 10*time.Second, []*cmember{m}, "GET", "/api/v1/endpoints/out", nil, 200), &st)
		t.Logf("%s delivered %d", m.name, st.Delivered)
		total += st.Delivered
	}
	if total != int64(routed*perDevice) {
		t.Fatalf("the members delivered %d, want %d", total, routed*perDevice)
	}
}
