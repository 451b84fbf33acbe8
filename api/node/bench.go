package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/twinmesh/twinmesh/internal/loadgen"
	"github.com/twinmesh/twinmesh/internal/nodeproc"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

type benchConfig struct {
	devices  int
	duration time.Duration
	qos      string
	rate     float64
	node     string
	token    string
	mqtt     string
	baseline bool
	json     bool
	nodes    int
	replicas int
	rules    int
	patchers int
	coap     bool
	coapAddr string
	conn     connectOpts
	// serveFlags are extra flags of the spawned nodes' serve.
	serveFlags string
	// cpuProfile is the folder the nodes' CPU profiles of each run go to.
	cpuProfile string
}

// benchRun is one QoS level's figures, ours and the bare broker's.
type benchRun struct {
	QoS      byte            `json:"qos"`
	Ours     loadgen.Result  `json:"twinmesh"`
	Bare     *loadgen.Result `json:"bareMochi,omitempty"`
	Ratio    float64         `json:"ratio,omitempty"`
	NodeCPU  float64         `json:"nodeCpuSeconds,omitempty"`
	NodeCPUP float64         `json:"nodeCpuPercent,omitempty"`
	RSSStart int64           `json:"nodeRssStart,omitempty"`
	RSSEnd   int64           `json:"nodeRssEnd,omitempty"`
	// Dropped counts QoS 0 messages the node accepted but dropped from its
	// full queue during the run; Stored = Acked - Dropped.
	Dropped int64 `json:"qos0Dropped"`
	// Stored is how many messages the node stored (Acked − Dropped) and
	// StoredPerSec their rate: Ratio compares it with the bare broker's
	// delivered rate, so a node that accepts QoS 0 messages and drops them
	// does not look fast.
	Stored       int64   `json:"stored"`
	StoredPerSec float64 `json:"storedPerSec"`
	// Commits is what the node's group commit did (a node on this host:
	// the first one's metrics).
	Commits commitStats `json:"commits"`
	// Patches are the REST desired patches of --patch-clients, run during
	// the same window.
	Patches *patchResult `json:"patches,omitempty"`
	// Profiles are the CPU profiles of --cpu-profile.
	Profiles []string `json:"cpuProfiles,omitempty"`
}

