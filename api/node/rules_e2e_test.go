package node

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestRuleAlertAndCommandEndToEnd: a real device publishes temperatures, a
// rule on its room's rollup raises an alert visible in the API and sends
// a direct method to a fan, another real MQTT device; the alert is
// acknowledged and survives a restart, and so does the room's rollup.
func TestRuleAlertAndCommandEndToEnd(t *testing.T) {
	data := t.TempDir()
	n := testutil.Start(t, data)
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201)
	api.MustDo(t, "PUT", "/api/v1/entities/r1", `{"kind":"room","parent":"b1"}`, 201)
	sensor := register(t, api, "sensor-1", `{"parent":"r1"}`)
	fan := register(t, api, "fan-1", `{"parent":"r1"}`)

	fanClient := connectDevice(t, n, fan)
	fanBox := &inbox{}
	subscribe(t, fanClient, fanBox, "$iothub/methods/POST/#")
	go func() {
		m := fanBox.wait(t, "cool command", topicHas("$iothub/methods/POST/cool/"))
		u, _ := url.Parse("x://h/" + strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/cool/"))
		fanClient.Publish("$iothub/methods/res/200/?$rid="+u.Query().Get("$rid"), 0, false, `{"speed":"high"}`).Wait()
	}()

	rule := `{"scope":{"kind":"room"},"when":"rollup.temperature.max > 28",
	  "then":[{"alert":{"severity":"critical","message":"room too hot"}},
	          {"command":{"target":"fan-1","method":"cool","payload":{"level":3},"timeoutSeconds":10}}]}`
	api.MustDo(t, "PUT", "/api/v1/rules/hot-room", rule, 201)
	api.MustDo(t, "PUT", "/api/v1/rules/broken", `{"when":"telemetry.temperature >>> 1","then":[{"alert":{"severity":"major"}}]}`, 400)

	sc := connectDevice(t, n, sensor)
	for _, v := range []string{"22.5", "24", "29.5"} {
		must(t, sc.Publish("devices/sensor-1/messages/events/", 1, false, `{"temperature":`+v+`}`))
	}
	var alerts struct {
		Items []struct{ ID, State, Severity, Entity string }
	}
	testutil.Eventually(t, 5*time.Second, "active alert in the API", func() bool {
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/alerts?state=active&under=b1", nil, 200), &alerts)
		return len(alerts.Items) == 1
	})
	if a := alerts.Items[0]; a.ID != "hot-room/r1" || a.Severity != "critical" || a.Entity != "r1" {
		t.Fatalf("alert %+v", a)
	}
	fanBox.wait(t, "command at the fan", topicHas("$iothub/methods/POST/cool/"))
	api.MustDo(t, "POST", "/api/v1/alerts/hot-room%2Fr1/ack", nil, 200)
	api.MustDo(t, "POST", "/api/v1/alerts/hot-room/r1/ack", nil, 409) // already acknowledged
	api.MustDo(t, "POST", "/api/v1/alerts/nope/r1/ack", nil, 404)
	testutil.Eventually(t, 5*time.Second, "building rollup of the alert", func() bool {
		return twinOf(t, api, "b1").Rollup["worstSeverity"] == "critical"
	})
	before := twinOf(t, api, "b1").Rollup

	n.Stop()
	n2 := testutil.Start(t, data)
	var a struct{ State string }
	_ = json.Unmarshal(n2.Client().MustDo(t, "GET", "/api/v1/alerts/hot-room/r1", nil, 200), &a)
	if a.State != "acknowledged" {
		t.Fatalf("after restart the alert is %q", a.State)
	}
	after := twinOf(t, n2.Client(), "b1").Rollup
	// Stopping the node ended the device sessions: nothing is connected now.
	if after["connected"] != 0.0 {
		t.Fatalf("connected after restart = %v", after["connected"])
	}
	before["connected"] = 0.0
	bb, _ := json.Marshal(before)
	ab, _ := json.Marshal(after)
	if string(bb) != string(ab) {
		t.Fatalf("building rollup after restart\n%s\nbefore\n%s", ab, bb)
	}
	var list struct{ Items []json.RawMessage }
	_ = json.Unmarshal(n2.Client().MustDo(t, "GET", "/api/v1/rules", nil, 200), &list)
	if len(list.Items) != 1 {
		t.Fatalf("rules after restart: %d", len(list.Items))
	}
}
