package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twinmesh/twinmesh/internal/loadgen"
)

// connectRun is what `bench --connect-only` measured.
type connectRun struct {
	Devices int `json:"devices"`
	// Nodes is how many nodes held the sessions (round-robin); the
	// footprints are their sums.
	Nodes   int      `json:"nodes"`
	Workers int      `json:"workers"`
	Sources []string `json:"sources,omitempty"`
	Ramp    float64  `json:"ramp,omitempty"`
	// Connected sessions each sent one QoS 1 message and got its PUBACK.
	Connected  int64            `json:"connected"`
	Failed     int64            `json:"failed"`
	Reasons    map[string]int64 `json:"reasons,omitempty"`
	FirstError string           `json:"firstError,omitempty"`
	GaveUp     bool             `json:"gaveUp,omitempty"`
	// ConnectSeconds is from the first connection to the last one opened;
	// ConnectPerSec = Connected / ConnectSeconds.
	ConnectSeconds float64 `json:"connectSeconds"`
	ConnectPerSec  float64 `json:"connectPerSec"`
	// Before is the node before any session opened, After is after the
	// hold, PerDevice is (After - Before) / Connected.
	Before    footprint `json:"before"`
	After     footprint `json:"after"`
	PerDevice footprint `json:"perDevice"`
	// NodesAfter is each node's own footprint after the hold.
	NodesAfter []footprint `json:"nodesAfter,omitempty"`
	// Commits is what the node's group commit did while the sessions
	// opened (each session's connection state and first message).
	Commits commitStats `json:"commits"`
	// Hold is how long the sessions were idle before After was read.
	Hold time.Duration `json:"hold"`
	// REST is GET /api/v1/twins/{id} of random connected devices, one at a
	// time, while the population is connected.
	REST restLatency `json:"rest"`
	// Ingest is a short QoS 1 burst of other devices, while the
	// population is connected.
	Ingest *loadgen.Result `json:"ingest,omitempty"`
	// StillOpen is how many held sessions answered a ping at the end.
	StillOpen int `json:"stillOpen"`
	// NodeGone is set when the node's /metrics did not answer after the
	// hold (it died or hung): After and PerDevice are then empty.
	NodeGone bool `json:"nodeGone,omitempty"`
}

// footprint is what the node's /metrics say of its memory.
type footprint struct {
	RSS       float64 `json:"rssBytes"`
	HeapInuse float64 `json:"heapInuseBytes"`
	// HeapLive is the heap marked live at the node's last collection.
	HeapLive    float64 `json:"heapLiveBytes"`
	Stacks      float64 `json:"stackInuseBytes"`
	Goroutines  float64 `json:"goroutines"`
	Sessions    float64 `json:"sessions"`
	GrainsAlive float64 `json:"deviceGrainsActive"`
}

func footprintOf(m map[string]float64) footprint {
	return footprint{RSS: m["process_resident_memory_bytes"], HeapInuse: m["go_memstats_heap_inuse_bytes"],
		HeapLive: m["go_gc_heap_live_bytes"],
		Stacks:   m["go_memstats_stack_inuse_bytes"], Goroutines: m["go_goroutines"], Sessions: m["twinmesh_mqtt_connections"],
		GrainsAlive: m[`twinmesh_grains_active{kind="device"}`]}
}

func (a footprint) perDevice(b footprint, n int64) footprint {
	if n <= 0 {
		return footprint{}
	}
	d := float64(n)
	return footprint{RSS: (b.RSS - a.RSS) / d, HeapInuse: (b.HeapInuse - a.HeapInuse) / d,
		HeapLive: (b.HeapLive - a.HeapLive) / d, Stacks: (b.Stacks - a.Stacks) / d,
		Goroutines: (b.Goroutines - a.Goroutines) / d, Sessions: (b.Sessions - a.Sessions) / d, GrainsAlive: (b.GrainsAlive - a.GrainsAlive) / d}
}

func sumFootprints(ms []map[string]float64) footprint {
	var f footprint
	for _, m := range ms {
		g := footprintOf(m)
		f.RSS += g.RSS
		f.HeapInuse += g.HeapInuse
		f.HeapLive += g.HeapLive
		f.Stacks += g.Stacks
		f.Goroutines += g.Goroutines
		f.Sessions += g.Sessions
		f.GrainsAlive += g.GrainsAlive
	}
	return f
}

// benchMember is a node the sessions of a connect-only run go to.
type benchMember struct{ url, token, mqtt string }

