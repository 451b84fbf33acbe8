package node

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// twinmesh bench --connect-only against a running node: the sessions are
// opened by three worker processes (the real binary, re-executed) from
// two loopback source addresses at the --ramp rate, each sends one
// message and stays open; the run reports the node's memory per device,
// REST and ingest latency beside the population, and pings every session
// at the end. Then more devices than the node's --max-connections: the
// bench stops after --max-failures refusals and says so in its result and
// its error instead of hanging.
func TestBenchConnectOnly(t *testing.T) {
	bin := testutil.Binary(t)
	n := testutil.Start(t, t.TempDir(), "--device-rate", "1000000", "--device-burst", "1000000", "--max-connections", "40")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := func(devices string, extra ...string) (connectRun, string, error) {
		var stdout, stderr bytes.Buffer
		args := append([]string{"--node", n.URL(), "--token", n.Token, "--mqtt", n.Addr("mqtt"), "--connect-only", "--json",
			"--worker-binary", bin, "--devices", devices, "--per-worker", "10", "--source-addrs", "2", "--hold", "1s"}, extra...)
		err := benchCmd(ctx, args, &stdout, &stderr)
		var r connectRun
		if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil {
			t.Fatalf("bench --json output: %v (bench error %v)\n%s\n%s", jerr, err, stdout.String(), stderr.String())
		}
		return r, stderr.String(), err
	}

	r, log, err := run("30", "--ramp", "60", "--rest-gets", "10", "--burst-devices", "5", "--burst", "1s")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, log)
	}
	if r.Connected != 30 || r.Failed != 0 || r.StillOpen != 30 || r.Workers != 3 {
		t.Errorf("%d connected, %d failed, %d still open, %d workers", r.Connected, r.Failed, r.StillOpen, r.Workers)
	}
	if len(r.Sources) != 2 || r.Sources[0] != "127.0.1.1" || r.Sources[1] != "127.0.1.2" {
		t.Errorf("source addresses %v", r.Sources)
	}
	// 30 sessions at 60/s take about half a second (a burst of 3).
	if r.ConnectPerSec <= 0 || r.ConnectPerSec > 90 || r.ConnectSeconds < 0.3 {
		t.Errorf("connect rate %.0f/s over %.2fs with --ramp 60", r.ConnectPerSec, r.ConnectSeconds)
	}
	if r.After.Sessions-r.Before.Sessions != 30 || r.After.Goroutines <= r.Before.Goroutines || r.After.RSS <= 0 || r.PerDevice.HeapInuse == 0 || r.After.HeapLive <= 0 || r.Commits.Commits <= 0 {
		t.Errorf("node before %+v, after %+v", r.Before, r.After)
	}
	if r.REST.Requests != 10 || r.REST.Failed != 0 || r.REST.P99 < r.REST.P50 || r.REST.P50 <= 0 {
		t.Errorf("REST reads %+v", r.REST)
	}
	if r.Ingest == nil || r.Ingest.Acked <= 0 || r.Ingest.Errors != 0 {
		t.Errorf("ingest burst %+v", r.Ingest)
	}

	r, log, err = run("60", "--max-failures", "6", "--burst-devices", "0", "--rest-gets", "5")
	if err == nil || !strings.Contains(err.Error(), "failed to open") {
		t.Fatalf("bench beyond --max-connections: err %v\n%s", err, log)
	}
	if r.Failed < 6 || r.Connected+r.Failed > 60 || r.Reasons["connack"] != r.Failed || !r.GaveUp || !strings.Contains(r.FirstError, "return code 3") {
		t.Errorf("beyond the limit: %d connected, %d failed %v (gave up: %v), first: %s", r.Connected, r.Failed, r.Reasons, r.GaveUp, r.FirstError)
	}
	if r.Connected < 30 || int64(r.StillOpen) != r.Connected {
		t.Errorf("beyond the limit: %d connected, %d still open", r.Connected, r.StillOpen)
	}
}

func TestSourceAddrs(t *testing.T) {
	for _, tc := range []struct {
		spec, broker string
		sessions     int
		want         string
		err          bool
	}{
		{"auto", "127.0.0.1:1883", 18000, "127.0.1.1", false},
		{"auto", "127.0.0.1:1883", 60000, "127.0.1.1 127.0.1.2 127.0.1.3", false},
		{"auto", "10.0.0.5:1883", 60000, "", false},
		{"none", "127.0.0.1:1883", 60000, "", false},
		{"2", "127.0.0.1:1883", 10, "127.0.1.1 127.0.1.2", false},
		{"2", "10.0.0.5:1883", 10, "", true},
		{"0", "127.0.0.1:1883", 10, "", true},
		{"10.0.0.7, 10.0.0.8", "10.0.0.5:1883", 10, "10.0.0.7 10.0.0.8", false},
		{"10.0.0.7,nope", "10.0.0.5:1883", 10, "", true},
	} {
		got, err := sourceAddrs(tc.spec, tc.broker, tc.sessions)
		if (err != nil) != tc.err || strings.Join(got, " ") != tc.want {
			t.Errorf("sourceAddrs(%q, %q, %d) = %v, %v", tc.spec, tc.broker, tc.sessions, got, err)
		}
	}
}

// With --nodes the bench spawns a cluster, restarts its members one at a
// time (so that none holds the grains registration activated), spreads
// the sessions round-robin and sums the members' footprints: the way to
// open more sessions from one host than one process's open-file limit.
func TestBenchConnectOnlyCluster(t *testing.T) {
	bin := testutil.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "bench", "--connect-only", "--nodes", "2", "--devices", "20", "--json",
		"--per-worker", "10", "--source-addrs", "none", "--hold", "1s", "--rest-gets", "5", "--burst-devices", "4", "--burst", "1s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var r connectRun
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("bench --json output: %v\n%s", err, stdout.String())
	}
	if r.Nodes != 2 || r.Connected != 20 || r.StillOpen != 20 || r.Failed != 0 {
		t.Fatalf("%d nodes, %d connected, %d still open, %d failed", r.Nodes, r.Connected, r.StillOpen, r.Failed)
	}
	if r.Before.GrainsAlive != 0 || r.After.Sessions-r.Before.Sessions != 20 {
		t.Errorf("before %+v, after %+v: want no grain before and 20 sessions more after", r.Before, r.After)
	}
	if len(r.NodesAfter) != 2 || r.NodesAfter[0].Sessions != 10 || r.NodesAfter[1].Sessions != 10 {
		t.Errorf("sessions per node %+v, want 10 each", r.NodesAfter)
	}
	if r.Ingest == nil || r.Ingest.Acked <= 0 || r.Ingest.Errors != 0 || r.REST.Failed != 0 {
		t.Errorf("ingest burst %+v, REST %+v", r.Ingest, r.REST)
	}
	if n := strings.Count(stderr.String(), "restarted node pid"); n != 2 {
		t.Errorf("%d restarts, want one per member\n%s", n, stderr.String())
	}
}
