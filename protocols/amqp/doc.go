// Package amqp connects twinmesh to AMQP 1.0 brokers and routers (CONTRACT
// section 8) with github.com/Azure/go-amqp.
//
// Routes out: the Service is the actor system's Router. A grain matches the
// events of each write (telemetry, twin changes, lifecycle, alerts)
// against the routes' expr conditions (over the message's body,
// properties and system properties and the device's tags) before it
// commits, and writes what matches to its outbox in that same commit
// (persistence's grain-scoped outbox, replicated with the grain). Each
// endpoint's worker sends the outboxes of the devices whose grain this
// member owns, in order per device, with the IoT Hub message annotations,
// telemetry as the device sent it; an entry leaves the outbox, through
// the grain, when the broker settles it as accepted, or becomes a dead
// letter after MaxTries tries.
//
// Ingress in: a queue is consumed with bounded link credit, each message
// is stored through the actor system and only then settled.
//
// Definitions (endpoints, routes, ingresses) are cluster-wide when the
// Service has Definitions (the cluster's catalog), per file otherwise.
package amqp