// scrape reads the samples of the node's /metrics by name, labels
// included (`twinmesh_grains_active{kind="device"}`); a name absent there
// reads 0.
func scrape(ctx context.Context, node string) map[string]float64 {
	out := map[string]float64{}
	req, _ := http.NewRequestWithContext(ctx, "GET", node+"/metrics", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		name, v := line[:i], line[i+1:]
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out
}

// commitStats is what the node's group commit did during a run.
type commitStats struct {
	Commits      int64   `json:"commits"`
	MeanRequests float64 `json:"meanRequestsPerCommit"`
	MeanMillis   float64 `json:"meanCommitMs"`
}

func commitsBetween(a, b map[string]float64) commitStats {
	n := b["twinmesh_commit_seconds_count"] - a["twinmesh_commit_seconds_count"]
	if n <= 0 {
		return commitStats{}
	}
	return commitStats{
		Commits:      int64(n),
		MeanRequests: (b["twinmesh_commit_batch_requests_sum"] - a["twinmesh_commit_batch_requests_sum"]) / n,
		MeanMillis:   1000 * (b["twinmesh_commit_seconds_sum"] - a["twinmesh_commit_seconds_sum"]) / n,
	}
}

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c benchConfig
	fs := newFlagSet("bench", "bench [flags]",
		"Load generator: simulated devices publish telemetry over MQTT against a node (spawned, or --node),\n"+
			"compared with a bare embedded mochi broker.", stderr)
	fs.IntVar(&c.devices, "devices", 1000, "simulated devices, one MQTT connection each")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "how long each QoS level runs")
	fs.StringVar(&c.qos, "qos", "0,1", "QoS levels to run, comma-separated")
	fs.Float64Var(&c.rate, "rate", 0, "messages per second per device; 0 = as fast as acks allow (one in flight per device)")
	fs.StringVar(&c.node, "node", "", "base URL of a running node (default: spawn one in a temp folder)")
	fs.StringVar(&c.token, "token", "", "admin token of --node")
	fs.StringVar(&c.mqtt, "mqtt", "", "MQTT address of --node")
	fs.BoolVar(&c.baseline, "baseline", true, "also measure a bare embedded mochi broker in the same run")
	fs.BoolVar(&c.json, "json", false, "print results as JSON")
	fs.IntVar(&c.nodes, "nodes", 1, "nodes to spawn as one cluster (devices connect round-robin); without --node")
	fs.IntVar(&c.replicas, "replicas", 0, "--replicas of the spawned nodes (default: the node's default, 2)")
	fs.IntVar(&c.rules, "rules", 0, "rules in scope of every device, created before the run (and deleted after)")
	fs.IntVar(&c.patchers, "patch-clients", 0, "REST clients sending durable desired patches to the bench devices during each run")
	fs.BoolVar(&c.coap, "coap", false, "measure confirmable CoAP telemetry (and a bare go-coap server) instead of MQTT")
	fs.StringVar(&c.coapAddr, "coap-addr", "", "CoAP address of --node, for --coap")
	fs.StringVar(&c.serveFlags, "serve-flags", "", "extra flags of the spawned nodes' serve, space-separated (e.g. \"--pprof --idle-timeout 30s\"); without --node")
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "record each node's CPU profile during each run into this folder (spawned nodes get --pprof;\n"+
		"a --node must serve with --pprof); the profile costs the node a few per cent")
	fs.BoolVar(&c.conn.only, "connect-only", false, "open --devices idle sessions (one message each), hold them, and report the connect rate,\n"+
		"the node's memory per device, and REST and ingest latency while they are connected")
	fs.Float64Var(&c.conn.ramp, "ramp", 0, "with --connect-only: new connections per second (0 = as fast as the node answers)")
	fs.IntVar(&c.conn.workers, "workers", 0, "with --connect-only: client processes (default: one per --per-worker sessions)")
	fs.IntVar(&c.conn.perWorker, "per-worker", 8000, "with --connect-only: sessions per client process (each holds one open file per session)")
	fs.StringVar(&c.conn.sources, "source-addrs", "auto", "with --connect-only: local addresses to connect from: auto (one 127.0.1.x per 25,000 sessions\n"+
		"when the node is on loopback), none, a count N of 127.0.1.x addresses, or a comma-separated list")
	fs.DurationVar(&c.conn.hold, "hold", 10*time.Second, "with --connect-only: how long the sessions stay idle before the node's memory is read")
	fs.IntVar(&c.conn.restGets, "rest-gets", 200, "with --connect-only: REST twin reads timed while the sessions are open")
	fs.IntVar(&c.conn.burstDevs, "burst-devices", 100, "with --connect-only: devices of the QoS 1 ingest burst run while the sessions are open (0 = none)")
	fs.DurationVar(&c.conn.burstFor, "burst", 5*time.Second, "with --connect-only: length of the ingest burst")
	fs.IntVar(&c.conn.maxFailure, "max-failures", 100, "with --connect-only: stop opening sessions after this many failed")
	fs.DurationVar(&c.conn.connTimeout, "connect-timeout", 10*time.Second, "with --connect-only: how long one session may take to be accepted and have its first message acknowledged")
	fs.StringVar(&c.conn.workerExe, "worker-binary", "", "with --connect-only: twinmesh binary to run the client processes (default: this one)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var levels []byte
	for _, q := range strings.Split(c.qos, ",") {
		switch strings.TrimSpace(q) {
		case "0":
			levels = append(levels, 0)
		case "1":
			levels = append(levels, 1)
		default:
			return fmt.Errorf("%w: --qos takes 0 and/or 1", errUsage)
		}
	}
	if c.devices < 1 || c.duration <= 0 || c.nodes < 1 || c.replicas < 0 || c.rules < 0 || c.patchers < 0 {
		return fmt.Errorf("%w: --devices, --duration and --nodes must be positive, --rules and --patch-clients not negative", errUsage)
	}
	if c.conn.ramp < 0 || c.conn.workers < 0 || c.conn.perWorker < 1 || c.conn.hold < 0 || c.conn.restGets < 0 || c.conn.burstDevs < 0 || c.conn.maxFailure < 1 || c.conn.connTimeout <= 0 {
		return fmt.Errorf("%w: --ramp, --workers, --hold, --rest-gets and --burst-devices must not be negative, --per-worker, --max-failures and --connect-timeout positive", errUsage)
	}
	if c.conn.only && c.coap {
		return fmt.Errorf("%w: --connect-only measures MQTT sessions (no --coap)", errUsage)
	}
	provisioned := c.devices
	if c.conn.only {
		provisioned += c.conn.burstDevs
	}
	var pids []int
	var brokers, coapAddrs []string
	var spawnedNodes []*spawned
	if c.node == "" {
		var extra []string
		if c.replicas > 0 {
			extra = append(extra, "--replicas", strconv.Itoa(c.replicas))
		}
		extra = append(extra, strings.Fields(c.serveFlags)...)
		if c.cpuProfile != "" && !slices.Contains(extra, "--pprof") {
			extra = append(extra, "--pprof")
		}
		var join string
		for i := 0; i < c.nodes; i++ {
			args := extra
			if join != "" {
				args = append(append([]string(nil), extra...), "--join", join)
			}
			sp, err := spawnNode(ctx, provisioned, fmt.Sprintf("bench-%d", i+1), args, stderr)
			if err != nil {
				return err
			}
			defer sp.stop()
			spawnedNodes = append(spawnedNodes, sp)
			if i == 0 {
				c.node, c.token, c.mqtt, join = sp.url, sp.token, sp.mqtt, sp.Addr("gossip")
			}
			pids = append(pids, sp.Cmd.Process.Pid)
			brokers, coapAddrs = append(brokers, sp.mqtt), append(coapAddrs, sp.Addr("coap"))
		}
		if c.nodes > 1 {
			if err := waitMembers(ctx, c.node, c.token, c.nodes); err != nil {
				return err
			}
		}
	} else if c.token == "" || (c.mqtt == "" && !c.coap) {
		return fmt.Errorf("%w: --node needs --token and --mqtt (or --coap-addr with --coap)", errUsage)
	} else if c.coapAddr != "" {
		coapAddrs = []string{c.coapAddr}
	}
	fmt.Fprintf(stderr, "provisioning %d devices on %s …\n", provisioned, c.node)
	creds, err := provision(ctx, c.node, c.token, provisioned)
	if err != nil {
		return err
	}
	if c.conn.only {
		// Registering activated every device's grain: a restart makes
		// the nodes' memory before the run hold none.
		if err := restartAll(ctx, spawnedNodes); err != nil {
			return err
		}
		members := []benchMember{{url: c.node, token: c.token, mqtt: c.mqtt}}
		if len(spawnedNodes) > 0 {
			members = members[:0]
			for _, sp := range spawnedNodes {
				members = append(members, benchMember{url: sp.url, token: sp.token, mqtt: sp.mqtt})
			}
			c.node, c.mqtt = members[0].url, members[0].mqtt
		}
		return benchConnect(ctx, &c, members, creds, stdout, stderr)
	}
	if c.rules > 0 {
		cleanup, err := createBenchRules(ctx, c.node, c.token, c.rules)
		if err != nil {
			return err
		}
		defer cleanup()
	}
	if c.coap {
		return benchCoAP(ctx, &c, coapAddrs, pids, creds, stdout, stderr)
	}
	targets := []profileTarget{{name: "node", url: c.node, token: c.token}}
	if len(spawnedNodes) > 0 {
		targets = targets[:0]
		for i, sp := range spawnedNodes {
			targets = append(targets, profileTarget{name: fmt.Sprintf("node-%d", i+1), url: sp.url, token: sp.token})
		}
	}
	if c.cpuProfile != "" {
		if err := os.MkdirAll(c.cpuProfile, 0o755); err != nil {
			return err
		}
	}
	var runs []benchRun
	for _, q := range levels {
		r := benchRun{QoS: q}
		cpu0, rss0 := procStats(pids)
		m0 := scrape(ctx, c.node)
		fmt.Fprintf(stderr, "twinmesh, QoS %d, %d devices, %v:\n", q, c.devices, c.duration)
		start := time.Now()
		pctx, stopPatches := context.WithCancel(ctx)
		patches := startPatches(pctx, c.node, c.token, c.patchers, c.devices)
		var profiles *cpuProfiles
		onStart := func() {
			if c.cpuProfile != "" {
				profiles = startCPUProfiles(ctx, c.cpuProfile, targets, q, c.duration)
			}
		}
		r.Ours, err = loadgen.Run(ctx, loadgen.Config{Broker: c.mqtt, Brokers: brokers, Devices: c.devices, Duration: c.duration, QoS: q,
			Rate: c.rate, Credentials: creds, Progress: stderr, OnStart: onStart})
		stopPatches()
		r.Patches = patches.wait()
		if profiles != nil {
			files, perr := profiles.wait()
			if perr != nil {
				return perr
			}
			r.Profiles = files
		}
		if err != nil {
			return fmt.Errorf("twinmesh run: %w", err)
		}
		m1 := scrape(ctx, c.node)
		r.Dropped = int64(m1["twinmesh_mqtt_qos0_dropped_total"] - m0["twinmesh_mqtt_qos0_dropped_total"])
		r.Stored = r.Ours.Acked - r.Dropped
		if r.Ours.Duration > 0 {
			r.StoredPerSec = float64(r.Stored) / r.Ours.Duration.Seconds()
		}
		r.Commits = commitsBetween(m0, m1)
		if len(pids) > 0 {
			cpu1, rss1 := procStats(pids)
			r.NodeCPU, r.RSSStart, r.RSSEnd = cpu1-cpu0, rss0, rss1
			r.NodeCPUP = 100 * r.NodeCPU / time.Since(start).Seconds()
		}
		if c.baseline {
			addr, stop, err := loadgen.StartBareBroker(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "bare mochi, QoS %d:\n", q)
			bare, err := loadgen.Run(ctx, loadgen.Config{Broker: addr, Devices: c.devices, Duration: c.duration, QoS: q,
				Rate: c.rate, Credentials: creds, Progress: stderr})
			stop()
			if err != nil {
				return fmt.Errorf("bare run: %w", err)
			}
			r.Bare = &bare
			if bare.MsgsPerSec > 0 {
				r.Ratio = r.StoredPerSec / bare.MsgsPerSec
			}
		}
		runs = append(runs, r)
	}
	if c.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(runs)
	}
	printRuns(stdout, runs, c.rules)
	return nil
}

