package node

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// twinmesh bench --coap against a running node: confirmable telemetry
// through the node and through a bare go-coap server, in one run, with the
// node's commits and the CPU the bench itself used.
func TestBenchCoAP(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--device-rate", "1000000", "--device-burst", "1000000")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := benchCmd(ctx, []string{"--node", n.URL(), "--token", n.Token, "--coap", "--coap-addr", n.Addr("coap"),
		"--devices", "10", "--duration", "2s", "--json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var r coapRun
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("bench --json output: %v\n%s", err, stdout.String())
	}
	if r.Ours.Acked <= 0 || r.Ours.Errors != 0 || r.Ours.MsgsPerSec <= 0 {
		t.Errorf("twinmesh: %+v", r.Ours)
	}
	if r.Bare == nil || r.Bare.Acked <= 0 || r.Ratio != r.Ours.MsgsPerSec/r.Bare.MsgsPerSec {
		t.Errorf("bare: %+v, ratio %v", r.Bare, r.Ratio)
	}
	if r.Commits.Commits <= 0 || r.BenchCPUP <= 0 || r.Cores <= 0 {
		t.Errorf("commits %+v, bench CPU %v%%, %d cores", r.Commits, r.BenchCPUP, r.Cores)
	}
	stored := scrapeMetric(t, n, `twinmesh_coap_messages_total{type="con"}`)
	if int64(stored) != r.Ours.Acked {
		t.Errorf("the node stored %v confirmable messages, the bench saw %d acknowledged", stored, r.Ours.Acked)
	}
}
