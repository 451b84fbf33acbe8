package jepsen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinmesh/twinmesh/internal/faults"
)

// Config describes one run. Zero values take the defaults in the comments.
type Config struct {
	// Binary is the twinmesh executable (required).
	Binary string
	// Dir holds the nodes' data folders and logs and the visualizations
	// (required; kept after the run).
	Dir string
	// Nodes in the cluster (3); Replicas is their --replicas (2).
	Nodes, Replicas int
	// Seed drives the schedule's targets and the clients' choices.
	Seed int64
	// Schedule is the faults in order (ShortSchedule or RandomSchedule).
	Schedule []Fault
	// Lead is the quiet time before the first fault (10 s).
	Lead time.Duration
	// Twins is the number of twins the register clients use (5); Workers
	// the number of REST clients (2 per twin); Pace the pause between one
	// worker's operations (50 ms); OpTimeout bounds one request (5 s).
	Twins, Workers  int
	Pace, OpTimeout time.Duration
	// Devices sending QoS 1 telemetry (3), each one message per DevicePace
	// (100 ms, or longer so that the run sends at most 9,000 per device: a
	// telemetry read returns at most 10,000 records).
	Devices    int
	DevicePace time.Duration
	// CheckTimeout bounds the linearizability check of one twin (60 s);
	// CheckBudget all of them (0: none).
	CheckTimeout, CheckBudget time.Duration
	// Generation, when set, moves the register clients to a fresh set of
	// twins every Generation (Jepsen's independent keys), so that no twin's
	// history grows too long for the checker: porcupine's memory grows
	// with the history, and 40,000 operations on one twin took more than
	// 24 GB. Zero keeps one set for the whole run.
	Generation time.Duration
	// StaleReadsAllowed leaves reads, and CAS answered 412 (which only
	// observe the version), out of the linearizability check: what remains
	// checks that acknowledged writes form one register history. For a
	// cluster that documents stale reads (README: the minority "may still
	// answer reads from the copies it holds"). Off by default: reads must
	// be linearizable.
	StaleReadsAllowed bool
	// Logf prints progress (what is injected, and when); nil discards.
	Logf func(format string, args ...any)
}

func (c *Config) defaults() error {
	if c.Binary == "" || c.Dir == "" {
		return errors.New("jepsen: Config.Binary and Config.Dir are required")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Nodes, 3)
	def(&c.Replicas, 2)
	def(&c.Twins, 5)
	def(&c.Workers, 2*c.Twins)
	def(&c.Devices, 3)
	defD(&c.Lead, 10*time.Second)
	defD(&c.Pace, 50*time.Millisecond)
	defD(&c.OpTimeout, 5*time.Second)
	if c.DevicePace <= 0 {
		total := c.Lead
		for _, f := range c.Schedule {
			total += f.For + f.Settle
		}
		c.DevicePace = max(100*time.Millisecond, total/8000)
	}
	defD(&c.CheckTimeout, 60*time.Second)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return nil
}

const maxMessagesPerDevice = 9000

// runner is the state of one run.
type runner struct {
	cfg     Config
	nw      *faults.Network
	rest    *restClient
	hist    History
	start   time.Time
	names   []string // node names, n1…
	twins   []string
	devices []deviceCreds
	clients atomic.Int64 // porcupine client IDs
	values  atomic.Int64 // unique written values

	gens      [][]string // twins of each generation
	loadStart time.Time

	mu        sync.Mutex
	rounds    []Round
	problems  []string
	injected  []string
	down      map[int]bool // nodes the nemesis keeps down
	selfExits []string
}

func (r *runner) logf(format string, args ...any) {
	r.cfg.Logf("[%6.1fs] "+format, append([]any{time.Since(r.start).Seconds()}, args...)...)
}

func (r *runner) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.problems = append(r.problems, msg)
	r.mu.Unlock()
	r.logf("problem: %s", msg)
}