// printRuns prints the final table: what each broker accepted, what
// twinmesh stored, latencies, the node's cost, and the ratio of stored
// messages to the bare broker's.
func printRuns(w io.Writer, runs []benchRun, rules int) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "QoS\tbroker\taccepted/s\tstored/s\tp50\tp99\tmax\terrors\tdropped\tnode CPU\tnode RSS\tcommits (req/commit, ms)\tratio\n")
	for _, r := range runs {
		fmt.Fprintf(tw, "%d\ttwinmesh\t%.0f\t%.0f\t%v\t%v\t%v\t%d\t%d\t%.1fs (%.0f%%)\t%d→%d MiB\t%d (%.0f, %.1f)\t\n", r.QoS, r.Ours.MsgsPerSec, r.StoredPerSec,
			r.Ours.Latency.P50.Round(time.Microsecond), r.Ours.Latency.P99.Round(time.Microsecond), r.Ours.Latency.Max.Round(time.Microsecond),
			r.Ours.Errors, r.Dropped, r.NodeCPU, r.NodeCPUP, r.RSSStart>>20, r.RSSEnd>>20,
			r.Commits.Commits, r.Commits.MeanRequests, r.Commits.MeanMillis)
		if r.Bare != nil {
			fmt.Fprintf(tw, "%d\tbare mochi\t%.0f\t\t%v\t%v\t%v\t%d\t\t\t\t\t%.2f\n", r.QoS, r.Bare.MsgsPerSec,
				r.Bare.Latency.P50.Round(time.Microsecond), r.Bare.Latency.P99.Round(time.Microsecond), r.Bare.Latency.Max.Round(time.Microsecond),
				r.Bare.Errors, r.Ratio)
		}
	}
	_ = tw.Flush()
	if rules > 0 {
		fmt.Fprintf(w, "%d rules in scope of every device\n", rules)
	}
	for _, r := range runs {
		if p := r.Patches; p != nil {
			fmt.Fprintf(w, "QoS %d run: %d REST clients, %.0f desired patches/s (%d ok, %d failed), p50 %v, p99 %v\n",
				r.QoS, p.Clients, p.PerSec, p.OK, p.Failed, p.P50.Round(time.Microsecond), p.P99.Round(time.Microsecond))
		}
		for _, f := range r.Profiles {
			fmt.Fprintf(w, "QoS %d run: CPU profile %s (go tool pprof -top %s)\n", r.QoS, f, f)
		}
	}
}

