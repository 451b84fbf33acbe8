package node

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// Issue 12, item 6: after a SIGKILL and a restart, a device that was
// connected still showed "connected", and its room rollup.connected = 1,
// for minutes. The restarted node marks the sessions it held disconnected;
// a device that connects again right away stays connected.
func TestRestartMarksOldSessionsDisconnected(t *testing.T) {
	data := t.TempDir()
	n := testutil.Start(t, data)
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/room-1", `{"kind":"room"}`, 201)
	gone := register(t, api, "gone-1", `{"parent":"room-1"}`)
	back := register(t, api, "back-1", `{"parent":"room-1"}`)
	connectDevice(t, n, gone)
	connectDevice(t, n, back)
	state := func(c *testutil.Client, id string) (conn string, rollupConnected float64) {
		var tw struct {
			Connection struct{ State string } `json:"connection"`
			Rollup     struct{ Connected float64 }
		}
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins/"+id, nil, 200), &tw)
		return tw.Connection.State, tw.Rollup.Connected
	}
	testutil.Eventually(t, 10*time.Second, "both connected", func() bool {
		_, rc := state(api, "room-1")
		return rc == 2
	})
	n.Kill()

	n2 := testutil.Start(t, data)
	api2 := n2.Client()
	connectDevice(t, n2, back) // reconnects at once
	testutil.Eventually(t, 15*time.Second, "gone-1 disconnected and the room counting one", func() bool {
		s, _ := state(api2, "gone-1")
		_, rc := state(api2, "room-1")
		return s == "disconnected" && rc == 1
	})
	if s, _ := state(api2, "back-1"); s != "connected" {
		t.Fatalf("a device that reconnected after the restart shows %q", s)
	}
}

// Issue 12, item 7: a device detached from its gateway (PUT without
// connectedVia) stayed "connected via gw" forever, and its room counted it.
func TestDetachedDeviceIsDisconnected(t *testing.T) {
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/room-2", `{"kind":"room"}`, 201)
	gw := register(t, api, "gw-2", `{"kind":"gateway","parent":"room-2"}`)
	register(t, api, "leaf-2", `{"parent":"room-2","connectedVia":"gw-2"}`)
	connectDevice(t, n, gw)
	read := func(id string) (state string, connected float64) {
		var tw struct {
			Connection struct{ State string } `json:"connection"`
			Rollup     struct{ Connected float64 }
		}
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/"+id, nil, 200), &tw)
		return tw.Connection.State, tw.Rollup.Connected
	}
	testutil.Eventually(t, 10*time.Second, "the leaf connected via the gateway, the room counting both", func() bool {
		s, _ := read("leaf-2")
		_, rc := read("room-2")
		return s == "connected" && rc == 2
	})
	api.MustDo(t, "PUT", "/api/v1/entities/leaf-2", `{"kind":"device","parent":"room-2"}`, 200)
	testutil.Eventually(t, 10*time.Second, "the detached leaf disconnected and the room counting one", func() bool {
		s, _ := read("leaf-2")
		_, rc := read("room-2")
		return s == "disconnected" && rc == 1
	})
}