// Run builds the network, starts the cluster, runs the workload under the
// schedule, heals everything, reads the final state back, stops the
// cluster and checks the history. An error means the harness itself could
// not run (network, cluster start); violations are in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, start: time.Now(), down: map[int]bool{}}
	nw, err := faults.New(ctx, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	defer nw.Close()
	r.nw = nw
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	r.rest = newRESTClient(token, cfg.OpTimeout)
	r.logf("network %s: %d nodes at %s … %s, test at %s; seed %d", nw.ID(), cfg.Nodes, nw.Addr(1), nw.Addr(cfg.Nodes), nw.HostAddr(), cfg.Seed)

	for i := 1; i <= cfg.Nodes; i++ {
		n := nw.Node(i)
		r.names = append(r.names, n.Name())
		nc := faults.NodeConfig{Binary: cfg.Binary, Data: filepath.Join(cfg.Dir, n.Name()), Replicas: cfg.Replicas,
			APIToken: token, ReadyTimeout: 90 * time.Second}
		if err := n.Start(ctx, nc); err != nil {
			return nil, err
		}
	}
	if d, ok := r.waitConverged(ctx, 60*time.Second); !ok {
		return nil, fmt.Errorf("jepsen: the %d nodes did not see each other alive within 60 s: %s", cfg.Nodes, r.clusterViews(ctx))
	} else {
		r.logf("cluster of %d up, membership converged in %v", cfg.Nodes, d.Round(time.Millisecond))
	}
	init, err := r.setup(ctx)
	if err != nil {
		return nil, err
	}

	// The workload.
	wctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	pctx, stopPoll := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() { defer pwg.Done(); r.poll(pctx) }()
	pwg.Add(1)
	go func() { defer pwg.Done(); r.supervise(pctx) }()
	r.loadStart = time.Now()
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func(w int) { defer wg.Done(); r.worker(wctx, w, init) }(w)
	}
	for d := range r.devices {
		wg.Add(1)
		go func(d int) { defer wg.Done(); r.device(wctx, d) }(d)
	}
	loadStart := r.loadStart
	r.logf("workload: %d REST clients on %d twins (%d generations), %d MQTT devices", cfg.Workers, cfg.Twins, len(r.gens), cfg.Devices)

	windows := r.nemesis(ctx)
	stopLoad()
	wg.Wait()
	loadEnd := time.Now()
	if len(windows) > 0 {
		windows[len(windows)-1].End = loadEnd
	}
	windows = append([]Window{{What: "baseline (no fault)", Start: loadStart, End: firstStart(windows, loadEnd)}}, windows...)

	// Everything healed: every node must run (the supervisor starts those
	// that exited), and the cluster converge.
	for i := 1; i <= cfg.Nodes; i++ {
		n := nw.Node(i)
		for t0 := time.Now(); !n.Running() && time.Since(t0) < 60*time.Second; {
			sleep(ctx, 200*time.Millisecond)
		}
		if !n.Running() {
			r.problem("%s is not running at the end (%s)", n.Name(), n.LastExit())
		}
	}
	finalHeal := time.Now()
	conv, converged := r.waitConverged(ctx, 60*time.Second)
	if converged {
		r.logf("final: membership converged %v after the workload", conv.Round(time.Millisecond))
	} else {
		r.logf("final: membership NOT converged 60 s after the workload: %s", r.clusterViews(ctx))
	}
	r.finalReads(ctx)
	views := r.readTelemetry(ctx)
	stopPoll()
	pwg.Wait()

	// Stop the cluster, then check.
	for i := 1; i <= cfg.Nodes; i++ {
		nw.Node(i).Stop(20 * time.Second)
	}
	r.mu.Lock()
	selfExits := append([]string(nil), r.selfExits...)
	r.mu.Unlock()
	res := &Result{Seed: cfg.Seed, Config: cfg, Dir: cfg.Dir, Injected: r.injected, Problems: r.problems, SelfExits: selfExits,
		Converged: converged, ConvergeTime: conv, FinalHeal: finalHeal, Start: r.start}
	ops := r.hist.Ops()
	msgs := r.hist.Messages()
	res.count(ops, msgs)
	res.History = filepath.Join(cfg.Dir, "history.jsonl")
	if err := WriteJSONL(res.History, init, ops, msgs, r.start); err != nil {
		r.problem("write history: %v", err)
		res.History = ""
	}
	checked := Resolve(ops, init)
	if cfg.StaleReadsAllowed {
		checked = writesOnly(checked)
	}
	r.logf("checking %d operations on %d twins for linearizability", len(checked), len(init))
	res.Twins = CheckTwins(checked, init, cfg.CheckTimeout, cfg.CheckBudget, filepath.Join(cfg.Dir, "linearizability"), r.start)
	res.Forks = FindForks(ops, r.start)
	res.Telemetry = CheckTelemetry(msgs, views)
	for i := 1; i <= cfg.Nodes; i++ {
		n := nw.Node(i)
		acts, fenced, err := ParseLog(n.Name(), n.LogPath())
		if err != nil {
			r.problem("read log of %s: %v", n.Name(), err)
		}
		res.Activations = append(res.Activations, acts...)
		res.Fenced += len(fenced)
	}
	res.EpochClashes = FindEpochClashes(res.Activations)
	r.mu.Lock()
	rounds := append([]Round(nil), r.rounds...)
	res.Problems = r.problems
	r.mu.Unlock()
	res.Availability = Availabilities(windows, ops, msgs, rounds, r.names)
	unknown := map[string]int{}
	for _, op := range checked {
		if op.Output.Status == Unknown {
			unknown[op.Twin]++
		}
	}
	for i := range res.Twins {
		res.Twins[i].Unknown = unknown[res.Twins[i].Twin]
	}
	return res, nil
}