// scrapeAll reads every member's /metrics; ok is false when one did not
// answer.
func scrapeAll(ctx context.Context, members []benchMember) (ms []map[string]float64, ok bool) {
	ok = true
	for _, m := range members {
		v := scrape(ctx, m.url)
		ok = ok && len(v) > 0
		ms = append(ms, v)
	}
	return ms, ok
}

// restartAll restarts the spawned nodes one at a time; a member of a
// cluster rejoins through the next one, which is up, and the next
// restart waits until the cluster has every member again.
func restartAll(ctx context.Context, nodes []*spawned) error {
	for i, sp := range nodes {
		if len(nodes) > 1 {
			sp.args = withJoin(sp.args, nodes[(i+1)%len(nodes)].Addr("gossip"))
		}
		if err := sp.restart(); err != nil {
			return err
		}
		if len(nodes) > 1 {
			if err := waitMembers(ctx, sp.url, sp.token, len(nodes)); err != nil {
				return fmt.Errorf("%s after its restart: %w", sp.url, err)
			}
		}
	}
	return nil
}

// withJoin sets the --join of serve's args to addr.
func withJoin(args []string, addr string) []string {
	out := slices.Clone(args)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "--join" {
			out[i+1] = addr
			return out
		}
	}
	return append(out, "--join", addr)
}

// restLatency is what the REST reads measured.
type restLatency struct {
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	P50      time.Duration `json:"p50"`
	P99      time.Duration `json:"p99"`
	Max      time.Duration `json:"max"`
}

// connectOpts are the flags of the connect-only mode.
type connectOpts struct {
	only       bool
	ramp       float64
	workers    int
	perWorker  int
	sources    string
	hold       time.Duration
	restGets   int
	burstDevs  int
	burstFor   time.Duration
	workerExe  string
	maxFailure int
	// connTimeout bounds one session's CONNECT → CONNACK and its first
	// PUBACK.
	connTimeout time.Duration
}

// sourceAddrs resolves --source-addrs for a broker address: "auto" is one
// loopback address per 25,000 sessions (127.0.1.1, 127.0.1.2, …) when the
// broker is on loopback and the system's choice otherwise; "none" is the
// system's choice; a number N is N such addresses; otherwise a
// comma-separated list of IP addresses.
func sourceAddrs(spec, broker string, sessions int) ([]string, error) {
	host, _, _ := net.SplitHostPort(broker)
	loopback := false
	if ip := net.ParseIP(host); ip != nil {
		loopback = ip.IsLoopback() && ip.To4() != nil
	}
	n := 0
	switch spec {
	case "none", "":
		return nil, nil
	case "auto":
		if !loopback {
			return nil, nil
		}
		n = (sessions + 24_999) / 25_000
	default:
		if v, err := strconv.Atoi(spec); err == nil {
			if v < 1 || v > 254 {
				return nil, fmt.Errorf("%w: --source-addrs %d: between 1 and 254 addresses", errUsage, v)
			}
			if !loopback {
				return nil, fmt.Errorf("%w: --source-addrs %d picks addresses on 127.0.0.0/8, the broker %s is not on loopback", errUsage, v, broker)
			}
			n = v
		} else {
			var out []string
			for _, s := range strings.Split(spec, ",") {
				ip := net.ParseIP(strings.TrimSpace(s))
				if ip == nil {
					return nil, fmt.Errorf("%w: --source-addrs: %q is not an IP address", errUsage, s)
				}
				out = append(out, ip.String())
			}
			return out, nil
		}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.1.%d", i+1)
	}
	return out, nil
}

