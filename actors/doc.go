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
//
// Device models (models.go, CONTRACT section 12) are catalog data like
// rules: DTDL interfaces stored in persistence.BucketModels, parsed by
// package actors/dtdl into an immutable snapshot that CatalogChanged
// reloads. The protocol adapters and the API call the System's Check*
// methods at the edge, before a message reaches a grain; a device's model ID
// is cached (and dropped on each identity event), so a message of a device
// without a model costs a map lookup, and the grains never see models.
package actors
