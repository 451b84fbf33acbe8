// Package kinds registers the built-in entity kinds — device, gateway, site,
// building, floor, room — with plugin.Register, exactly as a third-party
// plugin would. Link it in with a blank import:
//
//	import _ "github.com/twinmesh/twinmesh/actors/kinds"
package kinds

import "github.com/twinmesh/twinmesh/actors/plugin"

// Device is a connected thing: it holds an identity, connects over MQTT or
// AMQP and counts as a device in its ancestors' rollups.
type Device struct{}

// Info implements plugin.Kind.
func (Device) Info() plugin.Info { return plugin.Info{Name: "device", Traits: plugin.Device} }

// Gateway is a device that speaks for the devices connectedVia it; its
// rollup counts them.
type Gateway struct{}

// Info implements plugin.Kind.
func (Gateway) Info() plugin.Info {
	return plugin.Info{Name: "gateway", Traits: plugin.Device | plugin.Rollup}
}

// Space is a place in the topology (site, building, floor, room) that keeps
// a rollup of everything it contains.
type Space struct{ Name string }

// Info implements plugin.Kind.
func (s Space) Info() plugin.Info { return plugin.Info{Name: s.Name, Traits: plugin.Rollup} }

func init() {
	plugin.Register(Device{})
	plugin.Register(Gateway{})
	for _, k := range []string{"site", "building", "floor", "room"} {
		plugin.Register(Space{Name: k})
	}
}

var (
	_ plugin.Kind = Device{}
	_ plugin.Kind = Gateway{}
	_ plugin.Kind = Space{}
)
