package persistence

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// BenchmarkTelemetryAppend is the storage half of QoS 1 ingest: 1,000
// devices, one message in flight each (1,000 writers), every append durable
// (fsync) before it returns, records like those of `twinmesh bench`. It
// compares the ingest log with the device-keyed layout it replaced and with
// raw bbolt Batch writing the device-keyed layout, in the same run, and
// reports the CPU each message costs the process (getrusage), since on the
// node's 2 cores CPU, not fsync, sets the pace.
func BenchmarkTelemetryAppend(b *testing.B) {
	const devices = 1000
	ctx := context.Background()
	rec := func(dev, seq int) TelemetryRecord {
		return TelemetryRecord{TS: time.Now(), MessageID: fmt.Sprintf("m-%d-%d", dev, seq),
			Points: map[string]any{"temperature": 21.5 + float64(seq%10), "humidity": 40.0, "seq": float64(seq)}}
	}
	run := func(b *testing.B, write func(dev, seq int) error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		n := int64(b.N)
		cpu0 := cpuTime()
		b.ResetTimer()
		for d := range devices {
			wg.Go(func() {
				for seq := 0; next.Add(1) <= n; seq++ {
					if err := write(d, seq); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
	}
	for _, layout := range []struct {
		name  string
		noLog bool
	}{{"ingest-log", false}, {"device-keyed", true}} {
		b.Run(layout.name, func(b *testing.B) {
			var commits, pages atomic.Int64
			db, err := Open(b.TempDir()+"/t.db", &Options{noIngestLog: layout.noLog, Observer: func(int, int, time.Duration) { commits.Add(1) }})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			populateTelemetry(b, db, devices, warmRecords)
			st := db.Bolt().Stats()
			w0, c0 := st.TxStats.GetWrite(), commits.Load()
			size0 := fileSize(b, db)
			run(b, func(dev, seq int) error {
				return db.Commit(ctx, AppendTelemetry(fmt.Sprintf("device-%04d", dev), rec(dev, seq)))
			})
			st = db.Bolt().Stats()
			pages.Store(st.TxStats.GetWrite() - w0)
			if err := db.MoveIngestLog(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(fileSize(b, db)-size0)/float64(b.N), "disk-B/msg")
			if c := commits.Load() - c0; c > 0 {
				b.ReportMetric(float64(b.N)/float64(c), "msgs/commit")
				b.ReportMetric(float64(pages.Load())/float64(b.N), "page-writes/msg")
			}
		})
	}
	b.Run("raw-bbolt-batch", func(b *testing.B) {
		db, err := Open(b.TempDir()+"/t.db", &Options{noIngestLog: true})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		populateTelemetry(b, db, devices, warmRecords)
		bdb := db.Bolt()
		run(b, func(dev, seq int) error {
			r := rec(dev, seq)
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			k := telemetryKey(fmt.Sprintf("device-%04d", dev), r.TS.UnixNano(), 0)
			return bdb.Batch(func(tx *bbolt.Tx) error { return tx.Bucket(bktTelemetry).Put(k, v) })
		})
	})
}

// warmRecords is how many records each device already has, so that the
// tree is as deep as a node's after a few minutes of ingest.
const warmRecords = 300

// populateTelemetry stores n records for each of devices devices, in big
// NoSync transactions.
func populateTelemetry(b *testing.B, db *DB, devices, n int) {
	b.Helper()
	bdb := db.Bolt()
	bdb.NoSync = true
	defer func() { bdb.NoSync = false }()
	ts := time.Now().Add(-time.Hour).UnixNano()
	v := []byte(`{"ts":"2026-12-02T19:04:29.123456789Z","points":{"humidity":40,"seq":12,"temperature":23.5},"mid":"m-1-12"}`)
	for d := range devices {
		err := bdb.Update(func(tx *bbolt.Tx) error {
			tb := tx.Bucket(bktTelemetry)
			for i := range n {
				if err := tb.Put(telemetryKey(fmt.Sprintf("device-%04d", d), ts+int64(i), 0), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// fileSize returns the bytes of db's file in use: the file size less the
// free pages bbolt would reuse.
func fileSize(b testing.TB, db *DB) int64 {
	b.Helper()
	var used int64
	err := db.Bolt().View(func(tx *bbolt.Tx) error {
		st := db.Bolt().Stats()
		used = tx.Size() - int64(st.FreePageN+st.PendingPageN)*int64(db.Bolt().Info().PageSize)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return used
}

// cpuTime returns the user+system CPU the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
