package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// TestTimerFiresAfterSIGKILL is CONTRACT section 7 end to end: a
// thermostat that reads 18° while set to 21 turns its heater on; the room
// then warms to 25° and the node is SIGKILLed before the next tick is due;
// restarted on the same data folder with nothing sent to the thermostat's
// grain, the durable timer must fire within interval + 2 s and turn the
// heater off. Only a tick can turn it off, and none was due before the
// kill, so the check passes only if the timer fires after the restart.
// Then the same with a tick that falls due while the node is down.
func TestTimerFiresAfterSIGKILL(t *testing.T) {
	bin := testutil.Build(t, "./examples/thermostat")
	data := t.TempDir()
	n := testutil.StartBinary(t, bin, data)
	c := n.Client()
	var dev struct{ PrimaryKey string }
	if err := json.Unmarshal(c.MustDo(t, "PUT", "/api/v1/devices/t1", `{"kind":"thermostat"}`, 201), &dev); err != nil {
		t.Fatal(err)
	}
	mq := connectDevice(t, n, "t1", dev.PrimaryKey)
	publish(t, mq, "t1", `{"temperature":18}`)
	c.MustDo(t, "POST", "/api/v1/entities/t1/ops/configure", `{"setpoint":21,"interval":"1s"}`, 200)
	testutil.Eventually(t, 5*time.Second, "desired.heater on", func() bool { return heater(t, c) == "on" })

	// Move the next tick 5 s away, then warm the room: from here only a
	// tick turns the heater off.
	const interval = 5 * time.Second
	c.MustDo(t, "POST", "/api/v1/entities/t1/ops/configure", `{"setpoint":21,"interval":"5s"}`, 200)
	due := time.Now().Add(interval)
	publish(t, mq, "t1", `{"temperature":25}`) // QoS 1: acknowledged once durable
	if h := heater(t, c); h != "on" {
		t.Fatalf("heater %v before the kill: a tick came too early", h)
	}
	n.Kill()
	killed := time.Now()
	if !killed.Before(due) {
		t.Fatalf("the kill came %v after the tick was due: the test proves nothing", killed.Sub(due))
	}

	n2 := testutil.StartBinary(t, bin, data)
	back := time.Now()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+n2.Addr("http")+"/api/v1/ws?access_token="+url.QueryEscape(n2.Token), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// A subscription is kept by the hub; it sends nothing to the grain.
	if err := ws.WriteJSON(map[string]any{"id": 1, "op": "subscribe", "entity": "t1", "events": []string{"twin"}}); err != nil {
		t.Fatal(err)
	}
	deadline := back.Add(interval + 2*time.Second)
	if due.After(back) {
		deadline = due.Add(2 * time.Second)
	}
	for off := false; !off; {
		_ = ws.SetReadDeadline(deadline)
		var m struct {
			ID   int             `json:"id"`
			OK   bool            `json:"ok"`
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("no tick turned the heater off within %v of the restart (%v):\n%s", interval+2*time.Second, err, n2.Logs())
		}
		if m.ID == 1 && !m.OK {
			t.Fatalf("subscribe refused: %+v", m)
		}
		var d struct {
			Heater  string `json:"heater"`
			Desired struct {
				Heater string `json:"heater"`
			} `json:"desired"`
		}
		_ = json.Unmarshal(m.Data, &d)
		off = m.Type == "twin" && (d.Heater == "off" || d.Desired.Heater == "off")
	}
	t.Logf("tick after restart: %v after the node was back, due %v after it", time.Since(back).Round(time.Millisecond), due.Sub(back).Round(time.Millisecond))

	c2 := n2.Client()
	if h := heater(t, c2); h != "off" {
		t.Fatalf("heater %v after the tick", h)
	}
	st := status(t, c2)
	if st.Setpoint != 21 || st.Interval != "5s" || !st.LastTick.After(killed) {
		t.Fatalf("status %+v: want the settings kept and a tick after the kill at %v", st, killed)
	}
	c2.MustDo(t, "POST", "/api/v1/entities/t1/ops/reboot", nil, 404)
	c2.MustDo(t, "POST", "/api/v1/entities/t1/ops/configure", `{"setpoint":21,"interval":"soon"}`, 400)

	// A tick that falls due while the node is down fires once it is back.
	// The room cools to 18 and the node dies before the next tick; it
	// stays down past the tick's due time, and after the restart nothing
	// is sent to the grain until interval + 2 s have passed: by then a
	// tick of the new process must have turned the heater on.
	publish(t, connectDevice(t, n2, "t1", dev.PrimaryKey), "t1", `{"temperature":18}`)
	n2.Kill()
	killed = time.Now()
	time.Sleep(time.Until(st.LastTick.Add(interval + time.Second))) // overdue while down
	n3 := testutil.StartBinary(t, bin, data)
	deadline = time.Now().Add(interval + 2*time.Second)
	time.Sleep(time.Until(deadline))
	c3 := n3.Client()
	st = status(t, c3)
	if !st.LastTick.After(killed) || st.LastTick.After(deadline) {
		t.Fatalf("last tick at %v: want one after the kill at %v and by %v", st.LastTick, killed, deadline)
	}
	if h := heater(t, c3); h != "on" {
		t.Fatalf("heater %v after an overdue tick at 18°", h)
	}
}

type statusResult struct {
	Setpoint float64   `json:"setpoint"`
	Interval string    `json:"interval"`
	LastTick time.Time `json:"lastTick"`
}

func status(t *testing.T, c *testutil.Client) statusResult {
	t.Helper()
	var st struct{ Result statusResult }
	if err := json.Unmarshal(c.MustDo(t, "POST", "/api/v1/entities/t1/ops/status", nil, 200), &st); err != nil {
		t.Fatal(err)
	}
	return st.Result
}

func heater(t *testing.T, c *testutil.Client) any {
	t.Helper()
	var tw struct{ Desired map[string]any }
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins/t1", nil, 200), &tw); err != nil {
		t.Fatal(err)
	}
	return tw.Desired["heater"]
}

func connectDevice(t *testing.T, n *testutil.Node, id, key string) paho.Client {
	t.Helper()
	tok, err := sas.Sign("hub.test/devices/"+id, key, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker("tcp://" + n.Addr("mqtt")).SetClientID(id).
		SetUsername("hub.test/" + id + "/?api-version=2021-04-12").SetPassword(tok).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	mq := paho.NewClient(o)
	if ct := mq.Connect(); !ct.WaitTimeout(10*time.Second) || ct.Error() != nil {
		t.Fatalf("mqtt connect: %v", ct.Error())
	}
	t.Cleanup(func() { mq.Disconnect(50) })
	return mq
}

func publish(t *testing.T, mq paho.Client, id, payload string) {
	t.Helper()
	pt := mq.Publish(fmt.Sprintf("devices/%s/messages/events/", id), 1, false, payload)
	if !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
		t.Fatalf("publish %s: %v", payload, pt.Error())
	}
}
