package persistence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// QueryTelemetry returns deviceID's records, newest first, with TS within
// [q.From, q.To] (a zero bound is open), keeping only records whose Points
// contain q.Name if it is set, at most q.Limit of them (0 means
// DefaultTelemetryLimit, capped at MaxTelemetryLimit). The scan runs in one
// read transaction and stops with ctx.Err() when ctx is done.
func (db *DB) QueryTelemetry(ctx context.Context, deviceID string, q TelemetryQuery) ([]TelemetryRecord, error) {
	out := []TelemetryRecord{}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkPrefixID("device id", deviceID); err != nil {
		return out, nil
	}
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = DefaultTelemetryLimit
	case limit > MaxTelemetryLimit:
		limit = MaxTelemetryLimit
	}
	from, to := int64(0), int64(math.MaxInt64)
	if !q.From.IsZero() {
		from = clampNanos(q.From)
	}
	if !q.To.IsZero() {
		to = clampNanos(q.To)
	}
	if from > to || (!q.To.IsZero() && q.To.Before(minTelemetryTS)) {
		return out, nil
	}
	err := db.view(func(tx *bbolt.Tx) error {
		var err error
		n := 0
		scanTelemetry(tx, deviceID, from, to, true, func(w *warmRec) bool {
			if n++; n%ctxCheckEvery == 0 {
				if err = ctx.Err(); err != nil {
					return false
				}
			}
			var r TelemetryRecord
			if r, err = w.decode(); err != nil {
				err = fmt.Errorf("telemetry %s at %d: decode: %w", deviceID, w.ns, err)
				return false
			}
			if q.Name != "" {
				if _, ok := r.Points[q.Name]; !ok {
					return true
				}
			}
			out = append(out, r)
			return len(out) < limit
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// clampNanos converts t to unix nanoseconds within [0, MaxInt64].
func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(minTelemetryTS):
		return 0
	case t.After(maxTelemetryTS):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// pruneBatch bounds the deletions of one PruneTelemetry transaction.
const pruneBatch = 10000

// PruneTelemetry deletes every telemetry record of every device with TS
// before `before` and returns how many it deleted. It works in transactions
// of at most 10,000 deletions (each fsynced unless NoSync), which take the
// bbolt writer lock directly, between group commits, so a large prune never
// stalls the committer for long. If ctx is done it stops between
// transactions and returns the count so far with ctx.Err(); what was deleted
// stays deleted.
func (db *DB) PruneTelemetry(ctx context.Context, before time.Time) (int, error) {
	if db.readOnly {
		return 0, ErrReadOnly
	}
	if before.Before(minTelemetryTS) || before.Equal(minTelemetryTS) {
		return 0, ctx.Err()
	}
	// Records still in the ingest log are recent as a rule, but not
	// always (a device's own timestamps, a replica's copy): move them where
	// the prune sees them.
	if err := db.MoveIngestLog(ctx); err != nil {
		return 0, err
	}
	cut := clampNanos(before)
	total := 0
	resume := []byte{}
	for resume != nil {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		deleted := 0
		err := db.bolt.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bktTelemetry)
			c := b.Cursor()
			var dels [][]byte
			var puts []kv // blocks that straddle the cut, without their older records
			n := 0
			k, v := c.Seek(resume)
			for k != nil && n < pruneBatch {
				dev, ns, seq, ok := parseTelemetryKey(k)
				switch {
				case !ok:
					k, v = c.Next() // not ours: leave it
				case ns < cut:
					kept, gone, err := pruneEntry(k, v, ns, seq, cut)
					if err != nil {
						return fmt.Errorf("telemetry %x: %w", k, err)
					}
					dels = append(dels, bytes.Clone(k))
					if kept.k != nil {
						puts = append(puts, kept)
					}
					n += gone
					k, v = c.Next()
				default: // the rest of this device is newer: jump to the next one
					k, v = c.Seek(append(bytes.Clone(dev), 1))
				}
			}
			resume = bytes.Clone(k) // nil when the bucket is done
			for _, d := range dels {
				if err := b.Delete(d); err != nil {
					return err
				}
			}
			for _, p := range puts {
				if err := b.Put(p.k, p.v); err != nil {
					return err
				}
			}
			deleted = n
			return nil
		})
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			return total, ErrClosed
		}
		if err != nil {
			return total, fmt.Errorf("prune telemetry: %w", err)
		}
		total += deleted
	}
	return total, nil
}

// pruneEntry returns what retention keeps of the telemetry entry k → v at
// (ns, seq), older than cut: nothing for a record of its own or a block
// wholly older; for a block that straddles the cut, a block of its records
// from cut on, under the key of the first of them. gone counts the
// records dropped.
func pruneEntry(k, v []byte, ns int64, seq uint32, cut int64) (kept kv, gone int, err error) {
	if !isBlock(v) {
		return kv{}, 1, nil
	}
	count, lastNs, _, err := blockHead(v, ns)
	if err != nil {
		return kv{}, 0, err
	}
	if lastNs < cut {
		return kv{}, count, nil
	}
	names, recs, err := parseBlock(v, ns, seq)
	if err != nil {
		return kv{}, 0, err
	}
	i := 0
	for recs[i].ns < cut {
		i++
	}
	dev := k[:len(k)-telemetrySuffix]
	first := recs[i]
	return kv{telemetryKey(string(dev), first.ns, first.seq), encodeBlock(names, recs[i:])}, i, nil
}
