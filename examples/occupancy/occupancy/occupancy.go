// Package occupancy is an example twinmesh plugin whose entities talk with
// messages (Ctx.Send): three kinds that keep a room's HVAC in "comfort"
// mode while anyone is in the room and in "eco" mode otherwise.
//
//   - occupancy-sensor (a device): each telemetry message with a boolean
//     "occupied" point is passed on to the sensor's parent room.
//   - occupancy-room (keeps a rollup): holds the set of occupied sensors in
//     its private state and, on every report, tells the HVAC named by its
//     tag "hvac" the mode it wants.
//   - hvac (a device): sets its desired.mode from what its parent says.
//
// Messages are delivered at most once, so each carries a state, not a
// change: the next report repairs a lost one.
package occupancy

import (
	"encoding/json"

	"github.com/twinmesh/twinmesh/actors/plugin"
)

// The kinds.
const (
	Sensor = "occupancy-sensor"
	Room   = "occupancy-room"
	HVAC   = "hvac"
)

// SensorKind passes occupancy on to the room.
type SensorKind struct{}

// Info implements plugin.Kind.
func (SensorKind) Info() plugin.Info { return plugin.Info{Name: Sensor, Traits: plugin.Device} }

// OnTelemetry implements plugin.TelemetryHandler.
func (SensorKind) OnTelemetry(ctx *plugin.Ctx, points map[string]any) (map[string]any, error) {
	if occupied, ok := points["occupied"].(bool); ok && ctx.Parent() != "" {
		return points, ctx.SendParent("occupancy", occupied)
	}
	return points, nil
}

// RoomState is a room's private state.
type RoomState struct {
	Occupied map[string]bool `json:"occupied"` // by sensor; only true members
}

// RoomKind counts occupied sensors and drives the HVAC.
type RoomKind struct{}

// Info implements plugin.Kind.
func (RoomKind) Info() plugin.Info { return plugin.Info{Name: Room, Traits: plugin.Rollup} }

// OnMessage implements plugin.MessageHandler.
func (RoomKind) OnMessage(ctx *plugin.Ctx, from, name string, payload json.RawMessage) error {
	var occupied bool
	if name != "occupancy" || json.Unmarshal(payload, &occupied) != nil {
		return nil
	}
	var st RoomState
	if _, err := ctx.LoadState(&st); err != nil {
		return err
	}
	if st.Occupied == nil {
		st.Occupied = map[string]bool{}
	}
	if occupied {
		st.Occupied[from] = true
	} else {
		delete(st.Occupied, from)
	}
	if err := ctx.SetState(st); err != nil {
		return err
	}
	mode := "eco"
	if len(st.Occupied) > 0 {
		mode = "comfort"
	}
	if hvac, _ := ctx.Tags()["hvac"].(string); hvac != "" {
		return ctx.Send(hvac, "mode", mode)
	}
	return nil
}

// HVACKind takes its mode from its parent room.
type HVACKind struct{}

// Info implements plugin.Kind.
func (HVACKind) Info() plugin.Info { return plugin.Info{Name: HVAC, Traits: plugin.Device} }

// OnMessage implements plugin.MessageHandler.
func (HVACKind) OnMessage(ctx *plugin.Ctx, from, name string, payload json.RawMessage) error {
	var mode string
	if name != "mode" || from != ctx.Parent() || json.Unmarshal(payload, &mode) != nil {
		return nil
	}
	return ctx.PatchDesired(map[string]string{"mode": mode})
}

func init() {
	plugin.Register(SensorKind{})
	plugin.Register(RoomKind{})
	plugin.Register(HVACKind{})
}

var (
	_ plugin.TelemetryHandler = SensorKind{}
	_ plugin.MessageHandler   = RoomKind{}
	_ plugin.MessageHandler   = HVACKind{}
)
