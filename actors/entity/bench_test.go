package entity

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/persistence/record"
)

// BenchmarkStep is the pure core alone: one message stepped, its ops
// applied to an in-memory store and committed, for a device under a room
// (so every telemetry message also updates a stored contribution). No
// actor system, no bbolt: what is left is the core's own CPU and
// allocations per message.
func BenchmarkStep(b *testing.B) {
	for _, op := range []string{"telemetry", "patch"} {
		b.Run(op, func(b *testing.B) {
			m := newMem()
			m.ents["r1"] = record.Entity{ID: "r1", Kind: "room"}
			c := New(Config{Kind: "device", Traits: Device}, m, "d1")
			ctx := context.Background()
			if err := c.Load(ctx, t0); err != nil {
				b.Fatal(err)
			}
			drive := func(now time.Time, msg any) {
				res := c.Step(ctx, now, msg)
				for res != nil {
					if err := m.apply(res.Ops); err != nil {
						b.Fatal(err)
					}
					res = c.Commit(ctx, now, res)
				}
			}
			drive(t0, put("device", "r1"))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				if op == "telemetry" {
					drive(now, telemetry("", map[string]any{"temperature": 20 + float64(i%10), "humidity": float64(40 + i%20), "seq": float64(i)}))
				} else {
					drive(now, desired(fmt.Sprintf(`{"setpoint":%d,"seq":%d}`, 20+i%10, i), nil))
				}
				if i%1000 == 999 {
					m.tel["d1"] = nil // keep the fake store small
				}
			}
		})
	}
}
