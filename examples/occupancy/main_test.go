package main

import (
	"encoding/json"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// TestSensorsDriveHVAC builds this example and checks, on a real node,
// that a sensor's telemetry reaches its room and the room's message
// reaches the HVAC: two hops between grains.
func TestSensorsDriveHVAC(t *testing.T) {
	n := testutil.StartBinary(t, testutil.Build(t, "./examples/occupancy"), t.TempDir())
	c := n.Client()
	c.MustDo(t, "PUT", "/api/v1/entities/r1", `{"kind":"occupancy-room","tags":{"hvac":"ac1"}}`, 201)
	c.MustDo(t, "PUT", "/api/v1/devices/ac1", `{"kind":"hvac","parent":"r1"}`, 201)
	var s1 struct{ PrimaryKey string }
	if err := json.Unmarshal(c.MustDo(t, "PUT", "/api/v1/devices/s1", `{"kind":"occupancy-sensor","parent":"r1"}`, 201), &s1); err != nil {
		t.Fatal(err)
	}
	mode := func() any {
		var tw struct{ Desired map[string]any }
		_ = json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins/ac1", nil, 200), &tw)
		return tw.Desired["mode"]
	}
	mq := connect(t, n.Addr("mqtt"), "s1", s1.PrimaryKey)
	for _, step := range []struct{ payload, mode string }{{`{"occupied":true}`, "comfort"}, {`{"occupied":false}`, "eco"}} {
		if pt := mq.Publish("devices/s1/messages/events/", 1, false, step.payload); !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
			t.Fatalf("publish: %v", pt.Error())
		}
		testutil.Eventually(t, 10*time.Second, "ac1 desired.mode "+step.mode, func() bool { return mode() == step.mode })
	}
}

func connect(t *testing.T, addr, id, key string) paho.Client {
	t.Helper()
	tok, err := sas.Sign("hub.test/devices/"+id, key, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	mq := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetUsername("hub.test/" + id + "/?api-version=2021-04-12").SetPassword(tok).SetAutoReconnect(false))
	if ct := mq.Connect(); !ct.WaitTimeout(10*time.Second) || ct.Error() != nil {
		t.Fatalf("mqtt connect: %v", ct.Error())
	}
	t.Cleanup(func() { mq.Disconnect(50) })
	return mq
}
