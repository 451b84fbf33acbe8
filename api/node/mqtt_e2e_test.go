package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// device is a registered device with its keys.
type device struct {
	ID, Primary, Secondary string
}

func register(t *testing.T, c *testutil.Client, id, body string) device {
	t.Helper()
	var d struct{ ID, PrimaryKey, SecondaryKey string }
	if err := json.Unmarshal(c.MustDo(t, "PUT", "/api/v1/devices/"+id, body, 201), &d); err != nil {
		t.Fatal(err)
	}
	return device{ID: d.ID, Primary: d.PrimaryKey, Secondary: d.SecondaryKey}
}

func token(t *testing.T, resourceDevice, key string, ttl time.Duration) string {
	t.Helper()
	tok, err := sas.Sign("hub.test/devices/"+resourceDevice, key, time.Now().Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type inbox struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (b *inbox) add(_ paho.Client, m paho.Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

func (b *inbox) wait(t *testing.T, what string, match func(paho.Message) bool) paho.Message {
	t.Helper()
	var found paho.Message
	testutil.Eventually(t, 10*time.Second, what, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, m := range b.msgs {
			if match(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func topicHas(prefix string) func(paho.Message) bool {
	return func(m paho.Message) bool { return strings.HasPrefix(m.Topic(), prefix) }
}

func connect(broker, clientID, user, password string) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).SetUsername(user).SetPassword(password).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	return c, tok.Error()
}

func connectDevice(t *testing.T, n *testutil.Node, d device) paho.Client {
	t.Helper()
	c, err := connect("tcp://"+n.Addr("mqtt"), d.ID, "hub.test/"+d.ID+"/?api-version=2021-04-12", token(t, d.ID, d.Primary, time.Hour))
	if err != nil {
		t.Fatalf("connect %s: %v", d.ID, err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func must(t *testing.T, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt operation: %v", tok.Error())
	}
}

func subscribe(t *testing.T, c paho.Client, box *inbox, filters ...string) {
	t.Helper()
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 1
	}
	tok := c.SubscribeMultiple(m, box.add)
	must(t, tok)
	for f, code := range tok.(*paho.SubscribeToken).Result() {
		if code >= 0x80 {
			t.Fatalf("subscription %s refused (0x%x)", f, code)
		}
	}
}

type twinDocT struct {
	Version    int64                     `json:"version"`
	Desired    map[string]any            `json:"desired"`
	Reported   map[string]any            `json:"reported"`
	Telemetry  map[string]map[string]any `json:"telemetry"`
	Connection struct{ State string }    `json:"connection"`
	Rollup     map[string]any            `json:"rollup"`
}

func twinOf(t *testing.T, c *testutil.Client, id string) twinDocT {
	t.Helper()
	var d twinDocT
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins/"+id, nil, 200), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMQTTDeviceFlows(t *testing.T) {
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201)
	api.MustDo(t, "PUT", "/api/v1/entities/r1", `{"kind":"room","parent":"b1"}`, 201)
	d1 := register(t, api, "d1", `{"parent":"r1"}`)
	cl := connectDevice(t, n, d1)
	box := &inbox{}
	subscribe(t, cl, box, "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#", "devices/d1/messages/devicebound/#")

	t.Run("connection state and rollup", func(t *testing.T) {
		testutil.Eventually(t, 5*time.Second, "connected twin", func() bool { return twinOf(t, api, "d1").Connection.State == "connected" })
		testutil.Eventually(t, 5*time.Second, "building rollup", func() bool {
			r := twinOf(t, api, "b1").Rollup
			return r["devices"] == 1.0 && r["connected"] == 1.0
		})
	})

	t.Run("telemetry qos1 with property bag", func(t *testing.T) {
		must(t, cl.Publish("devices/d1/messages/events/$.ct=application%2Fjson&site=north", 1, false, `{"temperature":21.5,"door":"open"}`))
		// PUBACK means stored: no waiting needed.
		tw := twinOf(t, api, "d1")
		if tw.Telemetry["temperature"]["value"] != 21.5 || tw.Telemetry["door"]["value"] != "open" {
			t.Fatalf("telemetry in twin: %v", tw.Telemetry)
		}
		var hist struct {
			Items []struct {
				Points     map[string]any    `json:"points"`
				Properties map[string]string `json:"properties"`
			}
		}
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/d1/telemetry?name=temperature", nil, 200), &hist)
		if len(hist.Items) != 1 || hist.Items[0].Points["temperature"] != 21.5 || hist.Items[0].Properties["site"] != "north" {
			t.Fatalf("warm store: %+v", hist)
		}
		must(t, cl.Publish("devices/d1/messages/events/$.ct=text%2Fplain", 1, false, "not json"))
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/d1/telemetry", nil, 200), &hist)
		if len(hist.Items) != 2 {
			t.Fatalf("raw message not kept: %+v", hist)
		}
		must(t, cl.Publish("devices/d1/messages/events/", 0, false, `{"humidity":40}`))
		testutil.Eventually(t, 5*time.Second, "qos0 telemetry", func() bool {
			return twinOf(t, api, "d1").Telemetry["humidity"]["value"] == 40.0
		})
	})

	t.Run("twin get and reported patch", func(t *testing.T) {
		must(t, cl.Publish("$iothub/twin/GET/?$rid=1", 0, false, ""))
		m := box.wait(t, "twin GET response", topicHas("$iothub/twin/res/200/?$rid=1"))
		var doc struct{ Desired, Reported map[string]any }
		if err := json.Unmarshal(m.Payload(), &doc); err != nil || doc.Desired["$version"] == nil {
			t.Fatalf("twin body %s: %v", m.Payload(), err)
		}
		must(t, cl.Publish("$iothub/twin/PATCH/properties/reported/?$rid=2", 0, false, `{"fw":"1.2.3"}`))
		m = box.wait(t, "reported 204", topicHas("$iothub/twin/res/204/?$rid=2"))
		if !strings.Contains(m.Topic(), "$version=1") {
			t.Fatalf("204 topic %s lacks $version", m.Topic())
		}
		if twinOf(t, api, "d1").Reported["fw"] != "1.2.3" {
			t.Fatal("reported not in twin")
		}
		must(t, cl.Publish("$iothub/twin/PATCH/properties/reported/?$rid=3", 0, false, `{"fw":`))
		box.wait(t, "malformed 400", topicHas("$iothub/twin/res/400/?$rid=3"))
		big := fmt.Sprintf(`{"blob":%q}`, strings.Repeat("x", 40<<10))
		must(t, cl.Publish("$iothub/twin/PATCH/properties/reported/?$rid=4", 0, false, big))
		box.wait(t, "oversize 413", topicHas("$iothub/twin/res/413/?$rid=4"))
	})

	t.Run("desired notification", func(t *testing.T) {
		api.MustDo(t, "PATCH", "/api/v1/twins/d1", `{"desired":{"setpoint":22}}`, 200)
		m := box.wait(t, "desired notification", topicHas("$iothub/twin/PATCH/properties/desired/?$version=1"))
		var body map[string]any
		_ = json.Unmarshal(m.Payload(), &body)
		if body["setpoint"] != 22.0 || body["$version"] != 1.0 {
			t.Fatalf("desired body %s", m.Payload())
		}
	})

	t.Run("direct method", func(t *testing.T) {
		answer := make(chan struct{})
		go func() {
			defer close(answer)
			m := box.wait(t, "method request", topicHas("$iothub/methods/POST/reboot/"))
			u, _ := url.Parse("x://h/" + strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/reboot/"))
			rid := u.Query().Get("$rid")
			cl.Publish("$iothub/methods/res/200/?$rid="+rid, 0, false, `{"rebooting":true,"echo":`+string(m.Payload())+`}`).Wait()
		}()
		out := api.MustDo(t, "POST", "/api/v1/devices/d1/methods/reboot", `{"payload":{"delay":3},"timeoutSeconds":10}`, 200)
		<-answer
		var res struct {
			Status  int
			Payload map[string]any
		}
		_ = json.Unmarshal(out, &res)
		if res.Status != 200 || res.Payload["rebooting"] != true {
			t.Fatalf("method result %s", out)
		}
		api.MustDo(t, "POST", "/api/v1/devices/d1/methods/ignored", `{"timeoutSeconds":5}`, 504)
		api.MustDo(t, "POST", "/api/v1/devices/d1/methods/x", `{"timeoutSeconds":2}`, 400)
		register(t, api, "offline", "")
		api.MustDo(t, "POST", "/api/v1/devices/offline/methods/x", `{}`, 404)
		api.MustDo(t, "POST", "/api/v1/devices/ghost/methods/x", `{}`, 404)
	})

	t.Run("cloud to device", func(t *testing.T) {
		var sent struct{ MessageID string }
		_ = json.Unmarshal(api.MustDo(t, "POST", "/api/v1/devices/d1/messages", `{"payload":{"cmd":"beep"},"properties":{"prio":"high"}}`, 202), &sent)
		m := box.wait(t, "c2d message", topicHas("devices/d1/messages/devicebound/"))
		if !strings.Contains(m.Topic(), "%24.mid="+sent.MessageID) && !strings.Contains(m.Topic(), "$.mid="+sent.MessageID) || !strings.Contains(m.Topic(), "prio=high") {
			t.Fatalf("c2d topic %s", m.Topic())
		}
		testutil.Eventually(t, 5*time.Second, "delivered state", func() bool {
			var st struct{ State string }
			_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/devices/d1/messages/"+sent.MessageID, nil, 200), &st)
			return st.State == "delivered"
		})
		// Offline: queued, delivered on the next subscription.
		off := register(t, api, "d2", `{"parent":"r1"}`)
		api.MustDo(t, "POST", "/api/v1/devices/d2/messages", `{"payload":"hello later","ttlSeconds":600}`, 202)
		c2 := connectDevice(t, n, off)
		box2 := &inbox{}
		subscribe(t, c2, box2, "devices/d2/messages/devicebound/#")
		m = box2.wait(t, "queued c2d", topicHas("devices/d2/messages/devicebound/"))
		if string(m.Payload()) != "hello later" {
			t.Fatalf("payload %q", m.Payload())
		}
		api.MustDo(t, "POST", "/api/v1/devices/d2/messages", `{"payload":1,"ttlSeconds":999999}`, 400)
		// Issue 12, item 8: system property names are refused.
		for _, k := range []string{"$.mid", "$.to", "iothub-connection-device-id"} {
			api.MustDo(t, "POST", "/api/v1/devices/d2/messages", fmt.Sprintf(`{"payload":1,"properties":{%q:"x"}}`, k), 400)
		}
		for i := 0; i < 60; i++ {
			st, _, _, _ := api.Do(context.Background(), "POST", "/api/v1/devices/offline/messages", `{"payload":1}`)
			if i < 50 && st != 202 || i >= 50 && st != 429 {
				t.Fatalf("message %d: status %d", i, st)
			}
		}
	})

	t.Run("disable drops the session", func(t *testing.T) {
		api.MustDo(t, "PATCH", "/api/v1/devices/d1", `{"status":"disabled"}`, 200)
		testutil.Eventually(t, time.Second, "session dropped", func() bool { return !cl.IsConnectionOpen() })
		if _, err := connect("tcp://"+n.Addr("mqtt"), "d1", "hub.test/d1/?api-version=1", token(t, "d1", d1.Primary, time.Hour)); err == nil {
			t.Fatal("disabled device connected")
		}
		testutil.Eventually(t, 5*time.Second, "disconnected twin", func() bool { return twinOf(t, api, "d1").Connection.State == "disconnected" })
	})
}

func TestMQTTAuthorizationMatrix(t *testing.T) {
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	a := register(t, api, "a", "")
	b := register(t, api, "b", "")
	gw := register(t, api, "gw", `{"kind":"gateway"}`)
	register(t, api, "child", `{"connectedVia":"gw"}`)
	dis := register(t, api, "dis", "")
	api.MustDo(t, "PATCH", "/api/v1/devices/dis", `{"status":"disabled"}`, 200)
	broker := "tcp://" + n.Addr("mqtt")
	user := func(id string) string { return "hub.test/" + id + "/?api-version=2021-04-12" }

	refusedConnects := []struct {
		name, client, user, password string
	}{
		{"unknown device", "ghost", user("ghost"), token(t, "ghost", a.Primary, time.Hour)},
		{"disabled device", "dis", user("dis"), token(t, "dis", dis.Primary, time.Hour)},
		{"expired token", "a", user("a"), token(t, "a", a.Primary, -time.Minute)},
		{"forged signature", "a", user("a"), token(t, "a", b.Primary, time.Hour)},
		{"token for another device", "a", user("a"), token(t, "b", b.Primary, time.Hour)},
		{"client id differs from user name", "a", user("b"), token(t, "a", a.Primary, time.Hour)},
		{"not a SAS token", "a", user("a"), "hunter2"},
		{"token beyond --max-token-lifetime", "a", user("a"), token(t, "a", a.Primary, 400*24*time.Hour)},
	}
	for _, tc := range refusedConnects {
		t.Run("connect/"+tc.name, func(t *testing.T) {
			c, err := connect(broker, tc.client, tc.user, tc.password)
			if err == nil {
				c.Disconnect(0)
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), "not Authorized") && !strings.Contains(err.Error(), "not authorized") {
				t.Fatalf("refused with %v, want not authorized", err)
			}
		})
	}
	t.Run("connect/secondary key", func(t *testing.T) {
		c, err := connect(broker, "a", user("a"), token(t, "a", a.Secondary, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		c.Disconnect(0)
	})

	ca := connectDevice(t, n, a)
	t.Run("subscribe to another device's topics", func(t *testing.T) {
		for _, f := range []string{"devices/b/messages/devicebound/#", "devices/b/messages/events/#", "#", "devices/+/messages/events/#", "$iothub/#"} {
			tok := ca.Subscribe(f, 1, nil)
			must(t, tok)
			if code := tok.(*paho.SubscribeToken).Result()[f]; code < 0x80 {
				t.Errorf("subscription %s granted (0x%x)", f, code)
			}
		}
	})
	t.Run("publish to another device's telemetry", func(t *testing.T) {
		ca.Publish("devices/b/messages/events/", 0, false, `{"x":1}`).Wait()
		// A QoS 0 publish has no answer; a QoS 1 one on a's own topic
		// after it proves the broker processed (and dropped) the first.
		must(t, ca.Publish("devices/a/messages/events/", 1, false, `{"x":2}`))
		var hist struct{ Items []any }
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/b/telemetry", nil, 200), &hist)
		if len(hist.Items) != 0 {
			t.Fatal("a wrote b's telemetry")
		}
	})
	t.Run("machine to machine read needs a grant", func(t *testing.T) {
		cb := connectDevice(t, n, b)
		api.MustDo(t, "PUT", "/api/v1/devices/b/grants/a", nil, 200)
		box := &inbox{}
		subscribe(t, ca, box, "devices/b/messages/events/#")
		must(t, cb.Publish("devices/b/messages/events/", 1, false, `{"speed":7}`))
		box.wait(t, "granted live telemetry", topicHas("devices/b/messages/events/"))
		api.MustDo(t, "DELETE", "/api/v1/devices/b/grants/a", nil, 200)
		api.MustDo(t, "DELETE", "/api/v1/devices/b/grants/a", nil, 404)
	})
	t.Run("gateway speaks for its children only", func(t *testing.T) {
		cg := connectDevice(t, n, gw)
		must(t, cg.Publish("devices/child/messages/events/", 1, false, `{"t":1}`))
		if twinOf(t, api, "child").Telemetry["t"]["value"] != 1.0 {
			t.Fatal("gateway telemetry for its child not stored")
		}
		box := &inbox{}
		subscribe(t, cg, box, "devices/child/messages/devicebound/#")
		tok := cg.Subscribe("devices/a/messages/devicebound/#", 1, nil)
		must(t, tok)
		if tok.(*paho.SubscribeToken).Result()["devices/a/messages/devicebound/#"] < 0x80 {
			t.Fatal("gateway subscribed to a non-child")
		}
		// Issue 12: not for a child that was disabled.
		api.MustDo(t, "PATCH", "/api/v1/devices/child", `{"status":"disabled"}`, 200)
		cg.Publish("devices/child/messages/events/", 1, false, `{"t":2}`).WaitTimeout(2 * time.Second)
		time.Sleep(300 * time.Millisecond)
		if v := twinOf(t, api, "child").Telemetry["t"]["value"]; v != 1.0 {
			t.Fatalf("gateway telemetry for a disabled child stored (t = %v)", v)
		}
	})
}
