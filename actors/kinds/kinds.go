// Package kinds registers the built-in entity kinds — device, gateway, site,
// building, floor, room — with actors.Register, exactly as a third-party
// plugin would. Link it in with a blank import:
//
//	import _ "github.com/twinmesh/twinmesh/actors/kinds"
package kinds

import "github.com/twinmesh/twinmesh/actors"

// Device is a connected thing: it holds an identity, connects over MQTT or
// AMQP and counts as a device in its ancestors' rollups.
type Device struct{}

// Kind implements actors.Behavior.
func (Device) Kind() string { return "device" }

// Connectable implements actors.Connectable.
func (Device) Connectable() bool { return true }

// Gateway is a device that speaks for the devices connectedVia it; its rollup
// counts them.
type Gateway struct{}

// Kind implements actors.Behavior.
func (Gateway) Kind() string { return "gateway" }

// Connectable implements actors.Connectable.
func (Gateway) Connectable() bool { return true }

// Aggregating implements actors.Aggregating.
func (Gateway) Aggregating() bool { return true }

// Space is a place in the topology (site, building, floor, room) that keeps a
// rollup of everything it contains.
type Space struct{ Name string }

// Kind implements actors.Behavior.
func (s Space) Kind() string { return s.Name }

// Aggregating implements actors.Aggregating.
func (Space) Aggregating() bool { return true }

func init() {
	actors.Register(Device{})
	actors.Register(Gateway{})
	for _, k := range []string{"site", "building", "floor", "room"} {
		actors.Register(Space{Name: k})
	}
}

var (
	_ actors.Connectable = Device{}
	_ actors.Connectable = Gateway{}
	_ actors.Aggregating = Gateway{}
	_ actors.Aggregating = Space{}
)