// benchConnect runs `bench --connect-only`: the devices (registered, the
// node restarted if the bench spawned it, so that it starts with no grain
// in memory) open their sessions from worker processes at --ramp, each
// sends one message, and the sessions stay idle for --hold; then the
// node's memory is read, REST reads and an ingest burst run beside the
// population, and every session is pinged.
func benchConnect(ctx context.Context, c *benchConfig, members []benchMember, creds func(int) (string, string, string, error),
	stdout, stderr io.Writer) error {
	o := c.conn
	r := connectRun{Devices: c.devices, Nodes: len(members), Ramp: o.ramp, Hold: o.hold}
	brokers := make([]string, len(members))
	for i, m := range members {
		brokers[i] = m.mqtt
	}
	// The workers' stderr is copied by goroutines of os/exec.
	stderr = &lockedWriter{w: stderr}
	var err error
	if r.Sources, err = sourceAddrs(o.sources, brokers[0], c.devices); err != nil {
		return err
	}
	r.Workers = o.workers
	if r.Workers <= 0 {
		r.Workers = (c.devices + o.perWorker - 1) / o.perWorker
	}
	r.Workers = min(r.Workers, c.devices)
	exe := o.workerExe
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	m0, ok := scrapeAll(ctx, members)
	if !ok {
		return fmt.Errorf("a node's /metrics did not answer (%d nodes)", len(members))
	}
	r.Before = sumFootprints(m0)
	fmt.Fprintf(stderr, "opening %d sessions from %d worker processes, source addresses %v, ramp %v/s …\n",
		c.devices, r.Workers, r.Sources, o.ramp)
	ws := make([]*benchWorker, r.Workers)
	for w := range ws {
		lo, hi := w*c.devices/r.Workers, (w+1)*c.devices/r.Workers
		job := workerJob{Brokers: brokers, Sources: r.Sources, First: lo, Rate: o.ramp / float64(r.Workers),
			Timeout: o.connTimeout, MaxFailures: max(1, o.maxFailure/r.Workers)}
		for i := lo; i < hi; i++ {
			id, user, pass, err := creds(i)
			if err != nil {
				return err
			}
			job.Sessions = append(job.Sessions, loadgen.Session{ClientID: id, Username: user, Password: pass})
		}
		if ws[w], err = startBenchWorker(ctx, exe, job, stderr); err != nil {
			return err
		}
		defer ws[w].stop()
	}
	total := func() (st loadgen.HoldStatus, opened int) {
		st.Reasons = map[string]int64{}
		for _, w := range ws {
			s, done := w.state()
			st.Connected += s.Connected
			st.Failed += s.Failed
			st.GaveUp = st.GaveUp || s.GaveUp
			st.Elapsed = max(st.Elapsed, s.Elapsed)
			for k, v := range s.Reasons {
				st.Reasons[k] += v
			}
			if st.FirstError == "" {
				st.FirstError = s.FirstError
			}
			if done {
				opened++
			}
		}
		return st, opened
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		st, opened := total()
		fmt.Fprintf(stderr, "\r  %5.1fs  %7d connected  %5d failed  %6.0f/s ", st.Elapsed.Seconds(), st.Connected, st.Failed,
			float64(st.Connected)/max(st.Elapsed.Seconds(), 1e-3))
		if opened == len(ws) {
			fmt.Fprintln(stderr)
			r.Connected, r.Failed, r.Reasons, r.FirstError, r.GaveUp = st.Connected, st.Failed, st.Reasons, st.FirstError, st.GaveUp
			r.ConnectSeconds = st.Elapsed.Seconds()
			if len(r.Reasons) == 0 {
				r.Reasons = nil
			}
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	if r.ConnectSeconds > 0 {
		r.ConnectPerSec = float64(r.Connected) / r.ConnectSeconds
	}
	r.Commits = commitsBetween(m0[0], scrape(ctx, members[0].url))
	fmt.Fprintf(stderr, "holding %d idle sessions for %v …\n", r.Connected, o.hold)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.hold):
	}
	m1, ok := scrapeAll(ctx, members)
	r.NodeGone = !ok
	r.After = sumFootprints(m1)
	for _, m := range m1 {
		r.NodesAfter = append(r.NodesAfter, footprintOf(m))
	}
	if !r.NodeGone {
		r.PerDevice = r.Before.perDevice(r.After, r.Connected)
	}
	r.REST = restReads(ctx, c.node, c.token, o.restGets, c.devices)
	if o.burstDevs > 0 && o.burstFor > 0 {
		fmt.Fprintf(stderr, "ingest burst: %d more devices, QoS 1, %v:\n", o.burstDevs, o.burstFor)
		burstCreds := func(i int) (string, string, string, error) { return creds(c.devices + i) }
		res, err := loadgen.Run(ctx, loadgen.Config{Broker: brokers[0], Brokers: brokers, Devices: o.burstDevs, Duration: o.burstFor, QoS: 1,
			Credentials: burstCreds, Progress: stderr})
		if err != nil {
			return fmt.Errorf("ingest burst: %w", err)
		}
		r.Ingest = &res
	}
	for _, w := range ws {
		n, err := w.check(ctx)
		if err != nil {
			return err
		}
		r.StillOpen += n
	}
	if c.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		printConnectRun(stdout, r)
	}
	if r.NodeGone {
		return fmt.Errorf("a node's /metrics did not answer after the hold (%d sessions had opened, %d failed: %v)", r.Connected, r.Failed, r.Reasons)
	}
	if r.Failed > 0 || int64(r.StillOpen) != r.Connected {
		return fmt.Errorf("%d of %d sessions failed to open (%v; first: %s), %d of %d still open at the end",
			r.Failed, c.devices, r.Reasons, r.FirstError, r.StillOpen, r.Connected)
	}
	return nil
}

