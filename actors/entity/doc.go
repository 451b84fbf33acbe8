// Package entity is the pure core of every entity grain (device, gateway,
// room, building and every plugin kind): the entity's state and a step
// function over typed messages that returns the next state and the effects
// the caller must carry out — storage ops, events, replies, notifications
// to other entities, rule actions and timers. It is shaped like etcd's
// raft: it does no IO of its own (reads go through the [Reader] the caller
// implements), starts no goroutine and reads no clock (the caller passes
// the time), so every behaviour is tested with a table of messages and no
// actor system.
//
// The loop the caller (the grain in package actors) runs:
//
//	res := core.Step(ctx, now, msg)
//	for res != nil {
//		if err := commit(res.Ops); err != nil { // fenced, replicated
//			core.Abort(res)
//			reply(err)
//			break
//		}
//		publish(res.Events); send(res.Sends); run(res.Actions); reply(res.Reply)
//		res = core.Commit(ctx, now, res) // the state moves on; follow-ups (rules)
//	}
//
// One rollback rule: the state moves on only in Commit, after its ops are
// durable. A Result that is aborted leaves the core exactly as before Step.
//
// Versions follow CONTRACT section 4: desired, reported, tags and the
// entity's attributes raise the twin version; telemetry, connection, rollup
// and alerts are live state and do not.
package entity
