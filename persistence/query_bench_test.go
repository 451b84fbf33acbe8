package persistence

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkTelemetryQuery reads warm telemetry the way the node does:
// the newest page of a device (REST GET /twins/{id}/telemetry), the newest
// midWindow records with a grain's activation (the message IDs it must
// recognise), a time window in the middle of the history, and the newest
// records carrying one point name. The store holds queryDevices devices of
// queryRecords records each, written interleaved through the ingest log as
// a node writes them.
func BenchmarkTelemetryQuery(b *testing.B) {
	const queryDevices, queryRecords = 100, 5000
	ctx := context.Background()
	db := openTemp(b, nil)
	base := time.Unix(1_700_000_000, 0).UTC()
	ops := make([]Op, 0, queryDevices)
	for i := range queryRecords {
		ops = ops[:0]
		for d := range queryDevices {
			r := TelemetryRecord{TS: base.Add(time.Duration(i) * time.Second), MessageID: fmt.Sprintf("m-%d-%d", d, i),
				Points: map[string]any{"temperature": 21.5 + float64(i%10), "humidity": 40.0, "seq": float64(i)}}
			if i%7 == 0 {
				r.Points["battery"] = 3.3
			}
			ops = append(ops, AppendTelemetry(fmt.Sprintf("device-%04d", d), r))
		}
		if err := db.Commit(ctx, ops...); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.MoveIngestLog(ctx); err != nil {
		b.Fatal(err)
	}
	mid := base.Add(queryRecords / 2 * time.Second)
	for _, c := range []struct {
		name string
		q    TelemetryQuery
		want int
	}{
		{"latest-100", TelemetryQuery{}, 100},
		{"latest-4096", TelemetryQuery{Limit: 4096}, 4096},
		{"window-600", TelemetryQuery{From: mid, To: mid.Add(599 * time.Second), Limit: 1000}, 600},
		{"name-latest-100", TelemetryQuery{Name: "battery"}, 100},
	} {
		b.Run(c.name, func(b *testing.B) {
			d := 0
			for b.Loop() {
				recs, err := db.QueryTelemetry(ctx, fmt.Sprintf("device-%04d", d%queryDevices), c.q)
				if err != nil {
					b.Fatal(err)
				}
				if len(recs) != c.want {
					b.Fatalf("%d records, want %d", len(recs), c.want)
				}
				d++
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(c.want), "µs/record")
		})
	}
}
