package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/persistence"
)

// The benchmarks' output must stay parseable by benchstat: no logs.
func init() { slog.SetDefault(slog.New(slog.DiscardHandler)) }

// BenchmarkGrainPath is one device message through the facade and the
// grain, as an adapter sends it: telemetry decoded from the device's JSON
// payload, or a desired patch as REST sends it; 1,000 devices under one
// room, 64 parallel callers on 2 cores, group commit on bbolt without fsync (so the CPU
// cost of the path shows, not the disk). It uses only the facade, so the
// same file measures an older commit in the same run (BENCHMARKS.md).
func BenchmarkGrainPath(b *testing.B) {
	for _, op := range []string{"telemetry", "patch"} {
		b.Run(op, func(b *testing.B) {
			sys, _ := benchSystemOpts(b, filepath.Join(b.TempDir(), "db"), time.Hour, &persistence.Options{NoSync: true})
			ctx := context.Background()
			if _, _, err := sys.PutEntity(ctx, "room", actors.EntitySpec{Kind: "room"}); err != nil {
				b.Fatal(err)
			}
			const devices = 1000
			for i := 0; i < devices; i++ {
				if _, _, err := sys.RegisterDevice(ctx, fmt.Sprintf("d%d", i), "device", &actors.EntitySpec{Parent: "room"}); err != nil {
					b.Fatal(err)
				}
			}
			var n atomic.Int64
			// Enough callers that commits are shared, as with many devices:
			// the figure is the path's cost, not one caller's wait for its
			// group commit.
			b.SetParallelism(32)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					id := fmt.Sprintf("d%d", i%devices)
					var err error
					if op == "telemetry" {
						payload := fmt.Appendf(nil, `{"temperature":%d.5,"humidity":%d,"seq":%d}`, 20+i%10, 40+i%20, i)
						err = sys.Telemetry(ctx, id, actors.DecodeTelemetry(payload, "", time.Time{}, nil))
					} else {
						patch, _ := json.Marshal(map[string]any{"setpoint": 20 + i%10, "seq": i})
						_, _, err = sys.PatchTwin(ctx, id, actors.PatchBody{Desired: patch}, nil)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
