package persistence

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

// The ingest log. A telemetry record is keyed by its device (device NUL
// ns seq), so with many devices every record of a group commit lands on
// another leaf page at its own device's tail: a commit of ~135 messages
// from 1,000 devices wrote ~135 scattered pages, and bbolt's commit (page
// materialisation, spill, one write per page) was a quarter of the node's
// CPU on the QoS 1 ingest path. Appends therefore go to the ingest log,
// keyed by a sequence number, so that a commit dirties one tail page; the
// committer moves the log into the telemetry bucket in bulk (moveAt records,
// or when idle for moveIdle), where each device's tail page then takes many
// records at once. A record is in exactly one of the two buckets in any
// transaction, so reads merge the device's records of the log (a scan of at
// most a few thousand entries) with its range of the telemetry bucket.
var bktTelemetryLog = []byte("telemetry-log") // be64(position) → uvarint(len(key)) key JSON

const (
	// moveAt is the number of logged records that starts a move after a
	// commit: large enough that a move takes many records per device page,
	// small enough that reads scan the log quickly.
	moveAt = 4096
	// moveIdle: an idle committer moves what is logged after this long,
	// so that the log is empty whenever the node is quiet.
	moveIdle = 250 * time.Millisecond
)

// ingestLogs maps a writable DB's bolt handle to its ingestLog, so that ops
// (closures over a transaction, built without the DB) can reach it.
var ingestLogs sync.Map // *bbolt.DB → *ingestLog

// ingestLog indexes the records in the log by telemetry key, for the checks
// of the appending ops (the next seq at a timestamp, a record already
// there). It is used by the committer goroutine only: inside a batch
// transaction the changes of that transaction are kept apart and applied
// once it commits, or dropped if it fails.
type ingestLog struct {
	keys map[string]uint64 // committed: telemetry key → log position
	next uint64            // next log position

	added   map[string]uint64
	removed map[string]struct{}
	txNext  uint64
}

func newIngestLog() *ingestLog {
	return &ingestLog{keys: map[string]uint64{}, added: map[string]uint64{}, removed: map[string]struct{}{}}
}

// logOf returns the ingest log of tx's DB, nil for a DB without one (a
// read-only one, or bolt handles used directly by tests and tools).
func logOf(tx *bbolt.Tx) *ingestLog {
	if l, ok := ingestLogs.Load(tx.DB()); ok {
		return l.(*ingestLog)
	}
	return nil
}

func (l *ingestLog) begin() {
	clear(l.added)
	clear(l.removed)
	l.txNext = l.next
}

func (l *ingestLog) commit() {
	for k := range l.removed {
		delete(l.keys, k)
	}
	for k, n := range l.added {
		l.keys[k] = n
	}
	l.next = l.txNext
	l.begin()
}

// has reports whether the log holds the record with telemetry key k.
func (l *ingestLog) has(k []byte) bool {
	if _, ok := l.removed[string(k)]; ok {
		return false
	}
	if _, ok := l.added[string(k)]; ok {
		return true
	}
	_, ok := l.keys[string(k)]
	return ok
}

// stage appends the record k → v to the log in tx.
func (l *ingestLog) stage(tx *bbolt.Tx, k, v []byte) error {
	n := l.txNext
	e := make([]byte, 0, binary.MaxVarintLen32+len(k)+len(v))
	e = binary.AppendUvarint(e, uint64(len(k)))
	e = append(append(e, k...), v...)
	var pos [8]byte
	binary.BigEndian.PutUint64(pos[:], n)
	b := tx.Bucket(bktTelemetryLog)
	// Appends only: fill pages completely instead of splitting them in half.
	b.FillPercent = 1
	if err := b.Put(pos[:], e); err != nil {
		return err
	}
	l.txNext++
	l.added[string(k)] = n
	delete(l.removed, string(k))
	return nil
}

// drop deletes from the log, in tx, every record of id.
func (l *ingestLog) drop(tx *bbolt.Tx, id string) error {
	prefix := rangeStart(id)
	b := tx.Bucket(bktTelemetryLog)
	var pos [8]byte
	for _, m := range []map[string]uint64{l.keys, l.added} {
		for k, n := range m {
			if !bytes.HasPrefix([]byte(k), prefix) || !l.has([]byte(k)) {
				continue
			}
			binary.BigEndian.PutUint64(pos[:], n)
			if err := b.Delete(pos[:]); err != nil {
				return err
			}
			delete(l.added, k)
			l.removed[k] = struct{}{}
		}
	}
	return nil
}