// printConnectRun prints what a connect-only run measured.
func printConnectRun(w io.Writer, r connectRun) {
	mib := func(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }
	kib := func(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }
	fmt.Fprintf(w, "%d of %d sessions open (%d failed", r.Connected, r.Devices, r.Failed)
	if r.Failed > 0 {
		fmt.Fprintf(w, ": %v, first: %s", r.Reasons, r.FirstError)
	}
	fmt.Fprintf(w, "), %d worker processes, sources %v, %d node(s)\n", r.Workers, r.Sources, r.Nodes)
	fmt.Fprintf(w, "connect rate: %.0f sessions/s (%.1f s, each with one QoS 1 message); node commits meanwhile: %d × %.0f requests, %.1f ms each\n",
		r.ConnectPerSec, r.ConnectSeconds, r.Commits.Commits, r.Commits.MeanRequests, r.Commits.MeanMillis)
	if r.NodeGone {
		fmt.Fprintln(w, "a node's /metrics did not answer after the hold: it died or hung")
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	what := "node"
	if r.Nodes > 1 {
		what = fmt.Sprintf("%d nodes (sums)", r.Nodes)
	}
	fmt.Fprintf(tw, "%s\tbefore\tafter %v idle\tper device\n", what, r.Hold)
	fmt.Fprintf(tw, "RSS\t%s\t%s\t%s\n", mib(r.Before.RSS), mib(r.After.RSS), kib(r.PerDevice.RSS))
	fmt.Fprintf(tw, "Go heap in use\t%s\t%s\t%s\n", mib(r.Before.HeapInuse), mib(r.After.HeapInuse), kib(r.PerDevice.HeapInuse))
	fmt.Fprintf(tw, "Go heap live at the last GC\t%s\t%s\t%s\n", mib(r.Before.HeapLive), mib(r.After.HeapLive), kib(r.PerDevice.HeapLive))
	fmt.Fprintf(tw, "goroutine stacks\t%s\t%s\t%s\n", mib(r.Before.Stacks), mib(r.After.Stacks), kib(r.PerDevice.Stacks))
	fmt.Fprintf(tw, "goroutines\t%.0f\t%.0f\t%.2f\n", r.Before.Goroutines, r.After.Goroutines, r.PerDevice.Goroutines)
	fmt.Fprintf(tw, "device grains active\t%.0f\t%.0f\t%.2f\n", r.Before.GrainsAlive, r.After.GrainsAlive, r.PerDevice.GrainsAlive)
	fmt.Fprintf(tw, "MQTT sessions\t%.0f\t%.0f\t\n", r.Before.Sessions, r.After.Sessions)
	_ = tw.Flush()
	fmt.Fprintf(w, "REST GET twin while connected: %d requests (%d failed), p50 %v, p99 %v, max %v\n", r.REST.Requests, r.REST.Failed,
		r.REST.P50.Round(time.Microsecond), r.REST.P99.Round(time.Microsecond), r.REST.Max.Round(time.Microsecond))
	if in := r.Ingest; in != nil {
		fmt.Fprintf(w, "ingest burst while connected: %.0f QoS 1 msgs/s, p50 %v, p99 %v, %d errors\n", in.MsgsPerSec,
			in.Latency.P50.Round(time.Microsecond), in.Latency.P99.Round(time.Microsecond), in.Errors)
	}
	fmt.Fprintf(w, "still open at the end: %d of %d\n", r.StillOpen, r.Connected)
}

// restReads GETs the twins of n random devices among the first devices,
// one at a time, and reports the latency.
func restReads(ctx context.Context, node, token string, n, devices int) restLatency {
	var r restLatency
	client := &http.Client{Timeout: 30 * time.Second}
	var lat []time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/api/v1/twins/bench-%d", node, rand.IntN(devices)), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		t0 := time.Now()
		res, err := client.Do(req)
		d := time.Since(t0)
		r.Requests++
		if err != nil {
			r.Failed++
			continue
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			r.Failed++
			continue
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	if k := len(lat); k > 0 {
		r.P50, r.P99, r.Max = lat[k/2], lat[min(k-1, k*99/100)], lat[k-1]
	}
	return r
}