// provision registers bench-0 … bench-(n-1) and returns their credentials.
func provision(ctx context.Context, node, token string, n int) (func(int) (string, string, string, error), error) {
	keys := make([]string, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, _ := http.NewRequestWithContext(ctx, "PUT", fmt.Sprintf("%s/api/v1/devices/bench-%d", node, i), nil)
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := client.Do(req)
			if err == nil {
				defer res.Body.Close()
				var d struct {
					PrimaryKey string `json:"primaryKey"`
				}
				if res.StatusCode >= 300 {
					err = fmt.Errorf("register bench-%d: %s", i, res.Status)
				} else if err = json.NewDecoder(res.Body).Decode(&d); err == nil {
					keys[i] = d.PrimaryKey
				}
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	exp := time.Now().Add(24 * time.Hour)
	return func(i int) (string, string, string, error) {
		id := "bench-" + strconv.Itoa(i)
		tok, err := sas.Sign("bench.local/devices/"+id, keys[i], exp)
		return id, "bench.local/" + id + "/?api-version=2021-04-12", tok, err
	}, nil
}

// procStats sums the CPU seconds and RSS of the spawned nodes.
func procStats(pids []int) (cpu float64, rss int64) {
	for _, pid := range pids {
		c, r, _ := loadgen.ProcStats(pid)
		cpu += c
		rss += r
	}
	return cpu, rss
}

// waitMembers waits until node's GET /api/v1/cluster shows n alive members.
func waitMembers(ctx context.Context, node, token string, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", node+"/api/v1/cluster", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if res, err := http.DefaultClient.Do(req); err == nil {
			var v struct {
				Members []struct{ State string } `json:"members"`
			}
			err = json.NewDecoder(res.Body).Decode(&v)
			res.Body.Close()
			alive := 0
			for _, m := range v.Members {
				if m.State == "alive" {
					alive++
				}
			}
			if err == nil && alive >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("cluster of %d did not form within 60s", n)
}

// spawnNode runs this binary's `serve` in a temp folder with limits raised
// for the load, and waits until it is ready.
func spawnNode(_ context.Context, devices int, name string, extra []string, stderr io.Writer) (*spawned, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "twinmesh-bench-")
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--data", dir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--coap", "127.0.0.1:0",
		"--gossip", "127.0.0.1:0", "--remote", "127.0.0.1:0", "--node-name", name,
		"--device-rate", "1000000", "--device-burst", "1000000", "--max-connections", strconv.Itoa(devices + 100)}, extra...)
	p, err := nodeproc.Start(exe, dir, args, 60*time.Second)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	sp := &spawned{Proc: p, dir: dir, url: "http://" + p.Addr("http"), token: p.Token, mqtt: p.Addr("mqtt"), exe: exe, args: args, stderr: stderr}
	fmt.Fprintf(stderr, "spawned node pid %d: %s, mqtt %s, data %s\n", p.Cmd.Process.Pid, sp.url, sp.mqtt, dir)
	return sp, nil
}

// spawned is a node the bench started and stops.
type spawned struct {
	*nodeproc.Proc
	dir, url, token, mqtt string
	exe                   string
	args                  []string
	stderr                io.Writer
}

// restart stops the node and starts it again on the same data folder
// (its addresses change).
func (sp *spawned) restart() error {
	if _, err := sp.Stop(20 * time.Second); err != nil {
		return fmt.Errorf("restart the spawned node: %w", err)
	}
	p, err := nodeproc.Start(sp.exe, sp.dir, sp.args, 60*time.Second)
	if err != nil {
		return fmt.Errorf("restart the spawned node: %w", err)
	}
	sp.Proc, sp.url, sp.token, sp.mqtt = p, "http://"+p.Addr("http"), p.Token, p.Addr("mqtt")
	fmt.Fprintf(sp.stderr, "restarted node pid %d: %s, mqtt %s\n", p.Cmd.Process.Pid, sp.url, sp.mqtt)
	return nil
}

func (sp *spawned) stop() {
	_, _ = sp.Stop(20 * time.Second)
	_ = os.RemoveAll(sp.dir)
}
