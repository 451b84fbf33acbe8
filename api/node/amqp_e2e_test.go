package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopRabbitMQ() // when a test started it
	os.Exit(code)
}

// TestAMQPRoutesAndIngressThroughTheBinary runs CONTRACT section 8 against
// a real RabbitMQ: telemetry sent by a device behind an AMQP queue or over
// MQTT is stored, accepted, and routed out as the device sent it (its
// bytes, message ID, content type and encoding, application properties)
// with the IoT Hub annotations when the route's condition holds over its
// body, properties and the device's tags (a tags change applies to the
// next message); a cloud-to-device message lands in the inbox; unknown,
// disabled, misaddressed and oversize messages are rejected and counted;
// URLs are redacted.
func TestAMQPRoutesAndIngressThroughTheBinary(t *testing.T) {
	rb := testutil.RabbitMQ(t)
	n := testutil.Start(t, t.TempDir())
	c := n.Client()
	d1 := register(t, c, "d1", `{}`)
	register(t, c, "d2", `{}`)
	c.MustDo(t, "PATCH", "/api/v1/devices/d2", `{"status":"disabled"}`, 200)
	c.MustDo(t, "PATCH", "/api/v1/twins/d1", `{"tags":{"site":"hq"}}`, 200)

	c.MustDo(t, "PUT", "/api/v1/endpoints/out", fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/e2e-out"}`, rb.URL()), 200)
	c.MustDo(t, "PUT", "/api/v1/routes/hot", `{"source":"telemetry","condition":"body.temp > 20 && tags.site == \"hq\"","endpoint":"out","enabled":true}`, 200)
	ing := string(c.MustDo(t, "PUT", "/api/v1/ingress/in", fmt.Sprintf(`{"type":"amqp","url":%q,"address":"/queue/e2e-in"}`, rb.URL()), 200))
	if strings.Contains(ing, "guest:guest") || !strings.Contains(ing, "guest:***@") {
		t.Fatalf("ingress answer does not redact: %s", ing)
	}
	if b := c.MustDo(t, "GET", "/api/v1/endpoints/out", nil, 200); strings.Contains(string(b), "guest:guest") {
		t.Fatalf("endpoint answer does not redact: %s", b)
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
	snd, err := sess.NewSender(ctx, "/queue/e2e-in", nil)
	if err != nil {
		t.Fatal(err)
	}
	send := func(to string, body []byte) {
		t.Helper()
		m := amqp.NewMessage(body)
		ct, ce := "application/json", "utf-8"
		m.Properties = &amqp.MessageProperties{To: &to, MessageID: "amqp-" + string(body[:min(len(body), 12)]),
			ContentType: &ct, ContentEncoding: &ce}
		m.ApplicationProperties = map[string]any{"source": "e2e"}
		if err := snd.Send(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	send("/devices/d1/messages/events", []byte(`{"temp":15}`))                       // stored, not routed
	send("/devices/d1/messages/events", []byte(`{ "temp":25, "note": {"x": [1]} }`)) // stored and routed
	send("/devices/d1/messages/devicebound", []byte(`hello d1`))
	send("/devices/nobody/messages/events", []byte(`{"temp":30}`))
	send("/devices/d2/messages/events", []byte(`{"temp":30}`))
	send("/somewhere/else", []byte(`{"temp":30}`))
	send("/devices/d1/messages/events", make([]byte, 300<<10))

	var st struct {
		Received, Accepted, Rejected int
		LastRejection                string
	}
	testutil.Eventually(t, 20*time.Second, "7 ingress messages settled", func() bool {
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/ingress/in", nil, 200), &st)
		return st.Received == 7
	})
	if st.Accepted != 3 || st.Rejected != 4 || !strings.Contains(st.LastRejection, "amqp:link:message-size-exceeded") {
		t.Fatalf("ingress status %+v", st)
	}
	var msgs struct {
		Items []struct {
			Payload []byte `json:"payloadBase64"`
		}
	}
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/devices/d1/messages", nil, 200), &msgs); err != nil || len(msgs.Items) != 1 || string(msgs.Items[0].Payload) != "hello d1" {
		t.Fatalf("d1's inbox: %v %s", err, c.MustDo(t, "GET", "/api/v1/devices/d1/messages", nil, 200))
	}
	if b := c.MustDo(t, "GET", "/api/v1/twins/d1/telemetry?name=temp", nil, 200); !strings.Contains(string(b), "25") || !strings.Contains(string(b), "15") {
		t.Fatalf("d1's telemetry: %s", b)
	}

	// Over MQTT, with IoT Hub's system properties in the topic; then the
	// tags change and the next message no longer matches.
	mc := connectDevice(t, n, d1)
	must(t, mc.Publish("devices/d1/messages/events/$.ct=application%2Fjson&$.ce=utf-8&$.mid=mqtt-1&alarm=yes", 1, false,
		`{"temp": 26,  "list": [1, 2]}`))
	c.MustDo(t, "PATCH", "/api/v1/twins/d1", `{"tags":{"site":"plant"}}`, 200)
	must(t, mc.Publish("devices/d1/messages/events/$.mid=mqtt-2", 1, false, `{"temp": 27}`))

	rcv, err := sess.NewReceiver(ctx, "/queue/e2e-out", &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ body, id, prop, value string }{
		{`{ "temp":25, "note": {"x": [1]} }`, `amqp-{ "temp":25,`, "source", "e2e"},
		{`{"temp": 26,  "list": [1, 2]}`, "mqtt-1", "alarm", "yes"},
	} {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := rcv.Receive(rctx, nil)
		cancel()
		if err != nil {
			t.Fatalf("routed message %s: %v", want.id, err)
		}
		_ = rcv.AcceptMessage(ctx, m)
		if m.Annotations["iothub-connection-device-id"] != "d1" || m.Annotations["iothub-message-source"] != "Telemetry" ||
			string(m.GetData()) != want.body {
			t.Fatalf("routed message: %v %s, want body %s", m.Annotations, m.GetData(), want.body)
		}
		p := m.Properties
		if p == nil || p.MessageID != want.id || p.ContentType == nil || *p.ContentType != "application/json" ||
			p.ContentEncoding == nil || *p.ContentEncoding != "utf-8" || m.ApplicationProperties[want.prop] != want.value {
			t.Fatalf("routed message %s: properties %+v, application properties %v", want.id, p, m.ApplicationProperties)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	if extra, err := rcv.Receive(rctx, nil); err == nil {
		t.Fatalf("a third routed message (its tags no longer match): %s", extra.GetData())
	}
	cancel()
}
