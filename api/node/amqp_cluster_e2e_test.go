package node

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestAMQPRoutesInACluster: three members with --replicas 2. An endpoint
// and a route (filtered by the device's tags) are defined through one
// member and work from all. With the broker stopped, devices publish to
// every member; each message is PUBACKed once its grain's commit, which
// holds the routed message in the grain's outbox, is on two members. One
// member, whose outbox is not empty, is SIGKILLed; the broker starts again:
// every PUBACKed message that matches arrives (duplicates allowed), in
// order per device, as the device's own bytes and message ID, and none
// that does not match.
func TestAMQPRoutesInACluster(t *testing.T) {
	rb := testutil.RabbitMQ(t)
	began := time.Now()
	root := t.TempDir()
	fast := []string{"--amqp-backoff-max", "2s"} // the broker is down for a while
	n1 := ceStart(t, "n1", "n1#1", filepath.Join(root, "n1"), "", fast...)
	n2 := ceStart(t, "n2", "n2#1", filepath.Join(root, "n2"), n1.node.Addr("gossip"), fast...)
	n3 := ceStart(t, "n3", "n3#1", filepath.Join(root, "n3"), n1.node.Addr("gossip"), fast...)
	members := []*cmember{n1, n2, n3}
	waitAlive(t, 60*time.Second, members)

	const queue = "/queue/cluster-out"
	ceDo(t, 30*time.Second, []*cmember{n1}, "PUT", "/api/v1/endpoints/out",
		fmt.Sprintf(`{"type":"amqp","url":%q,"address":%q}`, rb.URL(), queue), 200)
	ceDo(t, 30*time.Second, []*cmember{n1}, "PUT", "/api/v1/routes/hq",
		`{"source":"telemetry","condition":"tags.site == \"hq\"","endpoint":"out","enabled":true}`, 200)
	for _, m := range members[1:] {
		testutil.Eventually(t, 10*time.Second, m.label+" to know the route", func() bool {
			st, _, _, err := m.api.Do(context.Background(), "GET", "/api/v1/routes/hq", nil)
			return err == nil && st == 200
		})
	}
	endpoint := func(m *cmember) (st struct {
		Backlog   int
		Delivered int64
		URL       string
	}) {
		_ = json.Unmarshal(ceDo(t, 10*time.Second, []*cmember{m}, "GET", "/api/v1/endpoints/out", nil, 200), &st)
		return st
	}
	if u := endpoint(n2).URL; strings.Contains(u, "guest:guest") {
		t.Fatalf("GET on another member shows the password: %s", u)
	}

	t.Logf("cluster up, definitions synced after %v", time.Since(began).Round(time.Millisecond))
	rb.Stop()
	const devices, perDevice = 9, 4
	routed := 0
	for i := range devices {
		d := ceRegister(t, members[i%3], fmt.Sprintf("cd%02d", i), `{}`)
		site := "hq"
		if i%5 == 4 {
			site = "plant" // not routed
		} else {
			routed++
		}
		ceDo(t, 30*time.Second, []*cmember{members[(i+1)%3]}, "PATCH", "/api/v1/twins/"+d.ID,
			fmt.Sprintf(`{"tags":{"site":%q}}`, site), 200)
		mc, err := ceConnect(members[i%3], d, token(t, d.ID, d.Primary, time.Hour))
		if err != nil {
			t.Fatalf("connect %s: %v", d.ID, err)
		}
		for n := range perDevice {
			must(t, mc.Publish(fmt.Sprintf("devices/%s/messages/events/$.mid=%s-%d", d.ID, d.ID, n), 1, false,
				fmt.Sprintf(`{"n": %d,  "dev": %q}`, n, d.ID)))
		}
		mc.Disconnect(50)
	}
	// The victim is a member that owns routed messages.
	var victim *cmember
	for _, m := range members[1:] {
		if endpoint(m).Backlog > 0 {
			victim = m
			break
		}
	}
	if victim == nil {
		t.Fatalf("no member but n1 holds a backlog: %d %d", endpoint(n2).Backlog, endpoint(n3).Backlog)
	}
	t.Logf("killing %s with a backlog of %d after %v", victim.label, endpoint(victim).Backlog, time.Since(began).Round(time.Millisecond))
	victim.node.Kill()
	killed := time.Now()
	if err := rb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker up %v after the kill", time.Since(killed).Round(time.Millisecond))

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
	done := func() bool {
		for i := range devices {
			if i%5 != 4 && next[fmt.Sprintf("cd%02d", i)] < perDevice {
				return false
			}
		}
		return true
	}
	dups := 0
	for deadline := time.Now().Add(60 * time.Second); !done(); {
		rctx, cancel := context.WithDeadline(ctx, deadline)
		m, err := rcv.Receive(rctx, nil)
		cancel()
		if err != nil {
			t.Fatalf("routed messages arrived as far as %v of %d devices × %d: %v", next, routed, perDevice, err)
		}
		_ = rcv.AcceptMessage(ctx, m)
		dev, _ := m.Annotations["iothub-connection-device-id"].(string)
		var b struct{ N int }
		if err := json.Unmarshal(m.GetData(), &b); err != nil {
			t.Fatalf("body %q: %v", m.GetData(), err)
		}
		want := fmt.Sprintf(`{"n": %d,  "dev": %q}`, b.N, dev)
		if string(m.GetData()) != want || m.Properties == nil || m.Properties.MessageID != fmt.Sprintf("%s-%d", dev, b.N) {
			t.Fatalf("device %s: got %s (id %v), want %s", dev, m.GetData(), m.Properties, want)
		}
		var i int
		if _, err := fmt.Sscanf(dev, "cd%02d", &i); err != nil || i%5 == 4 {
			t.Fatalf("a message of %s, which no route takes", dev)
		}
		switch n := next[dev]; {
		case b.N == n:
			next[dev]++
		case b.N < n:
			dups++ // sent again by the new owner: allowed
		default:
			t.Fatalf("device %s: got %d, want %d next (lost or out of order)", dev, b.N, n)
		}
	}
	t.Logf("every routed message arrived %v after the kill, %d duplicates", time.Since(killed).Round(time.Millisecond), dups)
	for _, m := range members {
		if m == victim {
			continue
		}
		testutil.Eventually(t, 20*time.Second, m.label+"'s backlog to drain", func() bool { return endpoint(m).Backlog == 0 })
	}

	// A poison message: the queue refuses it (RabbitMQ ends the session),
	// its owner dead-letters it after --amqp-max-tries, and every member
	// lists it, marked with the member that holds it.
	if out, err := rb.Ctl("set_policy", "poison", "^cluster-poison$", `{"max-length-bytes":10000,"overflow":"reject-publish"}`,
		"--apply-to", "queues"); err != nil {
		t.Fatalf("set_policy: %v: %s", err, out)
	}
	live := slices.DeleteFunc(slices.Clone(members), func(m *cmember) bool { return m == victim })
	ceDo(t, 30*time.Second, live[:1], "PUT", "/api/v1/endpoints/poison",
		fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/cluster-poison"}`, rb.URL()), 200)
	ceDo(t, 30*time.Second, live[:1], "PUT", "/api/v1/routes/big",
		`{"source":"telemetry","condition":"tags.site == \"poison\"","endpoint":"poison","enabled":true}`, 200)
	for _, m := range live {
		testutil.Eventually(t, 10*time.Second, m.label+" to know the route", func() bool {
			st, _, _, err := m.api.Do(context.Background(), "GET", "/api/v1/routes/big", nil)
			return err == nil && st == 200
		})
	}
	d := ceRegister(t, live[1], "cpz", `{}`)
	ceDo(t, 30*time.Second, live[:1], "PATCH", "/api/v1/twins/cpz", `{"tags":{"site":"poison"}}`, 200)
	mc, err := ceConnect(live[1], d, token(t, d.ID, d.Primary, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	must(t, mc.Publish("devices/cpz/messages/events/", 1, false, fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 20000))))
	mc.Disconnect(50)
	poisoned := time.Now()
	holder := ""
	for _, m := range live {
		var dead []struct {
			DeviceID string
			Tries    int
			Member   string
		}
		testutil.Eventually(t, 90*time.Second, m.label+" to list the dead letter", func() bool {
			_ = json.Unmarshal(ceDo(t, 10*time.Second, []*cmember{m}, "GET", "/api/v1/endpoints/poison/deadletters", nil, 200), &dead)
			return len(dead) == 1
		})
		if dead[0].DeviceID != "cpz" || dead[0].Tries < 1 || dead[0].Member == "" || (holder != "" && dead[0].Member != holder) {
			t.Errorf("%s lists %+v (held by %q)", m.label, dead[0], holder)
		}
		holder = dead[0].Member
	}
	t.Logf("the poison message was a dead letter, listed by every member, %v after its PUBACK (held by %s)",
		time.Since(poisoned).Round(time.Millisecond), holder)
}
