// Package jepsen checks a twinmesh cluster the way Jepsen checks
// databases (issue 20): real `twinmesh serve` processes, each in its own
// network namespace (internal/faults), clients that record every operation
// with real timestamps, a nemesis that injects faults on a schedule, and
// checkers that judge the recorded history.
//
// # Workload
//
// REST clients (two per twin by default) pick a random twin among a few
// (jt-0 … jt-4) and a random node, and read (GET /api/v1/twins/{id}),
// write desired.v with a unique value (PATCH) or compare-and-set it (PATCH
// with If-Match: the version the client last saw). MQTT devices (jd-0 …)
// publish QoS 1 telemetry with a unique $.mid through a random node and
// send a message again, through another connection, when its PUBACK does
// not come (at most three sends).
//
// Every operation is recorded with its call and return times. A read that
// fails, and a write whose request never left the client (the dial
// failed), are failed operations: they changed nothing. A CAS answered 412
// is a failed CAS that observed a version other than the expected one. A
// write or CAS that timed out or got any other error (5xx included) after
// it was sent has an unknown outcome: it may have taken effect, then or
// later.
//
// # Checks
//
//   - Linearizability, per twin, with porcupine against a compare-and-set
//     register whose state is desired.v and the twin version (the ETag):
//     a read must see both; a write moves to the next version with its
//     value; a CAS succeeds only at the expected version and its 412 only
//     at another; unknown outcomes get an open end (see step). A failing
//     history is written as porcupine's HTML visualization under
//     Dir/linearizability/ and its path is printed. With
//     Config.StaleReadsAllowed (TWINMESH_JEPSEN_STALE_READS=1) reads and
//     412s are left out, for a cluster that documents stale reads: then
//     only the acknowledged writes must form one register history.
//   - Forks: one twin version answered with two different values (by
//     writes or reads). Versions rise by one per accepted write, so a fork
//     means two activations of the grain accepted writes on the same base
//     — two owners committing in overlapping epochs, seen from the clients.
//   - Telemetry, through every node after the heal: no acknowledged
//     message missing, no message ID stored twice, nothing stored that was
//     never sent.
//   - Fencing tokens, from the node logs: no (entity, epoch) claimed by two
//     activations. The logs do not say which epoch committed which write
//     (commits are not logged per epoch), so overlapping owners are judged
//     by the fork check above, not from the logs.
//   - Liveness: after every fault is healed, every node must see every node
//     alive within 60 s.
//
// Every run also writes its history to Dir/history.jsonl.
//
// Availability is reported per fault window: the share of operations
// called during the fault (and after its heal) that were answered, the
// time after the heal until each node answered again, and the time until
// membership converged.
//
// # Running
//
// TestJepsenShort (a few minutes, 3 nodes: a pause longer than failure
// detection, a 20 s minority partition, a SIGKILL and restart) runs with
// TWINMESH_JEPSEN=1; `make jepsen` and scripts/jepsen.sh run it, and the
// long form with TWINMESH_JEPSEN_DURATION (e.g. 30m: a random schedule of
// every fault kind) and TWINMESH_JEPSEN_NODES (e.g. 5). The seed is
// printed and TWINMESH_JEPSEN_SEED replays the schedule and the clients'
// choices (timing still varies). It needs root, iproute2 and nftables.
package jepsen
