package persistence

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// The write benchmarks compare our group commit with bbolt's own DB.Batch on
// the same file layout: 1000 (and 100) concurrent writers overwriting random
// twins among 100k, ~300-byte JSON documents, real fsync.
const benchTwins = 100_000

var benchWriters = []int{1000, 100}

func benchKey(i int) string { return fmt.Sprintf("device-%07d", i) }

// benchDoc returns a ~300-byte twin document.
func benchDoc(id string, version int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"version":%d,"desired":{"setpoint":21.5,"mode":"auto","fan":"low"},`+
		`"reported":{"temperature":21.37,"humidity":43.2,"battery":87,"firmware":"1.4.2","online":true},`+
		`"metadata":{"desired":{"$lastUpdated":"2025-03-01T12:00:00Z"},"reported":{"$lastUpdated":"2025-03-01T12:00:05.123Z"}},`+
		`"tags":{"site":"oslo-1","floor":3}}`, id, version)
}

// openPopulated opens a DB in dir holding n twins, written with NoSync in
// big Update batches, and leaves it in the sync mode of o.
func openPopulated(b *testing.B, dir string, n int, o *Options) *DB {
	b.Helper()
	db, err := Open(filepath.Join(dir, fmt.Sprintf("twins-%d.db", n)), o)
	if err != nil {
		b.Fatal(err)
	}
	bdb := db.Bolt()
	bdb.NoSync = true
	const chunk = 20_000
	for lo := 0; lo < n; lo += chunk {
		err := bdb.Update(func(tx *bbolt.Tx) error {
			tw := tx.Bucket(bktTwins)
			tw.FillPercent = 0.9
			for i := lo; i < min(lo+chunk, n); i++ {
				k := benchKey(i)
				if err := tw.Put([]byte(k), benchDoc(k, 1)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := bdb.Sync(); err != nil {
		b.Fatal(err)
	}
	bdb.NoSync = o.NoSync
	return db
}

// runWriters performs b.N writes of random twins from `writers` goroutines
// and reports writes/s.
func runWriters(b *testing.B, writers int, write func(key string, doc []byte) error) {
	keys := make([]string, benchTwins)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	doc := benchDoc(benchKey(0), 2) // same size as every stored twin
	var next atomic.Int64
	var wg sync.WaitGroup
	n := int64(b.N)
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for next.Add(1) <= n {
				if err := write(keys[rng.IntN(len(keys))], doc); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

func BenchmarkGroupCommit(b *testing.B) {
	var commits, requests atomic.Int64
	db := openPopulated(b, b.TempDir(), benchTwins, &Options{Observer: func(r, _ int, _ time.Duration) {
		commits.Add(1)
		requests.Add(int64(r))
	}})
	defer db.Close()
	ctx := context.Background()
	for _, writers := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			commits.Store(0)
			requests.Store(0)
			runWriters(b, writers, func(key string, doc []byte) error {
				return db.Commit(ctx, PutTwin(key, doc))
			})
			if c := commits.Load(); c > 0 {
				b.ReportMetric(float64(requests.Load())/float64(c), "req/commit")
			}
		})
	}
}

func BenchmarkRawBoltBatch(b *testing.B) {
	db := openPopulated(b, b.TempDir(), benchTwins, &Options{})
	defer db.Close()
	bdb := db.Bolt() // bbolt defaults: MaxBatchSize 1000, MaxBatchDelay 10ms
	for _, writers := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			var mu sync.Mutex
			txs := map[int]int{}
			runWriters(b, writers, func(key string, doc []byte) error {
				return bdb.Batch(func(tx *bbolt.Tx) error {
					mu.Lock()
					txs[tx.ID()]++ // a retried call counts twice: good enough
					mu.Unlock()
					return tx.Bucket(bktTwins).Put([]byte(key), doc)
				})
			})
			if len(txs) > 0 {
				b.ReportMetric(float64(b.N)/float64(len(txs)), "req/commit")
			}
		})
	}
}

// BenchmarkGetTwin is the persistence half of "re-activation time vs number
// of stored twins": a random GetTwin plus decoding the document, on a file
// holding 10k, 100k (and, with TWINMESH_BENCH_LARGE=1, 1M) twins. The file is
// built once per size; it is then in the page cache, so this is the warm
// latency.
func BenchmarkGetTwin(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if os.Getenv("TWINMESH_BENCH_LARGE") == "1" {
		sizes = append(sizes, 1_000_000)
	}
	dir := b.TempDir()
	for _, n := range sizes {
		db := openPopulated(b, dir, n, &Options{NoSync: true})
		b.Run(fmt.Sprintf("twins=%dk", n/1000), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(uint64(n), 7))
			var lat []time.Duration
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := benchKey(rng.IntN(n))
				sample := i%8 == 0
				i++
				var start time.Time
				if sample {
					start = time.Now()
				}
				doc, err := db.GetTwin(k)
				if err != nil {
					b.Fatal(err)
				}
				var twin map[string]any
				if err := json.Unmarshal(doc, &twin); err != nil {
					b.Fatal(err)
				}
				if sample {
					lat = append(lat, time.Since(start))
				}
			}
			if len(lat) > 0 {
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			}
		})
		path := db.Path()
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		_ = os.Remove(path)
	}
}

// BenchmarkWireRoundTrip measures what shipping one twin write costs
// besides the network: Wire, JSON encoding and decoding, and FromWire of a
// PutTwin with a ~300-byte document.
func BenchmarkWireRoundTrip(b *testing.B) {
	k := benchKey(1)
	op := PutTwin(k, benchDoc(k, 1))
	b.ReportAllocs()
	for b.Loop() {
		w, ok := op.Wire()
		if !ok {
			b.Fatal("no wire form")
		}
		buf, err := json.Marshal(w)
		if err != nil {
			b.Fatal(err)
		}
		var got WireOp
		if err := json.Unmarshal(buf, &got); err != nil {
			b.Fatal(err)
		}
		if FromWire(got).err != nil {
			b.Fatal("FromWire failed")
		}
	}
}
