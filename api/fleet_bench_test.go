package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/api"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/persistence"
)

// benchTwinDoc is a stored twin document of the contract's shape (section
// 4), about 900 bytes with its metadata, as a device that reports a few
// properties has.
func benchTwinDoc(id string, i int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"kind":"device","version":%d,"tags":{"site":"s%d","floor":%d},`+
		`"desired":{"$version":2,"fw":"2.1","mode":"auto","setpoint":21.5},`+
		`"reported":{"$version":5,"fw":"%d.%d","temperature":%d.5,"humidity":43.2,"battery":87,"online":true},`+
		`"delta":{"fw":"2.1"},"telemetry":{"temperature":{"value":21.5,"ts":"2026-01-01T00:00:00Z"}},`+
		`"connection":{"state":"disconnected","since":"2026-01-01T00:00:00Z"},"rollup":{},"alerts":[],`+
		`"metadata":{"desired":{"$lastUpdated":"2026-01-01T00:00:00Z","$lastUpdatedVersion":2,"fw":{"$lastUpdated":"2026-01-01T00:00:00Z","$lastUpdatedVersion":2}},`+
		`"reported":{"$lastUpdated":"2026-01-01T00:00:05Z","$lastUpdatedVersion":5,"fw":{"$lastUpdated":"2026-01-01T00:00:05Z","$lastUpdatedVersion":5}}}}`,
		id, 7, i%100, i%10, 1+i%3, i%10, 15+i%15)
}

// populateFleet writes n devices (entity, identity, twin) into a fresh
// store at path, in batches of a few thousand per commit.
func populateFleet(tb testing.TB, path string, n int) {
	tb.Helper()
	db, err := persistence.Open(path, &persistence.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	const batch = 2000
	for lo := 0; lo < n; lo += batch {
		ops := make([]persistence.Op, 0, 3*batch)
		for i := lo; i < min(n, lo+batch); i++ {
			id := fmt.Sprintf("dev-%07d", i)
			ops = append(ops,
				persistence.PutEntity(persistence.Entity{ID: id, Kind: "device", Tags: map[string]any{"site": "s" + strconv.Itoa(i%100), "floor": float64(i % 10)}, CreatedAt: now, UpdatedAt: now}),
				persistence.PutIdentity(persistence.Identity{DeviceID: id, PrimaryKey: "k", SecondaryKey: "k", Status: "enabled", CreatedAt: now}),
				persistence.PutTwin(id, benchTwinDoc(id, i)))
		}
		if err := db.Commit(context.Background(), ops...); err != nil {
			tb.Fatal(err)
		}
	}
}

// benchNode serves the REST API over the store at path.
func benchNode(tb testing.TB, path string) (*testutil.Client, *persistence.DB) {
	tb.Helper()
	db, err := persistence.Open(path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	prov, err := tmcluster.NewProvider(tmcluster.Config{NodeName: "bench", GossipAddr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sys, err := actors.New(actors.Config{NodeName: "bench", Provider: prov, Store: db, Registerer: reg})
	if err != nil {
		tb.Fatal(err)
	}
	if err := sys.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	srv, err := api.New(api.Config{Token: token, System: sys, Registerer: reg, Gatherer: reg})
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(func() {
		hs.Close()
		sys.Stop(false)
		_ = db.Close()
	})
	return &testutil.Client{Base: hs.URL, Token: token, HTTP: hs.Client()}, db
}

// runToEnd runs a query through every page and returns the results.
func runToEnd(tb testing.TB, c *testutil.Client, q string) int {
	n, tok := 0, ""
	for {
		body := map[string]any{"query": q, "pageSize": 1000}
		if tok != "" {
			body["continuation"] = tok
		}
		st, _, out, err := c.Do(context.Background(), "POST", "/api/v1/query", body)
		if err != nil || st != 200 {
			tb.Fatalf("%s: %d %.200s %v", q, st, out, err)
		}
		var p queryPage
		if err := json.Unmarshal(out, &p); err != nil {
			tb.Fatal(err)
		}
		n += len(p.Items)
		if p.Continuation == "" {
			return n
		}
		tok = p.Continuation
	}
}

// BenchmarkQueryScale measures POST /api/v1/query over a real bbolt store
// of 10k and 100k devices (1M with TWINMESH_BENCH_1M=1), each query run
// through all its pages. The baseline is the store's own floor: walking
// every entity record (ListEntities) without reading a twin.
//
//	go test -run '^$' -bench BenchmarkQueryScale -benchtime 3x ./api/
func BenchmarkQueryScale(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if os.Getenv("TWINMESH_BENCH_1M") == "1" {
		sizes = append(sizes, 1_000_000)
	}
	queries := []struct{ name, q string }{
		// tags.site = … is checked on the entity record, so only 1 % of the
		// twins are decoded.
		{"tag-hint", "SELECT deviceId FROM devices WHERE tags.site = 's7' AND properties.reported.fw < '2.0'"},
		// No hint: every twin is decoded and evaluated.
		{"reported-scan", "SELECT deviceId FROM devices WHERE properties.reported.temperature > 28"},
		{"group-by", "SELECT properties.reported.fw AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.fw"},
		// The first page of an unfiltered query: independent of the fleet's size.
		{"first-page", "SELECT TOP 100 * FROM devices"},
	}
	for _, n := range sizes {
		path := filepath.Join(b.TempDir(), "fleet.db")
		populateFleet(b, path, n)
		c, db := benchNode(b, path)
		b.Run(fmt.Sprintf("twins=%d/baseline-entity-walk", n), func(b *testing.B) {
			for b.Loop() {
				after, seen := "", 0
				for {
					list, next, err := db.ListEntities(persistence.EntityFilter{}, after, 1000)
					if err != nil {
						b.Fatal(err)
					}
					seen += len(list)
					if next == "" {
						break
					}
					after = next
				}
				if seen != n {
					b.Fatalf("walked %d entities, want %d", seen, n)
				}
			}
		})
		for _, q := range queries {
			b.Run(fmt.Sprintf("twins=%d/%s", n, q.name), func(b *testing.B) {
				results := 0
				for b.Loop() {
					results = runToEnd(b, c, q.q)
				}
				if results == 0 || (strings.Contains(q.name, "first") && results != 100) {
					b.Fatalf("%d results", results)
				}
				b.ReportMetric(float64(results), "results")
			})
		}
	}
}

// BenchmarkImport measures POST /api/v1/import of n devices (a building,
// 100 rooms, n devices with identities, tags and desired properties),
// streamed from a generator so the body is never in memory, into an empty
// store with fsync on. The baseline registers devices the way a script
// without bulk import would: PUT /devices/{id} then PATCH /twins/{id}, from
// 32 concurrent clients, for n/10 devices. n is 100k unless
// TWINMESH_BENCH_IMPORT says otherwise.
//
//	go test -run '^$' -bench BenchmarkImport -benchtime 1x -timeout 30m ./api/
func BenchmarkImport(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("TWINMESH_BENCH_IMPORT")); err == nil && v > 0 {
		n = v
	}
	line := func(w *strings.Builder, i int) {
		fmt.Fprintf(w, `{"entity":{"id":"dev-%07d","kind":"device","parent":"room-%02d"},"identity":{},`+
			`"twin":{"desired":{"fw":"2.1","setpoint":21.5},"tags":{"site":"s%d","floor":%d}}}`+"\n", i, i%100, i%100, i%10)
	}
	b.Run(fmt.Sprintf("ndjson/devices=%d", n), func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			c, _ := benchNode(b, filepath.Join(b.TempDir(), "import.db"))
			pr, pw := io.Pipe()
			go func() {
				var w strings.Builder
				w.WriteString(`{"entity":{"id":"hq","kind":"building"}}` + "\n")
				for r := range 100 {
					fmt.Fprintf(&w, `{"entity":{"id":"room-%02d","kind":"room","parent":"hq"}}`+"\n", r)
				}
				for i := range n {
					line(&w, i)
					if w.Len() > 32<<10 {
						if _, err := pw.Write([]byte(w.String())); err != nil {
							return
						}
						w.Reset()
					}
				}
				_, _ = pw.Write([]byte(w.String()))
				_ = pw.Close()
			}()
			b.StartTimer()
			start := time.Now()
			st, out, err := postStream(c, "/api/v1/import", pr)
			elapsed := time.Since(start)
			b.StopTimer()
			var r struct{ Created, Failed int }
			if err != nil || st != 200 || json.Unmarshal(out, &r) != nil || r.Created != n+101 || r.Failed != 0 {
				b.Fatalf("%d %.300s %v", st, out, err)
			}
			b.ReportMetric(float64(n)/elapsed.Seconds(), "devices/s")
			b.StartTimer()
		}
	})
	b.Run(fmt.Sprintf("baseline-rest/devices=%d", n/10), func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			c, _ := benchNode(b, filepath.Join(b.TempDir(), "rest.db"))
			c.MustDo(b, "PUT", "/api/v1/entities/hq", `{"kind":"building"}`, 201)
			for r := range 100 {
				c.MustDo(b, "PUT", fmt.Sprintf("/api/v1/entities/room-%02d", r), `{"kind":"room","parent":"hq"}`, 201)
			}
			b.StartTimer()
			start := time.Now()
			var wg sync.WaitGroup
			next := make(chan int)
			errs := make(chan error, 32)
			for range 32 {
				wg.Go(func() {
					for i := range next {
						id := fmt.Sprintf("dev-%07d", i)
						if st, _, out, err := c.Do(context.Background(), "PUT", "/api/v1/devices/"+id, fmt.Sprintf(`{"parent":"room-%02d"}`, i%100)); err != nil || st != 201 {
							errs <- fmt.Errorf("PUT %s: %d %s %v", id, st, out, err)
							return
						}
						body := fmt.Sprintf(`{"desired":{"fw":"2.1","setpoint":21.5},"tags":{"site":"s%d","floor":%d}}`, i%100, i%10)
						if st, _, out, err := c.Do(context.Background(), "PATCH", "/api/v1/twins/"+id, body); err != nil || st != 200 {
							errs <- fmt.Errorf("PATCH %s: %d %s %v", id, st, out, err)
							return
						}
					}
				})
			}
			for i := range n / 10 {
				next <- i
			}
			close(next)
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			b.ReportMetric(float64(n/10)/elapsed.Seconds(), "devices/s")
			b.StartTimer()
		}
	})
}

// postStream POSTs a body read from r, never held whole in memory.
func postStream(c *testutil.Client, path string, r io.Reader) (int, []byte, error) {
	req, err := http.NewRequest("POST", c.Base+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	res, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, out, err
}
