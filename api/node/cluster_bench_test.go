package node

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/internal/testutil"
)

// benchMembers reads a node's cluster view: alive member names → remote.
func benchMembers(ctx context.Context, c *testutil.Client) (map[string]string, map[string]int64, error) {
	st, _, body, err := c.Do(ctx, "GET", "/api/v1/cluster", nil)
	if err != nil || st != 200 {
		return nil, nil, fmt.Errorf("GET /cluster: %d %v", st, err)
	}
	var v struct {
		Members []struct {
			Name, Remote, State string
			Grains              int64
		} `json:"members"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, nil, err
	}
	alive, grains := map[string]string{}, map[string]int64{}
	for _, m := range v.Members {
		if m.State == "alive" {
			alive[m.Name] = m.Remote
			grains[m.Name] = m.Grains
		}
	}
	return alive, grains, nil
}

// ownedBy returns the IDs whose grain rendezvous hashing places on member
// name among the alive members.
func ownedBy(ids []string, alive map[string]string, name string) []string {
	var remotes []string
	for _, r := range alive {
		remotes = append(remotes, r)
	}
	var out []string
	for _, id := range ids {
		if tmcluster.Rank(id, remotes)[0] == alive[name] {
			out = append(out, id)
		}
	}
	return out
}

func waitAliveB(b *testing.B, c *testutil.Client, names ...string) map[string]string {
	b.Helper()
	var alive map[string]string
	testutil.Eventually(b, 60*time.Second, fmt.Sprintf("%v alive", names), func() bool {
		var err error
		alive, _, err = benchMembers(context.Background(), c)
		if err != nil || len(alive) != len(names) {
			return false
		}
		for _, n := range names {
			if alive[n] == "" {
				return false
			}
		}
		return true
	})
	return alive
}

// BenchmarkClusterFailover measures, on three real nodes on loopback with
// --replicas 2: the time from SIGKILL of a node until every grain it owned
// answers a durable write again on a survivor (failover), memberlist's
// detection time, and the time from a fourth node's readiness until it
// serves every grain rendezvous hashing gives it (rebalancing on join).
// Run with -benchtime 1x; each iteration starts its own cluster.
func BenchmarkClusterFailover(b *testing.B) {
	const devices = 300
	b.Logf("machine: %d cores (GOMAXPROCS %d)", runtime.NumCPU(), runtime.GOMAXPROCS(0))
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		n1 := testutil.Start(b, dir+"/n1", "--node-name", "n1")
		n2 := testutil.Start(b, dir+"/n2", "--node-name", "n2", "--join", n1.Addr("gossip"))
		n3 := testutil.Start(b, dir+"/n3", "--node-name", "n3", "--join", n1.Addr("gossip"))
		c1 := n1.Client()
		waitAliveB(b, c1, "n1", "n2", "n3")
		alive := waitAliveB(b, n3.Client(), "n1", "n2", "n3")
		_ = n2
		ids := make([]string, devices)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for d := range ids {
			ids[d] = fmt.Sprintf("fo-%d", d)
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c1.MustDo(b, "PUT", "/api/v1/devices/"+ids[d], nil, 201)
				c1.MustDo(b, "PATCH", "/api/v1/twins/"+ids[d], `{"desired":{"warm":1}}`, 200)
			}()
		}
		wg.Wait()
		victims := ownedBy(ids, alive, "n3")

		b.ResetTimer()
		killed := time.Now()
		n3.Kill()
		var detected time.Duration
		detectDone := make(chan struct{})
		go func() {
			defer close(detectDone)
			for time.Since(killed) < time.Minute {
				if a, _, err := benchMembers(context.Background(), c1); err == nil && a["n3"] == "" {
					detected = time.Since(killed)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		served := make([]time.Duration, len(victims))
		for v, id := range victims {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(killed) < 2*time.Minute {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					st, _, _, err := c1.Do(ctx, "PATCH", "/api/v1/twins/"+id, `{"desired":{"after":1}}`)
					cancel()
					if err == nil && st == 200 {
						served[v] = time.Since(killed)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				served[v] = -1
			}()
		}
		wg.Wait()
		<-detectDone
		sort.Slice(served, func(a, c int) bool { return served[a] < served[c] })
		for _, d := range served {
			if d < 0 {
				b.Fatal("a grain of the killed node never served again")
			}
		}

		// Rebalancing on join: n4 joins; a client keeps touching every twin
		// through n1 until n4 hosts all the grains it owns.
		n4 := testutil.Start(b, dir+"/n4", "--node-name", "n4", "--join", n1.Addr("gossip"))
		ready := time.Now()
		alive4 := waitAliveB(b, c1, "n1", "n2", "n4")
		mine := ownedBy(ids, alive4, "n4")
		c4 := n4.Client()
		var rebalanced time.Duration
		for time.Since(ready) < time.Minute {
			for _, id := range mine {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					_, _, _, _ = c1.Do(context.Background(), "GET", "/api/v1/twins/"+id, nil)
				}()
			}
			wg.Wait()
			if _, grains, err := benchMembers(context.Background(), c4); err == nil && grains["n4"] >= int64(len(mine)) {
				rebalanced = time.Since(ready)
				break
			}
		}
		b.StopTimer()
		if rebalanced == 0 {
			b.Fatalf("n4 did not take over its %d grains within a minute", len(mine))
		}
		med := served[len(served)/2]
		b.ReportMetric(served[len(served)-1].Seconds(), "failover-max-s")
		b.ReportMetric(med.Seconds(), "failover-median-s")
		b.ReportMetric(detected.Seconds(), "detect-s")
		b.ReportMetric(rebalanced.Seconds(), "rebalance-s")
		b.Logf("%d devices; %d grains on the killed node; detection %v; failover median %v, max %v; n4 took over %d grains in %v",
			devices, len(victims), detected.Round(time.Millisecond), med.Round(time.Millisecond),
			served[len(served)-1].Round(time.Millisecond), len(mine), rebalanced.Round(time.Millisecond))
		b.StartTimer()
	}
}
