// Package thermostat is twinmesh's reference plugin (CONTRACT section 7): a
// device kind "thermostat" with two operations and a durable timer.
//
//   - configure {"setpoint":21,"interval":"1s"} stores the settings in the
//     entity's private state and (re)starts the timer "tick".
//   - status answers {"setpoint":21,"interval":"1s","lastTick":"<RFC 3339>"}.
//   - On every tick, desired.heater becomes "on" when the last telemetry
//     temperature is below setpoint−0.5 and "off" when it is above
//     setpoint+0.5 (in between it stays as it is), and the timer is set
//     again for interval. The timer survives passivation, restarts and
//     moves to another member.
//
// It registers itself in init; link it with a blank import (see ../main.go).
package thermostat

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/plugin"
)

// Kind is the entity kind; Tick the name of its durable timer.
const (
	Kind = "thermostat"
	Tick = "tick"
)

// MinInterval is the shortest interval configure accepts.
const MinInterval = time.Second

// Thermostat is the kind.
type Thermostat struct{}

// Status is the private state and the result of status and configure.
type Status struct {
	Setpoint float64    `json:"setpoint"`
	Interval string     `json:"interval"`
	LastTick *time.Time `json:"lastTick"` // nil until the first tick
}

// Info implements plugin.Kind.
func (Thermostat) Info() plugin.Info { return plugin.Info{Name: Kind, Traits: plugin.Device} }

// Operation implements plugin.Operator: configure and status.
func (Thermostat) Operation(ctx *plugin.Ctx, name string, args json.RawMessage) (any, error) {
	var st Status
	configured, err := ctx.LoadState(&st)
	if err != nil {
		return nil, err
	}
	switch name {
	case "status":
		if !configured {
			return nil, errcode.New(errcode.Conflict, "thermostat %s is not configured yet", ctx.ID())
		}
		return st, nil
	case "configure":
		var in struct {
			Setpoint *float64 `json:"setpoint"`
			Interval string   `json:"interval"`
		}
		dec := json.NewDecoder(bytes.NewReader(args))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil || in.Setpoint == nil {
			return nil, errcode.New(errcode.BadRequest, `configure takes {"setpoint":<number>,"interval":"<duration>"}`)
		}
		every, err := time.ParseDuration(in.Interval)
		if err != nil || every < MinInterval {
			return nil, errcode.New(errcode.BadRequest, "interval %q: want a duration of at least %v", in.Interval, MinInterval)
		}
		st.Setpoint, st.Interval = *in.Setpoint, in.Interval
		ctx.After(Tick, every)
		return st, ctx.SetState(st)
	}
	return nil, plugin.UnknownOp(Kind, name)
}

// OnTimer implements plugin.TimerHandler: one tick of the control loop.
func (Thermostat) OnTimer(ctx *plugin.Ctx, name string) error {
	var st Status
	if ok, err := ctx.LoadState(&st); !ok || err != nil || name != Tick {
		return err
	}
	now := ctx.Now()
	st.LastTick = &now
	every, _ := time.ParseDuration(st.Interval)
	ctx.After(Tick, every) // first, so a failed patch does not stop the loop
	if err := ctx.SetState(st); err != nil {
		return err
	}
	v, _, _ := ctx.Telemetry("temperature")
	temp, ok := v.(float64)
	switch {
	case !ok:
		return nil
	case temp < st.Setpoint-0.5:
		return ctx.PatchDesired(map[string]string{"heater": "on"})
	case temp > st.Setpoint+0.5:
		return ctx.PatchDesired(map[string]string{"heater": "off"})
	}
	return nil
}

func init() { plugin.Register(Thermostat{}) }

var (
	_ plugin.Operator     = Thermostat{}
	_ plugin.TimerHandler = Thermostat{}
)
