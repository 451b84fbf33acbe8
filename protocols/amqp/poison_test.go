package amqp

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestPoisonMessageIsDeadLettered sends a device's messages to a RabbitMQ
// queue that refuses one of them: a policy bounds the queue to 10,000 bytes
// with overflow reject-publish, and one message is larger. RabbitMQ 3.10's
// AMQP 1.0 plugin does not settle such a publish as rejected: it ends the
// session (the client sees its connection fail some 3 s later). Each failed
// session counts a try of the message at the head of
// the device's outbox; after MaxTries the message is a dead letter
// (readable over REST, counted) and the device's later messages arrive, in
// order, after its earlier ones.
func TestPoisonMessageIsDeadLettered(t *testing.T) {
	rb := testutil.RabbitMQ(t)
	if out, err := rb.Ctl("set_policy", "poison", "^poison$", `{"max-length-bytes":10000,"overflow":"reject-publish"}`,
		"--apply-to", "queues"); err != nil {
		t.Fatalf("set_policy: %v: %s", err, out)
	}
	t.Cleanup(func() { _, _ = rb.Ctl("clear_policy", "poison") })
	// Each failed session takes the plugin about 3 s to end: two tries
	// keep the test short.
	s, c, _ := newService(t, Config{MaxTries: 2})
	c.MustDo(t, "PUT", "/api/v1/endpoints/p", fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/poison"}`, rb.URL()), 200)
	c.MustDo(t, "PUT", "/api/v1/routes/all", `{"source":"telemetry","endpoint":"p","enabled":true}`, 200)
	big := strings.Repeat("x", 20000)
	ev := func(n int, pad string) actors.Event {
		return telemetry("d1", map[string]any{"n": float64(n), "pad": pad})
	}
	emit(t, s, ev(0, ""), ev(1, big), ev(2, ""), ev(3, ""))

	var st EndpointStatus
	testutil.Eventually(t, 30*time.Second, "one dead letter, three delivered", func() bool {
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/endpoints/p", nil, 200), &st)
		return st.DeadLettered == 1 && st.Delivered == 3 && st.Backlog == 0
	})
	if st.Retried < 1 {
		t.Fatalf("retried %d, want at least 1 (2 tries)", st.Retried)
	}
	var dead []DeadLetter
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/endpoints/p/deadletters", nil, 200), &dead); err != nil || len(dead) != 1 {
		t.Fatalf("dead letters: %v %+v", err, dead)
	}
	if dead[0].Device != "d1" || dead[0].Tries != 2 || !strings.Contains(string(dead[0].Body), big) || dead[0].Error == "" {
		t.Fatalf("dead letter: %+v", dead[0])
	}
	var got []int
	for _, m := range consume(t, rb.URL(), "/queue/poison", 10, 2*time.Second) {
		var b struct{ Points map[string]any }
		if err := json.Unmarshal(m.GetData(), &b); err != nil {
			t.Fatal(err)
		}
		got = append(got, int(b.Points["n"].(float64)))
	}
	// Duplicates may follow a failed session; the order may not change.
	next := 0
	want := []int{0, 2, 3}
	for _, n := range got {
		switch {
		case next < len(want) && n == want[next]:
			next++
		case next > 0 && n <= want[next-1]:
		default:
			t.Fatalf("messages %v arrived, want %v in order", got, want)
		}
	}
	if next != len(want) {
		t.Fatalf("messages %v arrived, want %v", got, want)
	}
}