// count returns the number of committed records in the log.
func (l *ingestLog) count() int { return len(l.keys) }

// dropLogged deletes id's records from the ingest log of tx, with or
// without the index.
func dropLogged(tx *bbolt.Tx, id string) error {
	if l := logOf(tx); l != nil {
		return l.drop(tx, id)
	}
	b := tx.Bucket(bktTelemetryLog)
	var del [][]byte
	prefix := rangeStart(id)
	c := b.Cursor()
	for p, e := c.First(); p != nil; p, e = c.Next() {
		if k, _, ok := splitLogEntry(e); ok && bytes.HasPrefix(k, prefix) {
			del = append(del, bytes.Clone(p))
		}
	}
	for _, p := range del {
		if err := b.Delete(p); err != nil {
			return err
		}
	}
	return nil
}

// splitLogEntry splits a log value into the telemetry key and the record.
func splitLogEntry(e []byte) (k, v []byte, ok bool) {
	n, w := binary.Uvarint(e)
	if w <= 0 || n > uint64(len(e)-w) {
		return nil, nil, false
	}
	return e[w : w+int(n)], e[w+int(n):], true
}

// logged returns id's records in the ingest log of tx, in key order.
func logged(tx *bbolt.Tx, id string) []kv {
	var out []kv
	prefix := rangeStart(id)
	c := tx.Bucket(bktTelemetryLog).Cursor()
	for p, e := c.First(); p != nil; p, e = c.Next() {
		if k, v, ok := splitLogEntry(e); ok && len(k) == len(prefix)+telemetrySuffix-1 && bytes.HasPrefix(k, prefix) {
			out = append(out, kv{k, v})
		}
	}
	slices.SortFunc(out, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
	return out
}

// telemetryFill is the fill percent of the telemetry bucket's pages when
// the log moves in: records arrive at each device's tail, so a page split
// in the default half leaves half pages behind. BenchmarkTelemetryAppend
// (records of their own): 288 bytes of file per message at the default
// 0.5, 199 at 0.9 (203 at 1.0).
const telemetryFill = 0.9

type kv struct{ k, v []byte }

// moveLog moves every record of the ingest log into the telemetry bucket
// in one transaction, and empties the log. Committer goroutine only (or
// Open, before it starts).
func (db *DB) moveLog() error {
	moved := 0
	start := time.Now()
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		lb := tx.Bucket(bktTelemetryLog)
		var recs []kv
		c := lb.Cursor()
		for p, e := c.First(); p != nil; p, e = c.Next() {
			k, v, ok := splitLogEntry(e)
			if !ok {
				return fmt.Errorf("ingest log entry %x: %w: bad key length", p, ErrCorrupt)
			}
			// Copies: the log's pages are freed below, and a remap while
			// the transaction commits would leave references dangling.
			recs = append(recs, kv{bytes.Clone(k), bytes.Clone(v)})
		}
		if len(recs) == 0 {
			return nil
		}
		slices.SortFunc(recs, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
		// Each device's records, consecutive in key order, go into its
		// blocks (blockcodec.go).
		tb := tx.Bucket(bktTelemetry)
		for i := 0; i < len(recs); {
			dev, _, _, ok := parseTelemetryKey(recs[i].k)
			if !ok {
				return fmt.Errorf("ingest log key %x: %w: not a telemetry key", recs[i].k, ErrCorrupt)
			}
			j := i + 1
			for j < len(recs) && len(recs[j].k) == len(recs[i].k) && bytes.HasPrefix(recs[j].k, recs[i].k[:len(dev)+1]) {
				j++
			}
			if err := packRecords(tb, string(dev), recs[i:j]); err != nil {
				return fmt.Errorf("device %s: %w", dev, err)
			}
			i = j
		}
		moved = len(recs)
		// Dropping the bucket frees its pages at once.
		if err := tx.DeleteBucket(bktTelemetryLog); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bktTelemetryLog)
		return err
	})
	if err != nil {
		db.log.Error("moving the ingest log failed; it stays until the next attempt", "err", err)
		return fmt.Errorf("move ingest log: %w", err)
	}
	if l := db.ilog; l != nil {
		clear(l.keys)
		l.begin()
	}
	if moved > 0 {
		db.log.Debug("ingest log moved", "records", moved, "took", time.Since(start))
	}
	return nil
}
