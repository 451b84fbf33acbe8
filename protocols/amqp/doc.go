// Package amqp connects twinmesh to AMQP 1.0 brokers and routers (CONTRACT
// section 8) with github.com/Azure/go-amqp.
//
// Routes out: events the actor system publishes (telemetry, twin changes,
// lifecycle, alerts) that match a route's expr condition (over the
// message's body, properties and system properties and the device's tags)
// are written to a durable bbolt outbox and sent to the route's endpoint
// with the IoT Hub message annotations, telemetry as the device sent it;
// a message leaves the outbox when the broker settles it as accepted. Ingress in: a queue is consumed with bounded link credit,
// each message is stored through the actor system and only then settled.
//
// The outbox is its own bbolt file written from the event sink, not part of
// the grain's commit: an event published after a commit but before the
// outbox write reaches the disk is lost if the process dies in between
// (see README, "AMQP routes and ingress").
package amqp
