package occupancy_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/twinmesh/twinmesh/actors/plugin/plugintest"
	"github.com/twinmesh/twinmesh/examples/occupancy/occupancy"
)

// building is a room r1 whose HVAC is ac1, with sensors s1 and s2.
func building(t *testing.T, roomTags map[string]any) *plugintest.Harness {
	t.Helper()
	h := plugintest.New(t, occupancy.SensorKind{}, occupancy.RoomKind{}, occupancy.HVACKind{})
	if err := h.Put("r1", plugintest.Entity{Kind: occupancy.Room, Tags: roomTags}); err != nil {
		t.Fatal(err)
	}
	h.Create("ac1", occupancy.HVAC, "r1")
	h.Create("s1", occupancy.Sensor, "r1")
	h.Create("s2", occupancy.Sensor, "r1")
	return h
}

func report(t *testing.T, h *plugintest.Harness, sensor string, points map[string]any) {
	t.Helper()
	if err := h.Telemetry(sensor, points); err != nil {
		t.Fatal(err)
	}
}

func occupied(h *plugintest.Harness) []string {
	var st occupancy.RoomState
	h.LoadState("r1", &st)
	return slices.Sorted(maps.Keys(st.Occupied))
}

func TestRoomDrivesHVAC(t *testing.T) {
	steps := []struct {
		sensor   string
		occupied bool
		count    int
		mode     string
	}{
		{"s1", true, 1, "comfort"},
		{"s2", true, 2, "comfort"},
		{"s1", true, 2, "comfort"}, // a repeated report counts once
		{"s1", false, 1, "comfort"},
		{"s2", false, 0, "eco"},
		{"s2", false, 0, "eco"},
		{"s2", true, 1, "comfort"},
	}
	h := building(t, map[string]any{"hvac": "ac1"})
	for i, s := range steps {
		report(t, h, s.sensor, map[string]any{"occupied": s.occupied, "lux": 300})
		if got := occupied(h); len(got) != s.count {
			t.Fatalf("step %d (%s occupied=%v): occupied sensors %v, want %d", i, s.sensor, s.occupied, got, s.count)
		}
		if got := h.Twin("ac1").Desired["mode"]; got != s.mode {
			t.Fatalf("step %d (%s occupied=%v): hvac mode %v, want %s", i, s.sensor, s.occupied, got, s.mode)
		}
	}
	if tm := h.Twin("s2").Telemetry; tm["occupied"].Value != true || tm["lux"].Value != 300.0 {
		t.Fatalf("the sensor's telemetry is stored as sent: %v", tm)
	}
}

func TestOtherReportsSendNothing(t *testing.T) {
	h := building(t, map[string]any{"hvac": "ac1"})
	report(t, h, "s1", map[string]any{"lux": 300})
	report(t, h, "s1", map[string]any{"occupied": "yes"}) // not a boolean
	if m := h.Messages(); len(m) != 0 {
		t.Fatalf("messages %+v", m)
	}
}

func TestRoomWithoutHVACOnlyCounts(t *testing.T) {
	h := building(t, nil)
	report(t, h, "s1", map[string]any{"occupied": true})
	if got := occupied(h); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("occupied %v", got)
	}
	if m := h.Messages(); len(m) != 1 || m[0].To != "r1" {
		t.Fatalf("messages %+v: only the sensor's report", m)
	}
	if mode := h.Twin("ac1").Desired["mode"]; mode != nil {
		t.Fatalf("hvac mode %v", mode)
	}
}

func TestHVACTakesModeOnlyFromItsParent(t *testing.T) {
	h := building(t, map[string]any{"hvac": "ac1"})
	h.Send("s1", "ac1", "mode", "comfort")
	h.Send("r1", "ac1", "setpoint", 21)
	if d := h.Twin("ac1").Desired; len(d) != 0 {
		t.Fatalf("desired %v from a stranger", d)
	}
	h.Send("r1", "ac1", "mode", "eco")
	if d := h.Twin("ac1").Desired; d["mode"] != "eco" {
		t.Fatalf("desired %v from the parent", d)
	}
}

func TestSensorWithoutRoom(t *testing.T) {
	h := plugintest.New(t, occupancy.SensorKind{})
	h.Create("s9", occupancy.Sensor, "")
	report(t, h, "s9", map[string]any{"occupied": true})
	if m := h.Messages(); len(m) != 0 {
		t.Fatalf("messages %+v", m)
	}
}

func TestOccupancySurvivesRestart(t *testing.T) {
	h := building(t, map[string]any{"hvac": "ac1"})
	report(t, h, "s1", map[string]any{"occupied": true})
	h.Restart()
	report(t, h, "s2", map[string]any{"occupied": true})
	report(t, h, "s2", map[string]any{"occupied": false})
	if got := occupied(h); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("occupied %v after a restart", got)
	}
	if mode := h.Twin("ac1").Desired["mode"]; mode != "comfort" {
		t.Fatalf("hvac mode %v", mode)
	}
}
