// Package persistence keeps one node's state in a single bbolt file: twin
// documents, the topology (entities with their `contains` and `connectedVia`
// indexes), the identity registry, durable per-device inboxes, warm
// telemetry with retention, and opaque document buckets (rules, alerts,
// rollup contributions, grants). Values are JSON; twin documents and docs are
// stored as the caller's bytes. The package imports no other twinmesh
// package.
//
// # Basics
//
// Open creates or opens the file (mode 0600), creates every bucket, and
// migrates an older schema: the meta bucket holds the schema version under
// "schema", and an ordered list of migrations moves a file from any older
// version to SchemaVersion inside one transaction. A file written by a newer
// binary is refused with ErrSchemaTooNew. OpenReadOnly shares the file with
// other readers, for tools.
//
// Writes are Ops, built by constructors (PutTwin, PutEntity, AppendTelemetry,
// PutDoc, …) and applied by Commit; the ops of one Commit are atomic. Reads
// (GetTwin, Subtree, ListEntities, QueryTelemetry, …) each run in their own
// read transaction and are safe from many goroutines:
//
//	db, err := persistence.Open(path, nil)
//	if err != nil { … }
//	defer db.Close()
//	err = db.Commit(ctx,
//		persistence.PutEntity(persistence.Entity{ID: "room-1", Kind: "room"}),
//		persistence.PutTwin("room-1", doc))
//	doc, err := db.GetTwin("room-1")
//
// Keys are entity and device IDs, never actor PIDs. Composite keys are
// "<id> NUL <rest>", so IDs used as their prefix (entity IDs in the indexes,
// device IDs in telemetry and inboxes) must be free of NUL bytes.
//
// # Group commit
//
// A bbolt commit costs two fsyncs, so one transaction per write caps a node
// at about a thousand durable writes per second. Commit therefore queues its
// ops as one request on a bounded queue (Options.QueueSize; Commit blocks
// while it is full) and returns once they are durable. One committer
// goroutine, started by Open and stopped by Close, takes the first request,
// collects more until Options.MaxWait has passed or Options.MaxBatch
// requests are in, and applies the whole batch, in arrival order, in one
// bbolt Update. Requests that queue up while a batch is being committed join
// the next one. Options.Observer sees the size and duration of every commit.
//
// The cost of a commit hardly depends on how many writes it holds (it is
// two fsyncs and the dirty pages), so durable throughput grows with the
// batch: with 1000 concurrent writers, batches of about 1000 requests and
// bbolt's DB.Batch give the same writes/s; with fewer writers the shorter
// MaxWait (2ms against DB.Batch's 10ms) wins. Unlike DB.Batch, a request
// holds several ops applied atomically, Commit honours its context, the
// queue is bounded, and a failing request costs one retry of its batch, not
// one transaction per request.
//
// If a batch transaction fails, the batch is split so that one bad request
// fails alone (as bbolt's DB.Batch does): the requests before the failing op
// are committed together again, the failing request alone, and the rest as
// a new batch; a failure not caused by an op (a commit or fsync error)
// retries each request in its own transaction. An op that panics fails its
// request the same way instead of the committer. A request refused by the
// fence of its first op (CheckEpoch, ClaimEpoch) has written nothing, so it
// fails alone without failing the transaction: a stale owner's writes cost
// the batch no retry.
//
// # Replication: wire ops and fencing
//
// A cluster ships each grain's committed writes to replica nodes, which
// apply them to their own file. An Op is a closure and cannot cross the
// wire, so every op of stored data also carries a WireOp (Op.Wire): a small
// JSON-able record holding the exact stored value. FromWire rebuilds the Op
// on the replica with the checks of its constructor (bad input is
// ErrInvalid), and the replica stores the same bytes. Op.Catalog tells
// cluster-wide data (entities, identities, docs: every member holds it)
// from grain-scoped data (twin, telemetry, inbox: only the grain's
// replicas). A telemetry op from FromWire is idempotent (one record per
// device and timestamp), because shipments are retried and snapshots
// overlap. GrainState summarises a node's copy of a grain so that a new
// owner can pick the newest one; GrainSnapshot and CatalogSnapshot page
// through a node's data as wire ops, to seed a new replica or member.
//
// Ownership of a grain moves with increasing epochs, and an owner that has
// not yet learnt it was replaced must not overwrite its successor's data.
// The epochs bucket keeps, per grain and per node, the highest epoch seen:
// ClaimEpoch raises it when a new owner takes over, and CheckEpoch, put
// first in a Commit, refuses (ErrFenced) the request of an older epoch in
// the same transaction as its writes, so a fenced write writes nothing.
// Epoch ops have no wire form: each node fences the writes it applies,
// including those shipped to it. Fences are never deleted, not even by
// DeleteEntity, so they only grow.
//
// The same record orders the copies of a grain. Wrote is the epoch of the
// newest write a node holds and Seq the number of that epoch's writes, and
// a copy holds all of them, 1..Seq. The owner's CheckEpochReport numbers
// each write (Seq 1 for the first of a new epoch) and reports where it
// followed; a replica applies it with ApplyEpoch only on the copy it was
// made on (ErrGap otherwise, ErrApplied when it holds it already), so a
// replica that was passed over while it did not answer, or that a claim
// did not bring up to date, never looks complete. The twin's version cannot
// order copies, as live state (telemetry, connection, rollups, alerts) does
// not move it; (Wrote, Seq) can. A copy of a grain (GrainSnapshot pages)
// starts with ResetGrainData and EmptyCopyEpoch and ends with CopiedEpoch,
// which sets the source's (Wrote, Seq), so a copy cut off half way claims
// nothing; other ops of a grain that are not one of its writes (a copy's
// pages, its catalog part sent to a member that is not a replica) are
// guarded by FenceEpoch, which leaves (Wrote, Seq) alone. GrainState reports
// the record, and a new owner picks the copy with the highest (Wrote, Seq).
// A record stored before Seq existed reads as Seq 0, and one with Seq 0 is
// stored as before.
//
// # Caveats
//
// Commit returns ctx.Err() when its context ends while the request is
// queued or being committed, and the write may still commit: callers that
// retry must write idempotently (twin records carry their version).
//
// Ops see the writes of the requests before them in the same batch. An Op
// that fails inside the transaction (an empty key, which bbolt refuses) costs
// its batch a retry; Ops that cannot be encoded fail in Commit before they
// are queued.
//
// DeleteEntity removes everything keyed by the entity in one transaction; a
// device with a long telemetry history makes that transaction large.
// PruneTelemetry runs its own bounded transactions beside the committer.
//
// Warm telemetry is appended to an ingest log and moved into per-device
// blocks of up to 64 records (ingestlog.go, blockcodec.go); a record is in
// exactly one place in any transaction, and reads see it wherever it is.
// Retention drops a block wholly older than the cut and rewrites one that
// straddles it. Writes through Bolt must keep a device's entries from
// overlapping (telemetryscan.go).
//
// Wire ops are JSON: IDs and keys that are not valid UTF-8 do not survive
// the trip (encoding/json replaces the bad bytes). Snapshots copy what the
// source has; they do not delete what the receiver has beyond it.
//
// Options.NoSync makes writes non-durable (tests and benchmarks only). Writes
// through Bolt bypass the indexes and the group commit. A read transaction
// held open for long (a huge ListEntities page, a long telemetry scan) delays
// the file growth of commits, as with any bbolt reader.
package persistence
