// Package filter is an example twinmesh plugin that only looks at
// telemetry: a device kind, "comfort-sensor", that refuses impossible
// temperatures and derives a "comfort" point from temperature and
// humidity. It registers itself in init; link it into a binary with a
// blank import (see ../main.go). examples/thermostat shows the rest of the
// plugin API: operations, durable timers and private state.
package filter

import (
	"fmt"
	"maps"

	"github.com/twinmesh/twinmesh/actors/plugin"
)

// Kind is the entity kind this plugin adds.
const Kind = "comfort-sensor"

// Sensor is the kind: one required method plus one optional capability.
type Sensor struct{}

// Info implements plugin.Kind: sensors are devices (they hold an identity,
// connect over MQTT and count as devices in rollups).
func (Sensor) Info() plugin.Info { return plugin.Info{Name: Kind, Traits: plugin.Device} }

// OnTelemetry implements plugin.TelemetryHandler: it runs before a message
// is stored; an error refuses the message.
func (Sensor) OnTelemetry(_ *plugin.Ctx, points map[string]any) (map[string]any, error) {
	temp, ok := points["temperature"].(float64)
	if !ok {
		return points, nil
	}
	if temp < -60 || temp > 100 {
		return nil, fmt.Errorf("temperature %.1f is outside what a comfort sensor can measure", temp)
	}
	out := maps.Clone(points)
	out["comfort"] = Comfort(temp, points["humidity"])
	return out, nil
}

// Comfort grades a reading: "cold", "comfortable", "muggy" or "hot".
func Comfort(temp float64, humidity any) string {
	h, _ := humidity.(float64)
	switch {
	case temp < 19:
		return "cold"
	case temp > 26:
		return "hot"
	case h > 65:
		return "muggy"
	default:
		return "comfortable"
	}
}

func init() { plugin.Register(Sensor{}) }

var _ plugin.TelemetryHandler = Sensor{}
