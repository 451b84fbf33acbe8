package node

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

func wsRead(t *testing.T, c *websocket.Conn, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = c.SetReadDeadline(deadline)
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("websocket read: %v", err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		if match(m) {
			return m
		}
	}
}

func TestWebSocketEndToEnd(t *testing.T) {
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201)
	api.MustDo(t, "PUT", "/api/v1/entities/r1", `{"kind":"room","parent":"b1"}`, 201)
	d := register(t, api, "d1", `{"parent":"r1"}`)

	wsURL := "ws://" + n.Addr("http") + "/api/v1/ws"
	if _, res, err := websocket.DefaultDialer.Dial(wsURL, nil); err == nil || res.StatusCode != 401 {
		t.Fatalf("websocket without a token: %v", err)
	}
	c, _, err := websocket.DefaultDialer.Dial(wsURL+"?access_token="+url.QueryEscape(n.Token), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sendWS := func(frame string) {
		if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	sendWS(`{"id":1,"op":"subscribe","entity":"b1","subtree":true}`)
	wsRead(t, c, func(m map[string]any) bool { return m["id"] == 1.0 && m["ok"] == true })

	dev := connectDevice(t, n, d)
	box := &inbox{}
	subscribe(t, dev, box, "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#")
	wsRead(t, c, func(m map[string]any) bool { return m["type"] == "connection" && m["entity"] == "d1" })

	start := time.Now()
	must(t, dev.Publish("devices/d1/messages/events/", 1, false, `{"temperature":23.5}`))
	ev := wsRead(t, c, func(m map[string]any) bool { return m["type"] == "telemetry" && m["entity"] == "d1" })
	if pts := ev["data"].(map[string]any)["points"].(map[string]any); pts["temperature"] != 23.5 {
		t.Fatalf("telemetry event %v", ev)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("telemetry event took %v", time.Since(start))
	}
	wsRead(t, c, func(m map[string]any) bool { return m["type"] == "rollup" && m["entity"] == "r1" })

	sendWS(`{"id":2,"op":"get","entity":"d1"}`)
	got := wsRead(t, c, func(m map[string]any) bool { return m["id"] == 2.0 })
	if got["ok"] != true || got["twin"].(map[string]any)["id"] != "d1" {
		t.Fatalf("get %v", got)
	}
	sendWS(`{"id":3,"op":"patch","entity":"d1","desired":{"setpoint":19}}`)
	if r := wsRead(t, c, func(m map[string]any) bool { return m["id"] == 3.0 }); r["ok"] != true {
		t.Fatalf("patch %v", r)
	}
	box.wait(t, "desired at the device", topicHas("$iothub/twin/PATCH/properties/desired/"))
	go func() {
		m := box.wait(t, "method at the device", topicHas("$iothub/methods/POST/blink/"))
		u, _ := url.Parse("x://h/" + strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/blink/"))
		dev.Publish("$iothub/methods/res/202/?$rid="+u.Query().Get("$rid"), 0, false, `{"blinking":true}`).Wait()
	}()
	sendWS(`{"id":4,"op":"invoke","entity":"d1","method":"blink","payload":{"times":3},"timeoutSeconds":10}`)
	if r := wsRead(t, c, func(m map[string]any) bool { return m["id"] == 4.0 }); r["ok"] != true || r["status"] != 202.0 {
		t.Fatalf("invoke %v", r)
	}
	sendWS(`{"id":5,"op":"get","entity":"ghost"}`)
	if r := wsRead(t, c, func(m map[string]any) bool { return m["id"] == 5.0 }); r["error"].(map[string]any)["code"] != "not_found" {
		t.Fatalf("get unknown %v", r)
	}
}
