// Package faults builds a small private network of Linux network
// namespaces for process-level fault-injection tests, runs twinmesh nodes
// inside it, and injects and heals faults: partitions (both ways and one
// way), packet loss and delay, process pauses, crashes, restarts and
// restarts from an old copy of a node's data folder.
//
// # Layout
//
// New makes, for one run:
//
//	root namespace                  hub namespace "tmjRRRR-hub"         node namespaces "tmjRRRR-nI"
//	tmjRRRR-h 10.77.X.1/24  ──veth──  hp  ─┐
//	                                       bridge br0 ── pI ──veth── eth0 10.77.X.(10+I)/24
//
// The bridge lives in a namespace of its own, so the host's firewall (and
// br_netfilter with a FORWARD policy of drop, as Docker leaves it) never
// sees the nodes' traffic. The test process stays in the root namespace
// and reaches every node at its address through the host veth; faults
// match only node addresses, so the test's HTTP and MQTT connections to a
// node are never cut by a partition, nor degraded (loss, rate caps and
// delay apply to traffic between nodes only).
//
// Every node namespace has its own network stack, so all nodes bind the
// same fixed ports (HTTP 8080, MQTT 1883, gossip 7946, remote 7950) on their
// own address, and a restarted node comes back on the same addresses.
//
// # Faults
//
//   - Partition(a, b) drops every packet between the sets a and b, both
//     ways; Cut(from, to) drops only what from sends to to. Both are
//     nftables rules in the receiving node's namespace (table inet
//     twinmesh_faults, input hook, match on the source address); Heal
//     removes them all.
//   - Degrade(nodes, d) degrades what those nodes send to other nodes:
//     loss with an nftables rule (output hook, `numgen random`), a
//     bandwidth cap with tc htb (class 1:2, chosen by u32 filters on the
//     peers' addresses; the test's own traffic takes the default class),
//     and a fixed delay with tc netem under that class. HealDegrade
//     removes it all. Kernels built without sch_netem (the 6.18 kernel of
//     the project's CI machines has neither netem nor prio) refuse the
//     delay: DelaySupported tells, and loss and rate caps still work.
//   - Node.Pause and Node.Resume send SIGSTOP and SIGCONT; Node.Kill sends
//     SIGKILL; Node.Restart starts the node again on the same data folder;
//     Node.Snapshot copies the data folder while the process is stopped (a
//     crash-consistent copy, as bbolt expects after a crash) and
//     Node.RestoreSnapshot puts it back before a restart.
//
// # Cleanup
//
// Each run records its owner PID and subnet in a state file
// (/run/twinmesh-faults/tmjRRRR, or under the temp folder when /run is not
// writable) before it creates anything. Close kills the processes left in
// the run's namespaces and deletes the namespaces, the veths and the state
// file; New first does the same for every run whose owner PID is gone, so a
// test binary that crashed (or was killed by a timeout) leaves nothing
// behind for long. Node processes also get SIGKILL when the test process
// dies (Pdeathsig). Subnets are taken under a file lock, so runs in parallel
// (several test binaries) get different ones.
//
// # Requirements
//
// root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` and `tc` (Debian iproute2)
// and `nft` (Debian nftables). Available reports what is missing; Require
// skips a test when something is, or fails it under CI=true.
package faults
