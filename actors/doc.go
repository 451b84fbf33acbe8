// Package actors hosts every topology entity (device, gateway, room, floor,
// building, and any kind a plugin adds) as a virtual actor: a protoactor
// cluster grain identified by the entity ID. A grain holds the entity's twin
// in memory, persists every accepted change through group commit before it
// answers, rolls device counts up the topology, and publishes change events.
//
// The package has two faces:
//
//   - the plugin API ([Behavior], [Register], [Registry]) through which kinds
//     are added — the built-in kinds in package actors/kinds use exactly this
//     API;
//   - the [System], a Go facade that protocol adapters and the REST/WebSocket
//     API call; it routes each call to the owning grain with cluster.Request.
//
// Grains passivate after Config.IdleTimeout and re-activate from the store on
// their next message, so the number of registered twins is bounded by disk,
// not memory.
package actors
