// Package cluster gives protoactor's cluster its membership from
// hashicorp/memberlist (Provider), places grains and keeps their state
// safe across members (Placement), and gives the node its view of the
// cluster for GET /api/v1/cluster.
//
// # Why
//
// protoactor-go ships cluster providers for consul, etcd, zookeeper and
// Kubernetes, all of which need an external service, and none for
// memberlist. twinmesh is one static binary on plain VMs, so membership is
// gossiped with memberlist (the SWIM library behind Consul's and Nomad's LAN
// gossip), optionally encrypted with a shared key. Provider implements
// protoactor's cluster.ClusterProvider and Placement its IdentityLookup, at
// protoactor's own extension points.
//
// # How
//
// Each node gossips, in memberlist node metadata, protoactor's cluster name,
// its actor-system ID, its protoactor remote address and its grain kinds.
// memberlist reports joins, updates and departures to a delegate that only
// records them; a goroutine owned by the Provider then hands the alive
// members to protoactor with MemberList.UpdateClusterTopology (and again
// every two seconds, so that protoactor applies the members its own gossip
// has blocked).
//
// protoactor blocks forever the ID of a member that drops out of the
// topology. A node that restarts therefore has a new actor-system ID (the
// default is random), so the ID identifies an incarnation, while the
// node name (Config.NodeName) may be reused. For the same reason a member that
// memberlist suspects stays in the topology until memberlist declares it
// dead: a suspect that refutes the suspicion keeps its grains.
//
// # Kinds
//
// Every member must link the same entity kinds (plugins are compiled in):
// a grain of a kind one member lacks could be placed where it cannot run.
// memberlist asks the merge delegate of both sides of a join (NotifyMerge)
// and the alive delegate of every node that hears of a new one
// (NotifyAlive); both refuse a member of this cluster whose kinds differ,
// so the check happens inside memberlist and the member never becomes a
// peer. A node that meets such a member while it joins fails StartMember
// with a *KindsError naming the difference both ways (ErrKindsMismatch);
// a member already in the cluster refuses the newcomer, logs it once and
// carries on. Clients (no kinds) are not concerned. Two nodes with other
// kinds that join different members at the same moment may both finish
// their joins before they hear of each other: each then refuses the other
// and logs it, and neither places grains on the other.
//
// # Departures
//
// memberlist v0.7.0 does not tell its event delegate whether a node left or
// failed (Node.State is never set, hashicorp/memberlist#293), nor when it
// suspects one. So a graceful Shutdown first sends every alive peer a leave
// notice naming the incarnation (a memberlist user message over TCP, also
// gossiped and carried in push/pull sync for the peers it did not know),
// then calls memberlist's Leave. A peer drops the node from the topology and
// reports it StateLeft as soon as the notice arrives; a node that disappears
// without one is StateDead once memberlist's failure detection says so.
// StateSuspect is this node's own approximation: no direct probe
// acknowledged for about two probe rounds.
//
// Each incarnation is its own memberlist node, named NodeName/ID, so that a
// node restarted under the same name never inherits the death notice of its
// previous incarnation still being gossiped (which would make protoactor
// block the new ID for good), nor an address conflict with it. Members shows
// one entry per node name, its newest incarnation; an older incarnation
// still alive (the node restarted before its crash was detected) is
// superseded and leaves the topology at once.
//
// # Timing
//
// Measured on loopback (TestDepartureTiming, TestTwoNodes): peers see a
// graceful leave as soon as the notice arrives, in about 10 ms; Shutdown(true)
// itself takes 0.2 s with ProfileLocal and 0.8 s with ProfileLAN (memberlist's
// Leave waits for its broadcast). A crash is declared after memberlist's
// failure detection: about 6 s with ProfileLAN and 5 s with ProfileLocal in
// clusters of two or three. memberlist sizes its suspicion timeout by the
// nodes it knows, dead and recently left ones included, and then waits for
// confirmations from other live nodes: with ProfileLocal, a node that knows
// three nodes but has no live peer left to confirm waits the maximum, about
// 20 s (ProfileLAN needs confirmations only from four nodes on).
//
// # Placement, fencing and replication
//
// protoactor's disthash places a grain by rendezvous hashing but hands no
// state over, may activate a grain on two members while their views of the
// membership differ (upstream #799), races on its hash ring (#1131) and can
// panic on a terminated grain it does not know (#1142). Placement keeps the
// rendezvous placement (Rank) and adds what a twin store needs:
//
//   - Claim: an activation takes a fresh epoch (the clock in ns, above any
//     epoch seen) and claims it on every member; each member records it in
//     its bbolt file (persistence.ClaimEpoch) and reports what it holds of
//     the grain. The activation copies the newest copy (written by the
//     newest epoch, then the highest twin version, then the newest
//     telemetry) into its own store, adopts it (the copy counts as written
//     by the new epoch, persistence.AdoptEpoch, so that no write of an
//     older activation can outrank what the new one serves) and brings
//     writeAcks members up to date before it serves anything.
//   - Commit: every write carries the epoch, checked in the same bbolt
//     transaction on this node and on each replica (persistence.CheckEpoch):
//     once a member saw a newer claim, the stale activation's writes are
//     refused there, so at most one activation can get a write acknowledged.
//     A write is acknowledged once writeAcks nodes committed it; a replica
//     that does not answer within PeerTimeout is replaced by the next
//     member in rendezvous order. Each write carries its place in the
//     epoch's sequence and a replica applies it only on the copy it
//     follows (persistence.ApplyEpoch); one that missed writes (passed
//     over, then back) is sent the owner's whole copy instead, so the copy
//     with the highest (Wrote, Seq) holds every write the others hold. Catalog data (entities,
//     identities, rules, alerts, grants, rollup contributions) goes to every
//     member, so that any node can authenticate a device, check a topology
//     or list alerts from its own file; a member that missed a catalog
//     write is asked to copy the catalog from the writer once it answers
//     again (catchup.go).
//   - Moves: when the topology changes, grains another member now owns
//     flush, answer "moved" for MoveGrace (callers retry at once rather
//     than time out behind a poison pill) and stop; the new owner's claim
//     fences them. Handoff does the same for every grain before a graceful
//     leave.
//   - Suspects: a member whose request fails at the transport is marked
//     down for ten seconds: writes pass over it, its cached PIDs are
//     forgotten and its grains activate on the next member, before
//     memberlist declares the crash.
//   - Re-replication: after the topology settled, each node sends its copy
//     of every grain it owns to the replicas that hold an older one.
//   - Joining: a node started with seeds copies the catalog from a member
//     before its grains can activate (WaitSynced), applies the deletions
//     it missed (tombstones in persistence.BucketTombstones) and hands the
//     member what only it has; a node whose only live seed is itself
//     starts alone after two seconds.
//
// Events (twin changes for WebSocket subscribers and MQTT sessions) are
// batched to every other member through a bounded queue; direct methods go
// to the member holding the device's session (Invoke). What a member
// receives — events, catalog changes, direct-method calls — waits in the
// Placement until Serve hands it to the node (Local): the Placement
// depends on nothing the node builds after it, so it is built first and
// given to the actor system, and Serve connects the two once both exist.
//
// # Caveats
//
// protoactor's Cluster.Shutdown(false) does not call the provider: call
// Shutdown(false) yourself. Cluster.Shutdown panics on a cluster client.
// protoactor's MemberList reads its block list without the lock its gossip
// actor writes it under, so -race reports UpdateClusterTopology in any member
// that has peers, and two remotes in one process race on grpc's global
// logger: tests of several protoactor members run without -race
// (TestTwoNodesWithoutRace), gossip-level tests with it.
package cluster
