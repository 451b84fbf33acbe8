package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/twin"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/persistence"
)

func benchSystem(b *testing.B, path string, idle time.Duration, sinks ...actors.EventSink) (*actors.System, *persistence.DB) {
	return benchSystemOpts(b, path, idle, nil, sinks...)
}

// benchSystemOpts starts a one-node System on a bbolt file with the given
// persistence options (nil: fsync on every commit).
func benchSystemOpts(b *testing.B, path string, idle time.Duration, opts *persistence.Options, sinks ...actors.EventSink) (*actors.System, *persistence.DB) {
	b.Helper()
	db, err := persistence.Open(path, opts)
	if err != nil {
		b.Fatal(err)
	}
	prov, err := tmcluster.NewProvider(tmcluster.Config{NodeName: "bench", GossipAddr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		b.Fatal(err)
	}
	sys, err := actors.New(actors.Config{NodeName: "bench", Provider: prov, Store: db, IdleTimeout: idle})
	if err != nil {
		b.Fatal(err)
	}
	for _, sink := range sinks {
		sys.OnEvent(sink)
	}
	if err := sys.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sys.Stop(false); _ = db.Close() })
	return sys, db
}

// BenchmarkGrainGet is one request round trip through cluster.Request to an
// active grain on a single node (no persistence on the path).
func BenchmarkGrainGet(b *testing.B) {
	sys, _ := benchSystem(b, filepath.Join(b.TempDir(), "db"), time.Hour)
	ctx := context.Background()
	if _, _, err := sys.PutEntity(ctx, "d1", actors.EntitySpec{Kind: "device"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := sys.GetTwin(ctx, "d1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGrainPatchParallel is a desired patch round trip including its
// durable group commit, from many concurrent callers over 1,000 twins.
func BenchmarkGrainPatchParallel(b *testing.B) {
	sys, _ := benchSystem(b, filepath.Join(b.TempDir(), "db"), time.Hour)
	ctx := context.Background()
	const twins = 1000
	for i := 0; i < twins; i++ {
		if _, _, err := sys.PutEntity(ctx, "d"+strconv.Itoa(i), actors.EntitySpec{Kind: "device"}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(256)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			id := "d" + strconv.Itoa(r.IntN(twins))
			patch := json.RawMessage(`{"setpoint":` + strconv.Itoa(r.IntN(30)) + `}`)
			if _, _, err := sys.PatchTwin(ctx, id, actors.PatchBody{Desired: patch}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "patches/s")
}

// populate writes n registered devices (entity + twin) straight into a
// bbolt file in large transactions, as a node that has run for a while has.
func populate(tb testing.TB, path string, n int) {
	tb.Helper()
	db, err := persistence.Open(path, &persistence.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now().UTC()
	const chunk = 5000
	for start := 0; start < n; start += chunk {
		ops := make([]persistence.Op, 0, 2*chunk)
		for i := start; i < min(start+chunk, n); i++ {
			id := "d" + strconv.Itoa(i)
			tw := twin.New(id, "device")
			_, _ = tw.Patch(twin.Reported, []byte(`{"fw":"1.4.2","model":"TX-9","serial":"`+id+`","battery":87}`), now, twin.DefaultLimits())
			_, _ = tw.Patch(twin.Desired, []byte(`{"setpoint":21.5,"interval":60}`), now, twin.DefaultLimits())
			tw.SetTelemetry(map[string]any{"temperature": 21.3, "humidity": 40.0}, now)
			doc, _ := tw.MarshalJSON()
			ops = append(ops, persistence.PutEntity(persistence.Entity{ID: id, Kind: "device", CreatedAt: now, UpdatedAt: now}),
				persistence.PutTwin(id, doc))
		}
		if err := db.Commit(context.Background(), ops...); err != nil {
			tb.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
}

func storedSizes() []int {
	sizes := []int{10_000, 100_000}
	if os.Getenv("TWINMESH_BENCH_LARGE") == "1" {
		sizes = append(sizes, 1_000_000)
	}
	return sizes
}

// BenchmarkReactivation measures the first request to a passivated twin
// (activation: entity and twin read from bbolt and decoded) as the number of
// stored twins grows. Each iteration touches a different, inactive twin.
func BenchmarkReactivation(b *testing.B) {
	for _, n := range storedSizes() {
		b.Run(fmt.Sprintf("stored=%d", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "db")
			populate(b, path, n)
			sys, _ := benchSystem(b, path, time.Hour)
			ctx := context.Background()
			perm := rand.Perm(n)
			if b.N > n {
				b.Fatalf("b.N=%d exceeds the %d stored twins: run with -benchtime 5000x", b.N, n)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := sys.GetTwin(ctx, "d"+strconv.Itoa(perm[i])); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// rss returns the resident set size of this process (Linux).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res int64
	_, _ = fmt.Sscan(string(b), &size, &res)
	return res * int64(os.Getpagesize())
}

func heapInUse() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// TestMemoryPerTwin reports the Go memory an active twin costs and what a
// passivated (registered, stored, inactive) twin costs. It runs only with
// TWINMESH_BENCH_MEMORY=1 (it writes 1M twins; see BENCHMARKS.md).
func TestMemoryPerTwin(t *testing.T) {
	if os.Getenv("TWINMESH_BENCH_MEMORY") != "1" {
		t.Skip("set TWINMESH_BENCH_MEMORY=1 to measure (takes minutes)")
	}
	registered, active := 1_000_000, 100_000
	if v, err := strconv.Atoi(os.Getenv("TWINMESH_BENCH_REGISTERED")); err == nil {
		registered = v
	}
	if v, err := strconv.Atoi(os.Getenv("TWINMESH_BENCH_ACTIVE")); err == nil {
		active = v
	}
	path := filepath.Join(t.TempDir(), "db")
	populate(t, path, registered)
	st, _ := os.Stat(path)
	db, err := persistence.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	prov, _ := tmcluster.NewProvider(tmcluster.Config{NodeName: "mem", GossipAddr: "127.0.0.1:0", Profile: "local"})
	sys, err := actors.New(actors.Config{NodeName: "mem", Provider: prov, Store: db, IdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { sys.Stop(false); _ = db.Close() }()
	base, baseRSS := heapInUse(), rss()
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < active; i++ {
		if _, _, err := sys.GetTwin(ctx, "d"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	activation := time.Since(start)
	after, afterRSS := heapInUse(), rss()
	if path := os.Getenv("TWINMESH_BENCH_HEAPPROFILE"); path != "" {
		// What the active twins hold, for `go tool pprof -sample_index=inuse_space`.
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}
	perActive := float64(after-base) / float64(active)
	t.Logf("registered=%d active=%d: Go heap+stack per active twin = %.0f B (RSS %.0f B); per passivated twin: 0 B of heap, %.0f B of bbolt file; RSS before activation %d MiB (mmap pages read at start), after %d MiB; activation %v per twin",
		registered, active, perActive, float64(afterRSS-baseRSS)/float64(active), float64(st.Size())/float64(registered),
		baseRSS>>20, afterRSS>>20, activation/time.Duration(active))
}

// BenchmarkTelemetryRules is one telemetry message through its grain with
// 0, 10 and 100 rules in scope (evaluated on every message), with fsync
// off so the figure is the CPU cost of the path, not the disk.
func BenchmarkTelemetryRules(b *testing.B) {
	for _, n := range []int{0, 10, 100} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			sys, _ := benchSystemOpts(b, filepath.Join(b.TempDir(), "db"), time.Hour, &persistence.Options{NoSync: true})
			ctx := context.Background()
			if _, _, err := sys.PutEntity(ctx, "d1", actors.EntitySpec{Kind: "device"}); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n; i++ {
				// Conditions that never hold, so the figure is evaluation,
				// not alert IO.
				doc := fmt.Sprintf(`{"scope":{"kind":"device"},"when":"telemetry.temperature > %d and telemetry.humidity < 5","then":[{"alert":{"severity":"minor"}}]}`, 1000+i)
				if _, _, err := sys.PutRule(ctx, fmt.Sprintf("r%03d", i), []byte(doc)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				in := actors.TelemetryIn{Points: map[string]any{"temperature": 20 + float64(i%10), "humidity": 40.0}}
				if err := sys.Telemetry(ctx, "d1", in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRollupPropagation measures how long a device's new value takes
// to show in its building's rollup, in a building → 10 floors → 100 rooms
// → 10,000 devices tree (4 levels). Each iteration raises one device's
// temperature to a new maximum and waits for the building's rollup event.
func BenchmarkRollupPropagation(b *testing.B) {
	maxSeen := make(chan float64, 1024)
	sys, _ := benchSystemOpts(b, filepath.Join(b.TempDir(), "db"), time.Hour, &persistence.Options{NoSync: true}, func(e actors.Event) {
		if e.Entity != "bld" || e.Type != actors.EventRollup {
			return
		}
		var r map[string]any
		if json.Unmarshal(e.Data, &r) == nil {
			if p, ok := r["temperature"].(map[string]any); ok {
				if m, ok := p["max"].(float64); ok {
					select {
					case maxSeen <- m:
					default:
					}
				}
			}
		}
	})
	ctx := context.Background()
	mustPut := func(id, kind, parent string) {
		if _, _, err := sys.PutEntity(ctx, id, actors.EntitySpec{Kind: kind, Parent: parent}); err != nil {
			b.Fatal(err)
		}
	}
	mustPut("bld", "building", "")
	for f := 0; f < 10; f++ {
		fid := fmt.Sprintf("f%d", f)
		mustPut(fid, "floor", "bld")
		for r := 0; r < 10; r++ {
			rid := fmt.Sprintf("%s-r%d", fid, r)
			mustPut(rid, "room", fid)
			for d := 0; d < 100; d++ {
				mustPut(fmt.Sprintf("%s-d%d", rid, d), "device", rid)
			}
		}
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dev := fmt.Sprintf("f%d-r%d-d%d", i%10, (i/10)%10, i%100)
		v := 1000 + float64(i)
		start := time.Now()
		if err := sys.Telemetry(ctx, dev, actors.TelemetryIn{Points: map[string]any{"temperature": v}}); err != nil {
			b.Fatal(err)
		}
		for m := range maxSeen {
			if m >= v {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
