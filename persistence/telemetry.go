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
		seek := rangeEnd(deviceID)
		if to < math.MaxInt64 {
			seek = telemetryKey(deviceID, to+1, 0)
		}
		var err error
		n := 0
		descendTelemetry(tx, deviceID, seek, func(k, v []byte) bool {
			if n++; n%ctxCheckEvery == 0 {
				if err = ctx.Err(); err != nil {
					return false
				}
			}
			dev, ns, _, ok := parseTelemetryKey(k)
			if !ok || len(dev) != len(deviceID) {
				return true
			}
			if ns < from {
				return false
			}
			var r TelemetryRecord
			if r, err = decodeRecord(v, ns); err != nil {
				err = fmt.Errorf("telemetry %s at %d: decode: %w", deviceID, ns, err)
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
			k, _ := c.Seek(resume)
			for k != nil && len(dels) < pruneBatch {
				dev, ns, _, ok := parseTelemetryKey(k)
				switch {
				case !ok:
					k, _ = c.Next() // not ours: leave it
				case ns < cut:
					dels = append(dels, bytes.Clone(k))
					k, _ = c.Next()
				default: // the rest of this device is newer: jump to the next one
					k, _ = c.Seek(append(bytes.Clone(dev), 1))
				}
			}
			resume = bytes.Clone(k) // nil when the bucket is done
			for _, d := range dels {
				if err := b.Delete(d); err != nil {
					return err
				}
			}
			deleted = len(dels)
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
