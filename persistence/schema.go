package persistence

import (
	"bytes"
	"fmt"
	"strconv"

	"go.etcd.io/bbolt"
)

// SchemaVersion is the schema this binary writes. Open migrates older files
// up to it and refuses newer ones with ErrSchemaTooNew.
const SchemaVersion = 9

// Bucket names inside the bbolt file.
var (
	bktMeta       = []byte("meta")
	bktTwins      = []byte("twins")
	bktEntities   = []byte("entities")
	bktChildren   = []byte("idx_children")     // parent NUL child → ""
	bktVia        = []byte("idx_connectedVia") // gateway NUL device → ""
	bktIdentities = []byte("identities")
	bktTelemetry  = []byte("telemetry") // device NUL be64(unix ns) be32(seq) → record or block of records
	bktInbox      = []byte("inbox")     // device NUL messageID → JSON
	bktEpochs     = []byte("epochs")    // grain id → Epoch, binary (encodeEpoch) or JSON (schema 2)
	bktOutbox     = []byte("outbox")    // device NUL be64(seq) → endpoint NUL message (outbox.go)
	keySchema     = []byte("schema")
)

// migration moves a file from schema to-1 to schema to. It runs inside the
// single transaction that Open uses, so a failed migration changes nothing.
type migration struct {
	to    int
	name  string
	apply func(tx *bbolt.Tx) error
}

// migrations returns the ordered list of migrations; entry i moves a file to
// version i+1. Append new versions at the end, never edit old ones.
func migrations() []migration {
	return []migration{
		{to: 1, name: "create buckets", apply: ensureBuckets},
		{to: 2, name: "create epochs bucket", apply: func(tx *bbolt.Tx) error {
			if _, err := tx.CreateBucketIfNotExists(bktEpochs); err != nil {
				return fmt.Errorf("create bucket %s: %w", bktEpochs, err)
			}
			return nil
		}},
		{to: 3, name: "create tombstones bucket", apply: func(tx *bbolt.Tx) error {
			if _, err := tx.CreateBucketIfNotExists([]byte(BucketTombstones)); err != nil {
				return fmt.Errorf("create bucket %s: %w", BucketTombstones, err)
			}
			return nil
		}},
		{to: 4, name: "binary epochs", apply: binaryEpochs},
		// A binary without the ingest log would not see the records in it.
		{to: 5, name: "create telemetry log bucket", apply: func(tx *bbolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bktTelemetryLog)
			return err
		}},
		// Nothing to rewrite: JSON records stay readable; a binary that
		// knows schema 5 would not read the binary ones (recordcodec.go).
		{to: 6, name: "binary telemetry records", apply: func(*bbolt.Tx) error { return nil }},
		// A binary that knows schema 6 would not copy jobs to a joining
		// member nor resume them.
		{to: 7, name: "create jobs bucket", apply: func(tx *bbolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists([]byte(BucketJobs))
			return err
		}},
		// Nothing to rewrite: records of their own stay readable, and the
		// next moves of the ingest log pack new records into blocks
		// (blockcodec.go), starting from each device's newest record;
		// what was stored before ages out with retention. Packing a whole
		// file here would hold it in one transaction's memory. A binary
		// that knows schema 7 would not read the blocks.
		{to: 8, name: "telemetry blocks", apply: func(*bbolt.Tx) error { return nil }},
		// A binary that knows schema 8 would neither copy the outboxes to
		// a grain's new replica nor send what they hold, nor copy the AMQP
		// definitions to a joining member.
		{to: 9, name: "create outbox and amqp buckets", apply: func(tx *bbolt.Tx) error {
			for _, b := range [][]byte{bktOutbox, []byte(BucketAMQP)} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		}},
	}
}

// ensureBuckets creates the buckets of the current schema that are missing.
// Open runs it after the migrations too, so a file whose buckets were
// dropped by hand still opens.
func ensureBuckets(tx *bbolt.Tx) error {
	for _, name := range allBuckets() {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// allBuckets lists every bucket of the current schema (SchemaVersion).
func allBuckets() [][]byte {
	return [][]byte{bktMeta, bktTwins, bktEntities, bktChildren, bktVia, bktIdentities,
		bktTelemetry, bktTelemetryLog, bktInbox, bktEpochs, bktOutbox, []byte(BucketAMQP),
		[]byte(BucketRules), []byte(BucketAlerts), []byte(BucketContrib), []byte(BucketGrants), []byte(BucketTombstones),
		[]byte(BucketGrains), []byte(BucketMembers), []byte(BucketTokens), []byte(BucketModels), []byte(BucketJobs)}
}

// readSchema returns the stored schema version; a file without a meta bucket
// or schema key is version 0.
func readSchema(tx *bbolt.Tx) (int, error) {
	b := tx.Bucket(bktMeta)
	if b == nil {
		return 0, nil
	}
	v := b.Get(keySchema)
	if v == nil {
		return 0, nil
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad schema version %q in meta bucket", v)
	}
	return n, nil
}

// migrate brings tx from its stored version to the last of ms and records the
// new version. It returns the versions before and after.
func migrate(tx *bbolt.Tx, ms []migration) (from, to int, err error) {
	target := len(ms)
	for i, m := range ms {
		if m.to != i+1 {
			return 0, 0, fmt.Errorf("migration %q: is number %d but targets version %d", m.name, i+1, m.to)
		}
	}
	from, err = readSchema(tx)
	if err != nil {
		return 0, 0, err
	}
	if from > target {
		return from, from, fmt.Errorf("%w: file has schema %d, this binary knows %d", ErrSchemaTooNew, from, target)
	}
	for _, m := range ms[from:] {
		if err := m.apply(tx); err != nil {
			return from, from, fmt.Errorf("migrate to schema %d (%s): %w", m.to, m.name, err)
		}
	}
	meta, err := tx.CreateBucketIfNotExists(bktMeta)
	if err != nil {
		return from, from, err
	}
	if err := meta.Put(keySchema, []byte(strconv.Itoa(target))); err != nil {
		return from, from, err
	}
	return from, target, nil
}

// checkReadable verifies, in a read-only transaction, that the file is at
// exactly SchemaVersion.
func checkReadable(tx *bbolt.Tx) error {
	v, err := readSchema(tx)
	if err != nil {
		return err
	}
	switch {
	case v > SchemaVersion:
		return fmt.Errorf("%w: file has schema %d, this binary knows %d", ErrSchemaTooNew, v, SchemaVersion)
	case v < SchemaVersion:
		return fmt.Errorf("%w: file has schema %d, this binary writes %d", ErrSchemaTooOld, v, SchemaVersion)
	}
	return nil
}

// binaryEpochs rewrites the JSON epoch records in their binary form (see
// encodeEpoch); a binary that knows only schema 3 would misread them, and
// refuses the file instead.
func binaryEpochs(tx *bbolt.Tx) error {
	b := tx.Bucket(bktEpochs)
	if b == nil {
		return nil
	}
	var keys, vals [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if len(v) == 0 || v[0] == epochBinary {
			return nil
		}
		e, err := decodeEpoch(v)
		if err != nil {
			return fmt.Errorf("epoch %q: %w", k, err)
		}
		keys, vals = append(keys, bytes.Clone(k)), append(vals, encodeEpoch(e))
		return nil
	})
	if err != nil {
		return err
	}
	for i, k := range keys {
		if err := b.Put(k, vals[i]); err != nil {
			return err
		}
	}
	return nil
}
