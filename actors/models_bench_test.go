package actors_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
)

// BenchmarkCheckTelemetry is the per-message cost of model validation on
// the telemetry path (CheckTelemetry, what the protocol adapters call
// before handing a message to the grain), for a device without a model and
// for one with the example thermostat model, next to DecodeTelemetry, the
// decoding every message pays already.
func BenchmarkCheckTelemetry(b *testing.B) {
	sys, _ := benchSystem(b, filepath.Join(b.TempDir(), "bench.db"), time.Minute)
	ctx := context.Background()
	doc, err := os.ReadFile("dtdl/testdata/thermostat-v3.json")
	if err != nil {
		b.Fatal(err)
	}
	const model = "dtmi:twinmesh:example:Thermostat;1"
	if _, err := sys.PutModel(ctx, model, doc); err != nil {
		b.Fatal(err)
	}
	for _, id := range []string{"plain", "modelled"} {
		if _, _, err := sys.RegisterDevice(ctx, id, "device", nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := sys.SetDeviceModel(ctx, "modelled", model, true); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"temperature":21.5,"state":"heating"}`)
	b.Run("decode-baseline", func(b *testing.B) {
		b.ReportAllocs()
		ts := time.Now()
		for b.Loop() {
			_ = actors.DecodeTelemetry(payload, "", ts, nil)
		}
	})
	for _, c := range []struct{ name, device string }{{"no-model", "plain"}, {"model", "modelled"}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := sys.CheckTelemetry(c.device, "", payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("model-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := sys.CheckTelemetry("modelled", "", payload); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