func firstStart(ws []Window, or time.Time) time.Time {
	if len(ws) > 0 {
		return ws[0].Start
	}
	return or
}

// setup registers the twins and devices and gives every twin desired.v = 0;
// it returns each twin's state after that, read back.
func (r *runner) setup(ctx context.Context) (map[string]State, error) {
	n1 := r.nw.Node(1).HTTPURL()
	put := func(id string) (deviceCreds, error) {
		var d struct{ ID, PrimaryKey string }
		err := r.retry(ctx, 30*time.Second, "register "+id, func() (bool, error) {
			a := r.rest.do(ctx, n1, "PUT", "/api/v1/devices/"+url.PathEscape(id), []byte(`{}`))
			if a.err != nil || a.status >= 500 {
				return false, nil
			}
			if a.status != 200 && a.status != 201 {
				return false, fmt.Errorf("PUT device %s: %d %s", id, a.status, a.body)
			}
			return true, json.Unmarshal(a.body, &d)
		})
		return deviceCreds{ID: id, Key: d.PrimaryKey}, err
	}
	init := map[string]State{}
	gens := 1
	if r.cfg.Generation > 0 {
		total := r.cfg.Lead
		for _, f := range r.cfg.Schedule {
			total += f.For + f.Settle
		}
		gens = int(total/r.cfg.Generation) + 1
	}
	for g := 0; g < gens; g++ {
		var twins []string
		for i := 0; i < r.cfg.Twins; i++ {
			id := fmt.Sprintf("jt-%d", i)
			if gens > 1 {
				id = fmt.Sprintf("jt%d-%d", g, i)
			}
			st, err := r.initTwin(ctx, n1, id, put)
			if err != nil {
				return nil, err
			}
			init[id] = st
			twins = append(twins, id)
			r.twins = append(r.twins, id)
		}
		r.gens = append(r.gens, twins)
	}
	for i := 0; i < r.cfg.Devices; i++ {
		d, err := put(fmt.Sprintf("jd-%d", i))
		if err != nil {
			return nil, err
		}
		r.devices = append(r.devices, d)
	}
	return init, nil
}

// initTwin registers twin id and gives it desired.v = 0; it returns the
// state read back.
func (r *runner) initTwin(ctx context.Context, n1, id string, put func(string) (deviceCreds, error)) (State, error) {
	var st State
	if _, err := put(id); err != nil {
		return st, err
	}
	err := r.retry(ctx, 30*time.Second, "initial write of "+id, func() (bool, error) {
		op := r.rest.twinOp(ctx, "n1", n1, id, Input{Kind: Write, Value: 0})
		return op.Output.Status == OK, nil
	})
	if err != nil {
		return st, err
	}
	err = r.retry(ctx, 30*time.Second, "initial read of "+id, func() (bool, error) {
		op := r.rest.twinOp(ctx, "n1", n1, id, Input{Kind: Read})
		if op.Output.Status != OK {
			return false, nil
		}
		if op.Output.Missing || op.Output.Value != 0 {
			return false, fmt.Errorf("twin %s read %s right after desired.v = 0 was acknowledged", id, op.describe())
		}
		st = State{Value: 0, Version: op.Output.Version}
		return true, nil
	})
	return st, err
}

