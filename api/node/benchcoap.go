package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/twinmesh/twinmesh/internal/loadgen"
)

// coapRun is the figures of `bench --coap`: confirmable telemetry through
// the node's CoAP listener, and through a bare go-coap server.
type coapRun struct {
	Ours     loadgen.Result  `json:"twinmesh"`
	Bare     *loadgen.Result `json:"bareGoCoAP,omitempty"`
	Ratio    float64         `json:"ratio,omitempty"`
	NodeCPU  float64         `json:"nodeCpuSeconds,omitempty"`
	NodeCPUP float64         `json:"nodeCpuPercent,omitempty"`
	// BenchCPUP is this process's CPU (the clients; during the baseline
	// also the bare server) as a percentage of one core: near 100 × the
	// cores, the run was CPU-starved.
	BenchCPUP     float64     `json:"benchCpuPercent"`
	BareBenchCPUP float64     `json:"bareBenchCpuPercent,omitempty"`
	Cores         int         `json:"cores"`
	Commits       commitStats `json:"commits"`
}

// benchCoAP runs the CoAP mode of bench: every device posts confirmable
// telemetry (answered once stored) with its SAS token in the sas query,
// one request in flight per device; then the same clients against a bare
// go-coap server that stores nothing, in the same run.
func benchCoAP(ctx context.Context, c *benchConfig, addrs []string, pids []int,
	creds func(int) (string, string, string, error), stdout, stderr io.Writer) error {
	if len(addrs) == 0 {
		return fmt.Errorf("%w: --coap needs the node's CoAP address (--coap-addr with --node)", errUsage)
	}
	request := func(i int) (string, []message.Option, error) {
		id, _, tok, err := creds(i)
		return "/devices/" + id + "/messages/events", []message.Option{{ID: message.URIQuery, Value: []byte("sas=" + tok)}}, err
	}
	r := coapRun{Cores: runtime.NumCPU()}
	cpu0, _ := procStats(pids)
	self0, _, _ := loadgen.ProcStats(os.Getpid())
	m0 := scrape(ctx, c.node)
	fmt.Fprintf(stderr, "twinmesh, CoAP CON, %d devices, %v:\n", c.devices, c.duration)
	start := time.Now()
	var err error
	r.Ours, err = loadgen.RunCoAP(ctx, loadgen.CoAPConfig{Addrs: addrs, Devices: c.devices, Duration: c.duration,
		Request: request, Progress: stderr})
	if err != nil {
		return fmt.Errorf("twinmesh run: %w", err)
	}
	el := time.Since(start).Seconds()
	r.Commits = commitsBetween(m0, scrape(ctx, c.node))
	if len(pids) > 0 {
		cpu1, _ := procStats(pids)
		r.NodeCPU = cpu1 - cpu0
		r.NodeCPUP = 100 * r.NodeCPU / el
	}
	self1, _, _ := loadgen.ProcStats(os.Getpid())
	r.BenchCPUP = 100 * (self1 - self0) / el
	if c.baseline {
		addr, stop, err := loadgen.StartBareCoAP(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bare go-coap, CON:\n")
		self0, _, _ = loadgen.ProcStats(os.Getpid())
		start = time.Now()
		bare, err := loadgen.RunCoAP(ctx, loadgen.CoAPConfig{Addrs: []string{addr}, Devices: c.devices, Duration: c.duration,
			Request: request, Progress: stderr})
		el = time.Since(start).Seconds()
		self1, _, _ = loadgen.ProcStats(os.Getpid())
		stop()
		if err != nil {
			return fmt.Errorf("bare run: %w", err)
		}
		r.Bare, r.BareBenchCPUP = &bare, 100*(self1-self0)/el
		if bare.MsgsPerSec > 0 {
			r.Ratio = r.Ours.MsgsPerSec / bare.MsgsPerSec
		}
	}
	if c.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CoAP CON\tserver\tstored/s\tp50\tp99\tmax\terrors\tserver CPU\tbench CPU\tcommits (req/commit, ms)\tratio\n")
	fmt.Fprintf(tw, "\ttwinmesh\t%.0f\t%v\t%v\t%v\t%d\t%.1fs (%.0f%%)\t%.0f%%\t%d (%.0f, %.1f)\t\n", r.Ours.MsgsPerSec,
		r.Ours.Latency.P50.Round(time.Microsecond), r.Ours.Latency.P99.Round(time.Microsecond), r.Ours.Latency.Max.Round(time.Microsecond),
		r.Ours.Errors, r.NodeCPU, r.NodeCPUP, r.BenchCPUP, r.Commits.Commits, r.Commits.MeanRequests, r.Commits.MeanMillis)
	if b := r.Bare; b != nil {
		fmt.Fprintf(tw, "\tbare go-coap\t%.0f\t%v\t%v\t%v\t%d\t(in bench)\t%.0f%%\t\t%.2f\n", b.MsgsPerSec,
			b.Latency.P50.Round(time.Microsecond), b.Latency.P99.Round(time.Microsecond), b.Latency.Max.Round(time.Microsecond),
			b.Errors, r.BareBenchCPUP, r.Ratio)
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "%d cores; bench CPU is this process (clients, and the bare server during its run) in %% of one core\n", r.Cores)
	return nil
}
