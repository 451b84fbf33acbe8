// Package thermostat is an example twinmesh plugin: a device kind that
// refuses impossible temperatures and derives a "comfort" point from
// temperature and humidity. It registers itself in init; link it into a
// binary with a blank import (see ../main.go).
package thermostat

import (
	"context"
	"fmt"

	"github.com/twinmesh/twinmesh/actors"
)

// Kind is the entity kind this plugin adds.
const Kind = "thermostat"

// Thermostat implements actors.Behavior plus two optional capabilities.
type Thermostat struct{}

// Kind implements actors.Behavior.
func (Thermostat) Kind() string { return Kind }

// Connectable implements actors.Connectable: thermostats hold an identity,
// connect over MQTT and count as devices in rollups.
func (Thermostat) Connectable() bool { return true }

// FilterTelemetry implements actors.TelemetryFilter.
func (Thermostat) FilterTelemetry(_ context.Context, _ string, points map[string]any) (map[string]any, error) {
	temp, ok := points["temperature"].(float64)
	if !ok {
		return points, nil
	}
	if temp < -60 || temp > 100 {
		return nil, fmt.Errorf("temperature %.1f is outside what a thermostat can measure", temp)
	}
	out := make(map[string]any, len(points)+1)
	for k, v := range points {
		out[k] = v
	}
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

func init() { actors.Register(Thermostat{}) }

var (
	_ actors.Connectable     = Thermostat{}
	_ actors.TelemetryFilter = Thermostat{}
)
