package jepsen

import (
	"context"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/faults"
	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestJepsenShort runs a twinmesh cluster in network namespaces under
// faults and checks what its clients saw (see the package doc): 3 nodes,
// --replicas 2, a pause of one member longer than failure detection, a
// 20 s minority partition, a SIGKILL and restart.
//
// It runs with TWINMESH_JEPSEN=1, as its own step of `make test` (`make
// jepsen`, scripts/jepsen.sh): alone, so that other packages' tests do not
// take its CPU and stretch the cluster's timing, and outside `go test
// ./...`, which developers run without root. It needs root, `ip netns` and
// nftables: it skips without them, and fails instead under CI=true.
//
// Environment:
//
//	TWINMESH_JEPSEN_SEED      replays a run's schedule and client choices (printed by every run)
//	TWINMESH_JEPSEN_DURATION  long form: a random schedule of every fault kind this long (e.g. 30m)
//	TWINMESH_JEPSEN_NODES     cluster size (default 3; the long form is meant for 5)
//	TWINMESH_JEPSEN_FAULTS    comma-separated fault kinds for the long form (default all)
//	TWINMESH_JEPSEN_DIR       where data, logs and visualizations go (default a new temp folder, kept when the run fails)
//	TWINMESH_JEPSEN_STALE_READS=1  reads and 412s may be stale: only acknowledged writes are checked for linearizability
func TestJepsenShort(t *testing.T) {
	if os.Getenv("TWINMESH_JEPSEN") != "1" {
		t.Skip("the Jepsen test runs with TWINMESH_JEPSEN=1, as its own step of make test (make jepsen)")
	}
	faults.Require(t)

	seed := time.Now().UnixNano() % 1_000_000_000
	if s := os.Getenv("TWINMESH_JEPSEN_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("TWINMESH_JEPSEN_SEED=%q: %v", s, err)
		}
		seed = v
	}
	nodes := 3
	if s := os.Getenv("TWINMESH_JEPSEN_NODES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 3 {
			t.Fatalf("TWINMESH_JEPSEN_NODES=%q: want a number ≥ 3", s)
		}
		nodes = v
	}
	rng := rand.New(rand.NewSource(seed))
	schedule := ShortSchedule(rng, nodes)
	form := "short"
	checkTimeout := time.Minute
	var generation time.Duration
	if s := os.Getenv("TWINMESH_JEPSEN_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("TWINMESH_JEPSEN_DURATION=%q: %v", s, err)
		}
		var kinds []FaultKind
		if f := os.Getenv("TWINMESH_JEPSEN_FAULTS"); f != "" {
			for _, k := range strings.Split(f, ",") {
				kinds = append(kinds, FaultKind(strings.TrimSpace(k)))
			}
		}
		schedule = RandomSchedule(rng, nodes, d, kinds)
		form = "long (" + d.String() + ")"
		checkTimeout = 2 * time.Minute
		generation = time.Minute
	}
	t.Logf("seed %d (set TWINMESH_JEPSEN_SEED=%d to replay), %s form, %d nodes, %d faults", seed, seed, form, nodes, len(schedule))

	dir := os.Getenv("TWINMESH_JEPSEN_DIR")
	keep := dir != ""
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "twinmesh-jepsen-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := testutil.Binary(t)
	if out, err := exec.Command("git", "-C", testutil.RepoRoot(), "describe", "--always", "--dirty").Output(); err == nil {
		t.Logf("twinmesh built from the working tree at %s", strings.TrimSpace(string(out)))
	}

	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		// Leave time to stop the cluster and remove the network.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		defer cancel()
	}
	res, err := Run(ctx, Config{
		Binary: bin, Dir: dir, Nodes: nodes, Seed: seed, Schedule: schedule,
		CheckTimeout:      checkTimeout,
		CheckBudget:       20 * time.Minute,
		Generation:        generation,
		StaleReadsAllowed: os.Getenv("TWINMESH_JEPSEN_STALE_READS") == "1",
		Logf:              t.Logf,
	})
	if err != nil {
		t.Fatalf("seed %d: the harness could not run: %v (logs in %s)", seed, err, dir)
	}
	t.Log("\n" + res.Report())
	v := res.Violations()
	for _, s := range v {
		t.Errorf("seed %d: %s", seed, s)
	}
	if len(v) == 0 && !keep {
		os.RemoveAll(dir)
	}
}
