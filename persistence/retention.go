package persistence

import (
	"context"
	"time"
)

// Retention says what Retain prunes; zero Tombstones and Every mean the
// defaults.
type Retention struct {
	// Telemetry is how long warm telemetry is kept (PruneTelemetry).
	Telemetry time.Duration
	// Tombstones is how long the records of catalog deletions are kept
	// (PruneTombstones). Default TombstoneRetention.
	Tombstones time.Duration
	// Every is the time between two prunes. Default one hour.
	Every time.Duration
}

// Retain prunes telemetry and tombstones older than r says, at once and
// then every r.Every, until ctx is done. Failures are logged and retried
// at the next round.
func (db *DB) Retain(ctx context.Context, r Retention) {
	if r.Tombstones <= 0 {
		r.Tombstones = TombstoneRetention
	}
	if r.Every <= 0 {
		r.Every = time.Hour
	}
	tick := time.NewTicker(r.Every)
	defer tick.Stop()
	for {
		now := time.Now()
		if n, err := db.PruneTelemetry(ctx, now.Add(-r.Telemetry)); err != nil && ctx.Err() == nil {
			db.log.Warn("telemetry retention", "err", err)
		} else if n > 0 {
			db.log.Info("telemetry retention", "deleted", n, "older_than", r.Telemetry)
		}
		if n, err := db.PruneTombstones(ctx, now.Add(-r.Tombstones)); err != nil && ctx.Err() == nil {
			db.log.Warn("tombstone retention", "err", err)
		} else if n > 0 {
			db.log.Info("tombstone retention", "deleted", n, "older_than", r.Tombstones)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
