package persistence

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// retentionDay is what simulateRetention measures at the end of a
// simulated day.
type retentionDay struct {
	fileBytes int64 // size of the file
	usedBytes int64 // less its free pages
	records   int   // warm records stored (written minus pruned)
}

// simulateRetention writes perHour records an hour for each of devices
// devices, in simulated time, for days days, and prunes what is older than
// retention every simulated hour, as Retain does; it returns the file's
// size at the end of each day. blocks false keeps every record on its own
// (the layout before schema 8). Commits are not fsynced: the size is what
// is measured, not the speed.
func simulateRetention(tb testing.TB, devices, perHour int, retention time.Duration, days int, blocks bool) []retentionDay {
	tb.Helper()
	ctx := context.Background()
	// A lone writer: no batch to wait for.
	db := openTemp(tb, &Options{NoSync: true, MaxWait: time.Microsecond, noIngestLog: !blocks})
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	step := time.Hour / time.Duration(perHour)
	live, seq := 0, 0
	out := make([]retentionDay, 0, days)
	ops := make([]Op, 0, devices)
	for range days {
		for range 24 {
			for range perHour {
				ops = ops[:0]
				for d := range devices {
					r := TelemetryRecord{TS: clock.Add(time.Duration(d) * step / time.Duration(devices)), MessageID: fmt.Sprintf("m-%d-%d", d, seq),
						Points: map[string]any{"temperature": 21.5 + float64(seq%10), "humidity": 40.0, "seq": float64(seq)}}
					ops = append(ops, AppendTelemetry(fmt.Sprintf("device-%05d", d), r))
				}
				if err := db.Commit(ctx, ops...); err != nil {
					tb.Fatal(err)
				}
				live += devices
				seq++
				clock = clock.Add(step)
			}
			n, err := db.PruneTelemetry(ctx, clock.Add(-retention))
			if err != nil {
				tb.Fatal(err)
			}
			live -= n
		}
		st, err := os.Stat(db.path)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, retentionDay{fileBytes: st.Size(), usedBytes: fileSize(tb, db), records: live})
	}
	return out
}

// TestRetentionLevelsOff: under a steady rate with a retention of a
// simulated day, the file stops growing once a day is full: bbolt reuses
// the pages retention frees, blocks straddling the cut included.
func TestRetentionLevelsOff(t *testing.T) {
	days := simulateRetention(t, 50, 12, 24*time.Hour, 5, true)
	for i, d := range days {
		t.Logf("day %d: file %d B, in use %d B, %d records", i+1, d.fileBytes, d.usedBytes, d.records)
	}
	full := days[1] // the first day with a full day behind it
	for i, d := range days[2:] {
		if d.records != full.records {
			t.Errorf("day %d holds %d records, day 2 %d: retention keeps a day", i+3, d.records, full.records)
		}
		if d.fileBytes > full.fileBytes*5/4 {
			t.Errorf("day %d: file of %d B, more than 1.25× day 2's %d B", i+3, d.fileBytes, full.fileBytes)
		}
	}
}

// BenchmarkRetentionWeek: a simulated week at one message a minute from
// each of 200 devices, kept for a simulated day and pruned hourly; the
// file size at the end of each day, in MB, and bytes per live record.
// go test -run '^$' -bench RetentionWeek -benchtime 1x ./persistence/
func BenchmarkRetentionWeek(b *testing.B) {
	for _, layout := range []struct {
		name   string
		blocks bool
	}{{"blocks", true}, {"records-of-their-own", false}} {
		b.Run(layout.name, func(b *testing.B) {
			for b.Loop() {
				days := simulateRetention(b, 200, 60, 24*time.Hour, 7, layout.blocks)
				for i, d := range days {
					b.ReportMetric(float64(d.fileBytes)/1e6, fmt.Sprintf("file-MB-day%d", i+1))
				}
				last := days[len(days)-1]
				b.ReportMetric(float64(last.usedBytes)/float64(last.records), "used-B/record")
				b.ReportMetric(float64(last.fileBytes)/float64(last.records), "file-B/record")
			}
		})
	}
}
