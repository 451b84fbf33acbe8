package node

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// twinmesh bench against a running node, with rules in scope of every
// device and REST patch clients: it reports what the node stored (not only
// what it accepted), the node's commits, the patch rate, and the ratio to a
// bare mochi broker from stored messages; the rules it created are gone
// afterwards, and mochi's own log lines stay out of its output. With
// --cpu-profile it records the node's CPU profile of each run.
func TestBenchCommand(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--device-rate", "1000000", "--device-burst", "1000000", "--pprof")
	profiles := t.TempDir()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := benchCmd(ctx, []string{"--node", n.URL(), "--token", n.Token, "--mqtt", n.Addr("mqtt"),
		"--devices", "20", "--duration", "2s", "--qos", "0,1", "--rules", "3", "--patch-clients", "2", "--json",
		"--cpu-profile", profiles}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var runs []benchRun
	if err := json.Unmarshal(stdout.Bytes(), &runs); err != nil {
		t.Fatalf("bench --json output: %v\n%s", err, stdout.String())
	}
	if len(runs) != 2 {
		t.Fatalf("%d runs, want QoS 0 and 1", len(runs))
	}
	for _, r := range runs {
		if r.Stored != r.Ours.Acked-r.Dropped || r.Stored <= 0 || r.StoredPerSec <= 0 {
			t.Errorf("QoS %d: stored %d (%.0f/s) of %d accepted, %d dropped", r.QoS, r.Stored, r.StoredPerSec, r.Ours.Acked, r.Dropped)
		}
		if r.Bare == nil || r.Ratio <= 0 || r.Ratio != r.StoredPerSec/r.Bare.MsgsPerSec {
			t.Errorf("QoS %d: ratio %v is not stored/s over the bare broker's rate", r.QoS, r.Ratio)
		}
		if r.Commits.Commits <= 0 || r.Commits.MeanRequests <= 0 {
			t.Errorf("QoS %d: commits %+v", r.QoS, r.Commits)
		}
		if len(r.Profiles) != 1 || !isCPUProfile(t, r.Profiles[0]) {
			t.Errorf("QoS %d: CPU profiles %v", r.QoS, r.Profiles)
		}
		if p := r.Patches; p == nil || p.Clients != 2 || p.OK <= 0 || p.PerSec <= 0 || p.P99 < p.P50 {
			t.Errorf("QoS %d: patches %+v", r.QoS, p)
		}
	}
	var rules struct{ Items []json.RawMessage }
	body := n.Client().MustDo(t, "GET", "/api/v1/rules", nil, 200)
	if err := json.Unmarshal(body, &rules); err != nil || len(rules.Items) != 0 {
		t.Errorf("rules after the bench: %s", body)
	}
	if s := stderr.String(); strings.Contains(s, "level=INFO") && strings.Contains(s, "client") {
		t.Errorf("mochi's log lines in the bench output:\n%s", s)
	}
}

// isCPUProfile reports whether file holds a gzipped profile with samples
// (pprof's wire form is a gzipped protocol buffer).
func isCPUProfile(t *testing.T, file string) bool {
	f, err := os.Open(file)
	if err != nil {
		t.Error(err)
		return false
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Errorf("%s: %v", file, err)
		return false
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Errorf("%s: %v", file, err)
		return false
	}
	return bytes.Contains(raw, []byte("samples")) && bytes.Contains(raw, []byte("cpu"))
}
