package node

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// A connected device whose grain is idle passivates its grain while the
// MQTT session stays open (the session does not pin it, issue 19): the
// node then holds the session and no grain. Over the same session the
// device still works: its telemetry is stored (the grain comes back for
// it), a desired patch made over REST reaches it, and its twin still says
// it is connected. Then the grain passivates again.
func TestIdleConnectedDeviceGrainPassivates(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--idle-timeout", "1s")
	c := n.Client()
	d := register(t, c, "idle-1", "")
	dev := connectDevice(t, n, d)
	var box inbox
	subscribe(t, dev, &box, "$iothub/twin/PATCH/properties/desired/#")
	must(t, dev.Publish("devices/idle-1/messages/events/", 1, false, `{"temperature":20.5}`))

	active := `twinmesh_grains_active\{kind="device"\}`
	activations := `twinmesh_grain_activations_total\{kind="device"\}`
	passivated := func(what string) {
		t.Helper()
		testutil.Eventually(t, 15*time.Second, what, func() bool { return metric(t, c, active) == 0 })
		if s := metric(t, c, "twinmesh_mqtt_connections"); s != 1 {
			t.Fatalf("%s: %v MQTT sessions, want the device's one", what, s)
		}
	}
	passivated("the idle device's grain passivates while its session is open")
	before := metric(t, c, activations)

	must(t, dev.Publish("devices/idle-1/messages/events/", 1, false, `{"temperature":21.5}`))
	c.MustDo(t, "PATCH", "/api/v1/twins/idle-1", `{"desired":{"mode":"eco"}}`, 200)
	m := box.wait(t, "the desired patch over the open session", topicHas("$iothub/twin/PATCH/properties/desired/"))
	var patch map[string]any
	if err := json.Unmarshal(m.Payload(), &patch); err != nil || patch["mode"] != "eco" || !strings.Contains(m.Topic(), "$version=") {
		t.Fatalf("desired notification %s: %s (%v)", m.Topic(), m.Payload(), err)
	}
	tw := twinOf(t, c, "idle-1")
	if tw.Connection.State != "connected" || tw.Telemetry["temperature"]["value"] != 21.5 || tw.Desired["mode"] != "eco" {
		t.Fatalf("twin after the grain came back: connection %q, telemetry %v, desired %v", tw.Connection.State, tw.Telemetry, tw.Desired)
	}
	if after := metric(t, c, activations); after <= before {
		t.Fatalf("device grain activations %v → %v: the grain was not re-activated", before, after)
	}
	passivated("the grain passivates again")
}