// retry calls f every 200 ms until it returns true or an error, or the
// timeout passes.
func (r *runner) retry(ctx context.Context, timeout time.Duration, what string, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := f()
		if err != nil {
			return fmt.Errorf("jepsen: %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jepsen: %s: no success within %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// worker issues random operations on random twins through random nodes
// until ctx ends.
func (r *runner) worker(ctx context.Context, w int, init map[string]State) {
	rng := mrand.New(mrand.NewSource(r.cfg.Seed*1000 + int64(w)))
	client := int(r.clients.Add(1) - 1)
	seen := map[string]int64{}
	for t, s := range init {
		seen[t] = s.Version
	}
	for ctx.Err() == nil {
		gen := r.gens[0]
		if r.cfg.Generation > 0 {
			gen = r.gens[min(int(time.Since(r.loadStart)/r.cfg.Generation), len(r.gens)-1)]
		}
		twin := gen[rng.Intn(len(gen))]
		i := 1 + rng.Intn(r.cfg.Nodes)
		n := r.nw.Node(i)
		var in Input
		switch p := rng.Float64(); {
		case p < 0.5:
			in = Input{Kind: Read}
		case p < 0.75:
			in = Input{Kind: Write, Value: r.values.Add(1)}
		default:
			in = Input{Kind: CAS, Value: r.values.Add(1), Expect: seen[twin]}
		}
		// The request is not tied to ctx: the workload's end must not turn
		// answers into errors.
		op := r.rest.twinOp(context.Background(), n.Name(), n.HTTPURL(), twin, in)
		op.Client = client
		r.hist.Add(op)
		switch {
		case op.Output.Status == Unknown:
			// Its operation may still take effect: a new client (porcupine
			// needs each client's operations to be sequential).
			client = int(r.clients.Add(1) - 1)
		case op.Output.Status == OK:
			seen[twin] = op.Output.Version
		}
		sleep(ctx, r.cfg.Pace/2+time.Duration(rng.Int63n(int64(r.cfg.Pace))))
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// device publishes QoS 1 telemetry with unique message IDs through random
// nodes; a message without PUBACK is sent again (up to three sends) through
// another connection.
func (r *runner) device(ctx context.Context, idx int) {
	d := r.devices[idx]
	rng := mrand.New(mrand.NewSource(r.cfg.Seed*1000 + 500 + int64(idx)))
	var cl paho.Client
	defer func() {
		if cl != nil {
			cl.Disconnect(0)
		}
	}()
	var node string
	for seq := 0; seq < maxMessagesPerDevice && ctx.Err() == nil; seq++ {
		mid := fmt.Sprintf("%s-%d", d.ID, seq)
		m := &Message{Device: d.ID, MID: mid, Sent: time.Now()}
		r.hist.AddMessage(m)
		for sends := 0; sends < 3 && ctx.Err() == nil; {
			if cl == nil {
				n := r.nw.Node(1 + rng.Intn(r.cfg.Nodes))
				c, err := mqttConnect(n.MQTTAddr(), d)
				if err != nil {
					sleep(ctx, 200*time.Millisecond)
					continue
				}
				cl, node = c, n.Name()
			}
			r.hist.Attempt(m, node)
			sends++
			tok := cl.Publish(telemetryTopic(d.ID, mid), 1, false, fmt.Sprintf(`{"seq":%d}`, seq))
			if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				r.hist.Ack(m, node, time.Now())
				break
			}
			cl.Disconnect(0)
			cl = nil
		}
		sleep(ctx, r.cfg.DevicePace)
	}
}

// nemesis runs the schedule and returns a window per fault.
func (r *runner) nemesis(ctx context.Context) []Window {
	needSnap := false
	for _, f := range r.cfg.Schedule {
		if f.Kind == Stale {
			needSnap = true
		}
	}
	if needSnap {
		sleep(ctx, r.cfg.Lead/2)
		for i := 1; i <= r.cfg.Nodes; i++ {
			if err := r.nw.Node(i).Snapshot(); err != nil {
				r.problem("snapshot n%d: %v", i, err)
			}
		}
		r.logf("snapshots of every node's data folder taken (for stale restarts)")
		sleep(ctx, r.cfg.Lead-r.cfg.Lead/2)
	} else {
		sleep(ctx, r.cfg.Lead)
	}
	var ws []Window
	for _, f := range r.cfg.Schedule {
		if ctx.Err() != nil {
			break
		}
		w := Window{What: f.String(), Start: time.Now()}
		if len(ws) > 0 {
			ws[len(ws)-1].End = w.Start
		}
		r.logf("inject: %s", f)
		r.mu.Lock()
		r.injected = append(r.injected, fmt.Sprintf("+%.1fs %s", time.Since(r.start).Seconds(), f))
		r.mu.Unlock()
		stops := f.Kind == Kill || f.Kind == Stale
		if stops {
			r.setDown(f.Nodes[0], true)
		}
		if err := inject(ctx, r.nw, f); err != nil {
			r.problem("inject %s: %v", f, err)
		}
		sleep(ctx, f.For)
		if err := heal(ctx, r.nw, f); err != nil {
			// The supervisor starts a node that did not come back.
			r.problem("heal %s: %v", f, err)
		}
		if stops {
			r.setDown(f.Nodes[0], false)
		}
		w.Heal = time.Now()
		r.logf("healed: %s", f)
		ws = append(ws, w)
		sleep(ctx, f.Settle)
	}
	return ws
}
