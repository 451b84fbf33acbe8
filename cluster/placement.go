package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/persistence"
)

// Names of the two actors every node runs next to its grains.
const (
	placementActorName = "twinmesh-placement"
	nodeActorName      = "twinmesh-node"
)

// Sentinel errors of the placement and replication layer.
var (
	// ErrFenced: a newer activation of the grain claimed it; this one must
	// stop. It wraps persistence.ErrFenced, so either sentinel matches.
	ErrFenced = fmt.Errorf("cluster: %w", persistence.ErrFenced)
	// ErrUnderReplicated: fewer replicas than required acknowledged a write.
	// The write is on this node (and maybe some replicas) but was not
	// acknowledged to the client, who retries.
	ErrUnderReplicated = errors.New("cluster: not enough replicas acknowledged")
	// ErrNoMember: no member with that name is in the cluster.
	ErrNoMember = errors.New("cluster: no such member")
)

// Store is the local bbolt store as the replication layer uses it.
type Store interface {
	Commit(ctx context.Context, ops ...persistence.Op) error
	GrainState(id string) (persistence.GrainState, error)
	GrainSnapshot(id string, afterNS int64, limit int) ([]persistence.WireOp, int64, error)
	CatalogSnapshot(cursor string, limit int) ([]persistence.WireOp, string, error)
	ListEntities(f persistence.EntityFilter, after string, limit int) ([]persistence.Entity, string, error)
}

// Handlers are the node's answers to what other members send it. Any may be
// nil. They are called on the node actor's worker goroutines and must be
// safe for concurrent use.
type Handlers struct {
	// Events receives events published on other nodes (JSON documents).
	Events func(events []json.RawMessage)
	// Invoke runs a direct method on a device whose session is on this node.
	Invoke func(ctx context.Context, device, method string, payload []byte) (status int, resp []byte, err error)
	// Catalog is told of catalog ops applied from other nodes (so that the
	// node reloads what it keeps in memory, such as rules).
	Catalog func(ops []persistence.WireOp)
	// Grains returns the number of grains active on this node.
	Grains func() int64
}

// PlacementConfig configures a Placement.
type PlacementConfig struct {
	// Store is the node's bbolt file.
	Store Store
	// Replicas is how many nodes hold every acknowledged grain change,
	// this one included; capped by the number of members. Default 2.
	Replicas int
	// PeerTimeout bounds one request to another member. Default 1 s: a replica slower than that is replaced by the next member for this write, and skipped for a while.
	PeerTimeout time.Duration
	// Resolve maps a node name (as in twin connection state) to its
	// protoactor remote address; the memberlist Provider knows both.
	Resolve func(node string) (addr string, ok bool)
	// Joining makes the node copy the catalog from the first member it
	// meets before WaitSynced returns (a node started with --join).
	Joining bool
	// Logger receives logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

type placementMetrics struct {
	claims, pulls, pushes, fenced, underRepl, eventsDropped prometheus.Counter
	replSeconds                                             prometheus.Histogram
}

// Placement is twinmesh's protoactor IdentityLookup and replication layer.
//
// Placement: a grain lives on the first member of Rank(identity, members
// hosting its kind); the owner's placement actor spawns it on request, and
// moves away the grains it no longer owns when the topology changes (they
// flush their state, replicated, and stop). Unlike protoactor's
// disthash, the member set is swapped atomically (no race on the hash
// ring), a terminated grain unknown to the placement actor is ignored
// (upstream #1142), other nodes' PID caches are told when a grain stops,
// and Handoff stops every local grain before the node leaves.
//
// Fencing and replication: an activation claims a new epoch on every
// member (Claim) and copies the newest copy of the grain's state into the
// local store; every write of the activation (Commit) carries the epoch,
// is refused by any member that saw a newer claim, and is acknowledged only
// once Replicas members committed it. See the package documentation.
type Placement struct {
	cfg     PlacementConfig
	log     *slog.Logger
	metrics placementMetrics

	c         *pcluster.Cluster
	self      string
	members   atomic.Pointer[[]*pcluster.Member]
	placement *actor.PID
	node      *actor.PID
	subs      []*eventstream.Subscription
	handlers  atomic.Pointer[Handlers]
	lastEpoch atomic.Uint64

	// down marks members whose last request failed at the transport (a
	// crash not yet declared by memberlist): writes stop waiting for them.
	down   sync.Map // address → time.Time until which it counts as down
	downCh sync.Map // address → chan struct{} closed when it is marked down

	ctx    context.Context // cancelled by Shutdown
	cancel context.CancelFunc
	work   chan struct{} // bounds concurrent handling of peer requests
	events chan json.RawMessage
	async  chan struct{} // bounds background catalog copies
	stop   chan struct{}
	wg     sync.WaitGroup
	synced chan struct{}
	// topoChanged wakes the re-replication loop (capacity 1: changes that
	// arrive while a pass is due coalesce).
	topoChanged chan struct{}
	syncOnce    sync.Once
	syncing     atomic.Bool
	closed      atomic.Bool
}

// NewPlacement returns a Placement to pass as the IdentityLookup of the
// protoactor cluster and as the actor system's replication.
func NewPlacement(cfg PlacementConfig) (*Placement, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: placement needs a store", ErrConfig)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 2
	}
	if cfg.Replicas < 1 {
		return nil, fmt.Errorf("%w: replicas must be at least 1, not %d", ErrConfig, cfg.Replicas)
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Placement{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "placement"),
		work:   make(chan struct{}, 256),
		events: make(chan json.RawMessage, 8192),
		async:  make(chan struct{}, 512),
		stop:   make(chan struct{}),
		synced: make(chan struct{}),

		topoChanged: make(chan struct{}, 1),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.handlers.Store(&Handlers{})
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	p.metrics = placementMetrics{
		claims:        counter("twinmesh_cluster_claims_total", "Grain activations that claimed an owner epoch."),
		pulls:         counter("twinmesh_cluster_state_pulls_total", "Activations that copied newer grain state from another member."),
		pushes:        counter("twinmesh_cluster_state_pushes_total", "Grain state snapshots sent to replicas that lagged."),
		fenced:        counter("twinmesh_cluster_fenced_total", "Writes or claims refused because a newer epoch exists."),
		underRepl:     counter("twinmesh_cluster_under_replicated_total", "Writes not acknowledged because too few replicas answered."),
		eventsDropped: counter("twinmesh_cluster_events_dropped_total", "Events not forwarded to other members because the queue was full."),
		replSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinmesh_cluster_replication_seconds", Help: "Time for replicas to acknowledge a write.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
	}
	if cfg.Registerer != nil {
		m := p.metrics
		cfg.Registerer.MustRegister(m.claims, m.pulls, m.pushes, m.fenced, m.underRepl, m.eventsDropped, m.replSeconds)
	}
	return p, nil
}

// SetHandlers sets what the node answers to other members. Call it before
// the actor system starts.
func (p *Placement) SetHandlers(h Handlers) { p.handlers.Store(&h) }

// Setup implements pcluster.IdentityLookup; protoactor calls it while the
// member starts, before the provider joins.
func (p *Placement) Setup(c *pcluster.Cluster, _ []string, isClient bool) {
	p.c = c
	p.self = c.ActorSystem.Address()
	empty := []*pcluster.Member{}
	p.members.Store(&empty)
	sys := c.ActorSystem
	p.placement, _ = sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &placementActor{p: p, grains: map[string]grainRef{}}
	}), placementActorName)
	p.node, _ = sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &nodeActor{p: p} }), nodeActorName)
	p.subs = append(p.subs, sys.EventStream.Subscribe(func(ev any) {
		switch m := ev.(type) {
		case *pcluster.ClusterTopology:
			p.onTopology(m)
		case *pcluster.ActivationTerminated:
			// Another node's grain stopped: forget its PID at once instead
			// of learning it from a dead letter on the next request.
			if m.ClusterIdentity != nil && m.Pid != nil {
				c.PidCache.RemoveByValue(m.ClusterIdentity.Identity, m.ClusterIdentity.Kind, m.Pid)
			}
		}
	}))
	if !p.cfg.Joining {
		p.markSynced()
	}
	p.wg.Add(2)
	go p.forwardEvents()
	go p.rereplicateLoop()
}

func (p *Placement) onTopology(t *pcluster.ClusterTopology) {
	ms := append([]*pcluster.Member(nil), t.Members...)
	p.members.Store(&ms)
	p.c.ActorSystem.Root.Send(p.placement, t)
	select {
	case p.topoChanged <- struct{}{}:
	default: // a pass is already due
	}
	if len(ms) > 1 && !p.isSynced() && p.syncing.CompareAndSwap(false, true) {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.syncing.Store(false)
			p.pullCatalog()
		}()
	}
}

// Get implements pcluster.IdentityLookup: it asks the owner's placement
// actor for the grain's PID, activating it there if needed.
func (p *Placement) Get(ci *pcluster.ClusterIdentity) *actor.PID {
	owner := p.ownerOf(ci.Identity, ci.Kind)
	if owner == "" {
		return nil
	}
	f := p.c.ActorSystem.Root.RequestFuture(actor.NewPID(owner, placementActorName),
		&pcluster.ActivationRequest{ClusterIdentity: ci}, p.cfg.PeerTimeout)
	res, err := f.Result()
	if err != nil {
		return nil
	}
	r, ok := res.(*pcluster.ActivationResponse)
	if !ok || r.Pid == nil {
		return nil
	}
	return r.Pid
}

// RemovePid implements pcluster.IdentityLookup.
func (p *Placement) RemovePid(ci *pcluster.ClusterIdentity, pid *actor.PID) {
	p.c.PidCache.RemoveByValue(ci.Identity, ci.Kind, pid)
}

// Shutdown implements pcluster.IdentityLookup.
func (p *Placement) Shutdown() {
	if p.closed.Swap(true) || p.c == nil {
		return
	}
	for _, s := range p.subs {
		p.c.ActorSystem.EventStream.Unsubscribe(s)
	}
	close(p.stop)
	p.cancel()
	p.wg.Wait()
}

// Handoff stops every grain on this node and waits (at most timeout) until
// they stopped: each flushes its state through a replicated commit, so the
// members that take its grains over find it. Call it before leaving.
func (p *Placement) Handoff(timeout time.Duration) {
	if p.c == nil {
		return
	}
	_, _ = p.c.ActorSystem.Root.RequestFuture(p.placement, handoff{}, timeout).Result()
}

// ownerOf returns the address of the member that owns identity of kind:
// the first in rendezvous order that is not marked down. A member marked
// down (its requests time out: crashed, not yet declared dead) is passed
// over so its grains fail over before memberlist's verdict; if it was only
// slow, the new activation's claim fences the old one.
func (p *Placement) ownerOf(identity, kind string) string {
	var addrs []string
	for _, m := range *p.members.Load() {
		if kind == "" || m.HasKind(kind) {
			addrs = append(addrs, m.Address())
		}
	}
	if len(addrs) == 0 {
		return ""
	}
	ranked := Rank(identity, addrs)
	for _, a := range ranked {
		if a == p.self || !p.isDown(a) {
			return a
		}
	}
	return ranked[0]
}

// memberAddrs returns the addresses of the current members; this node is
// always among them (it is a member before protoactor's first topology).
func (p *Placement) memberAddrs() []string {
	ms := *p.members.Load()
	out := make([]string, 0, len(ms)+1)
	hasSelf := false
	for _, m := range ms {
		a := m.Address()
		out = append(out, a)
		hasSelf = hasSelf || a == p.self
	}
	if !hasSelf {
		out = append(out, p.self)
	}
	return out
}

// Members returns the number of members this node counts, itself included.
func (p *Placement) Members() int { return len(p.memberAddrs()) }

// replicasOf returns the other members that should hold identity, in
// rendezvous order, followed by the rest (fallbacks).
func (p *Placement) replicasOf(identity string) (replicas, rest []string) {
	all := p.memberAddrs()
	need := min(p.cfg.Replicas, len(all)) - 1
	for _, a := range Rank(identity, all) {
		if a == p.self {
			continue
		}
		if len(replicas) < need {
			replicas = append(replicas, a)
		} else {
			rest = append(rest, a)
		}
	}
	return replicas, rest
}

// nextEpoch returns a fresh epoch: the wall clock in nanoseconds, kept
// strictly increasing on this node. Claims compare epochs only to order
// activations of one grain; a claim that meets a higher epoch (another
// node's clock runs ahead) retries above it.
func (p *Placement) nextEpoch(atLeast uint64) uint64 {
	for {
		last := p.lastEpoch.Load()
		e := max(uint64(time.Now().UnixNano()), last+1, atLeast)
		if p.lastEpoch.CompareAndSwap(last, e) {
			return e
		}
	}
}

// Wire messages between nodes: JSON bodies in actorspb envelopes, like the
// grains' own (protoactor's remote carries only protobuf messages).
const (
	opApply    = "apply"
	opClaim    = "claim"
	opSnapshot = "snapshot"
	opCatalog  = "catalog"
	opInvoke   = "invoke"
	opStats    = "stats"
	opEvents   = "events"
	opState    = "state"
)

type applyReq struct {
	ID    string               `json:"id,omitempty"`
	Epoch uint64               `json:"epoch,omitempty"` // 0: catalog only, not fenced
	Ops   []persistence.WireOp `json:"ops"`
}

type claimReq struct {
	ID    string `json:"id"`
	Epoch uint64 `json:"epoch"`
}

type claimRes struct {
	Fenced bool                   `json:"fenced,omitempty"`
	State  persistence.GrainState `json:"state"`
}

type snapshotReq struct {
	ID    string `json:"id"`
	After int64  `json:"after"`
	Limit int    `json:"limit"`
}

type snapshotRes struct {
	Ops  []persistence.WireOp `json:"ops"`
	Next int64                `json:"next"`
}

type catalogReq struct {
	Cursor string `json:"cursor"`
}

type catalogRes struct {
	Ops  []persistence.WireOp `json:"ops"`
	Next string               `json:"next"`
}

type invokeReq struct {
	Device  string `json:"device"`
	Method  string `json:"method"`
	Payload []byte `json:"payload"`
	Timeout int64  `json:"timeoutMs"`
}

type invokeRes struct {
	Status  int    `json:"status"`
	Payload []byte `json:"payload"`
}

type statsRes struct {
	Grains int64 `json:"grains"`
}

// Error codes in actorspb.Response.Code between nodes.
const (
	codeFenced       = "fenced"
	codeNotConnected = "not_connected"
	codeTimeout      = "timeout"
	codeFailed       = "failed"
)

// ErrRemoteNotConnected and ErrRemoteTimeout are a remote Invoke's
// not-connected and timeout outcomes.
var (
	ErrRemoteNotConnected = errors.New("cluster: device not connected on that member")
	ErrRemoteTimeout      = errors.New("cluster: device did not answer in time")
)

// downFor is how long a member whose request failed at the transport is
// skipped by writes (it gets copies in the background) and given a short
// deadline by claims; memberlist declares a crash in about 5–6 s.
const downFor = 10 * time.Second

// markDown marks addr down and, the first time, forgets every grain PID
// cached on it, so that callers stop waiting on a crashed member.
func (p *Placement) markDown(addr string) {
	if _, was := p.down.Swap(addr, time.Now().Add(downFor)); was {
		return
	}
	if ch, ok := p.downCh.LoadAndDelete(addr); ok {
		close(ch.(chan struct{}))
	}
	p.log.Warn("member not answering; passing over it until it answers or leaves", "member", addr)
	for _, m := range *p.members.Load() {
		if m.Address() == addr {
			p.c.PidCache.RemoveByMember(m)
		}
	}
}

// Unreachable returns a channel that is closed when the member at addr is
// marked down (at once if it is down now).
func (p *Placement) Unreachable(addr string) <-chan struct{} {
	if p.isDown(addr) {
		return closedChan
	}
	ch, _ := p.downCh.LoadOrStore(addr, make(chan struct{}))
	return ch.(chan struct{})
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (p *Placement) isDown(addr string) bool {
	v, ok := p.down.Load(addr)
	if !ok {
		return false
	}
	if time.Now().After(v.(time.Time)) {
		p.down.Delete(addr)
		return false
	}
	return true
}

// request sends op to the member at addr and decodes the answer into out.
// A request to this node is handled in place.
func (p *Placement) request(ctx context.Context, addr, op string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	var res *actorspb.Response
	if addr == p.self {
		res = p.handle(ctx, &actorspb.Request{Op: op, Body: body})
	} else {
		timeout := p.cfg.PeerTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		if op == opInvoke || op == opSnapshot || op == opCatalog {
			if dl, ok := ctx.Deadline(); ok {
				timeout = time.Until(dl)
			} else {
				timeout = 30 * time.Second
			}
		}
		if timeout <= 0 {
			return context.DeadlineExceeded
		}
		r, err := p.c.ActorSystem.Root.RequestFuture(actor.NewPID(addr, nodeActorName),
			&actorspb.Request{Op: op, Body: body}, timeout).Result()
		if err != nil {
			if ctx.Err() == nil {
				p.markDown(addr)
			}
			return fmt.Errorf("%s to %s: %w", op, addr, err)
		}
		p.down.Delete(addr)
		var ok bool
		if res, ok = r.(*actorspb.Response); !ok {
			return fmt.Errorf("%s to %s: answered %T", op, addr, r)
		}
	}
	if res.Status >= 400 {
		switch res.Code {
		case codeFenced:
			return fmt.Errorf("%w: %s", ErrFenced, res.Message)
		case codeNotConnected:
			return fmt.Errorf("%w: %s", ErrRemoteNotConnected, res.Message)
		case codeTimeout:
			return fmt.Errorf("%w: %s", ErrRemoteTimeout, res.Message)
		}
		return fmt.Errorf("%s on %s: %s", op, addr, res.Message)
	}
	if out != nil {
		return json.Unmarshal(res.Body, out)
	}
	return nil
}

// handle answers one request from a member (or from this node).
func (p *Placement) handle(ctx context.Context, req *actorspb.Request) *actorspb.Response {
	body, err := p.serve(ctx, req.Op, req.Body)
	if err != nil {
		code := codeFailed
		switch {
		case errors.Is(err, persistence.ErrFenced):
			code = codeFenced
		case errors.Is(err, ErrRemoteNotConnected):
			code = codeNotConnected
		case errors.Is(err, ErrRemoteTimeout):
			code = codeTimeout
		}
		return &actorspb.Response{Status: 500, Code: code, Message: err.Error()}
	}
	return &actorspb.Response{Status: 200, Body: body}
}

func (p *Placement) serve(ctx context.Context, op string, body []byte) ([]byte, error) {
	store := p.cfg.Store
	switch op {
	case opApply:
		var r applyReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		ops := make([]persistence.Op, 0, len(r.Ops)+1)
		if r.Epoch > 0 {
			ops = append(ops, persistence.CheckEpoch(r.ID, r.Epoch))
		}
		catalog := false
		for _, w := range r.Ops {
			op := persistence.FromWire(w)
			catalog = catalog || op.Catalog()
			ops = append(ops, op)
		}
		if err := store.Commit(ctx, ops...); err != nil {
			if errors.Is(err, persistence.ErrFenced) {
				p.metrics.fenced.Inc()
			}
			return nil, err
		}
		if h := p.handlers.Load(); catalog && h.Catalog != nil {
			h.Catalog(r.Ops)
		}
		return []byte(`{}`), nil
	case opClaim:
		var r claimReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		var res claimRes
		if err := store.Commit(ctx, persistence.ClaimEpoch(r.ID, r.Epoch)); err != nil {
			if !errors.Is(err, persistence.ErrFenced) {
				return nil, err
			}
			res.Fenced = true
		}
		st, err := store.GrainState(r.ID)
		if err != nil {
			return nil, err
		}
		res.State = st
		return json.Marshal(res)
	case opSnapshot:
		var r snapshotReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		ops, next, err := store.GrainSnapshot(r.ID, r.After, r.Limit)
		if err != nil {
			return nil, err
		}
		return json.Marshal(snapshotRes{Ops: ops, Next: next})
	case opCatalog:
		var r catalogReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		ops, next, err := store.CatalogSnapshot(r.Cursor, 1000)
		if err != nil {
			return nil, err
		}
		return json.Marshal(catalogRes{Ops: ops, Next: next})
	case opInvoke:
		var r invokeReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		h := p.handlers.Load()
		if h.Invoke == nil {
			return nil, fmt.Errorf("%w: no MQTT on this member", ErrRemoteNotConnected)
		}
		ictx, cancel := context.WithTimeout(ctx, time.Duration(r.Timeout)*time.Millisecond)
		defer cancel()
		st, resp, err := h.Invoke(ictx, r.Device, r.Method, r.Payload)
		if err != nil {
			return nil, err
		}
		return json.Marshal(invokeRes{Status: st, Payload: resp})
	case opState:
		var r claimReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		st, err := store.GrainState(r.ID)
		if err != nil {
			return nil, err
		}
		return json.Marshal(st)
	case opStats:
		var res statsRes
		if h := p.handlers.Load(); h.Grains != nil {
			res.Grains = h.Grains()
		}
		return json.Marshal(res)
	}
	return nil, fmt.Errorf("unknown operation %q", op)
}

// better reports whether state a is newer than b: the copy written by the
// newest epoch wins, then the higher twin version, then the one with more
// recent or more telemetry and inbox messages.
func better(a, b persistence.GrainState) bool {
	switch {
	case a.Epoch.Wrote != b.Epoch.Wrote:
		return a.Epoch.Wrote > b.Epoch.Wrote
	case a.TwinVersion != b.TwinVersion:
		return a.TwinVersion > b.TwinVersion
	case a.NewestTelemetry != b.NewestTelemetry:
		return a.NewestTelemetry > b.NewestTelemetry
	case a.Telemetry != b.Telemetry:
		return a.Telemetry > b.Telemetry
	}
	return a.Inbox > b.Inbox
}

func sameState(a, b persistence.GrainState) bool {
	return a.HasTwin == b.HasTwin && a.TwinVersion == b.TwinVersion && a.Telemetry == b.Telemetry &&
		a.NewestTelemetry == b.NewestTelemetry && a.Inbox == b.Inbox
}

// Claim makes this node the owner of identity's grain: it claims a new
// epoch on every member, copies the newest copy of the grain's state into
// the local store, brings the grain's replicas up to date, and returns the
// epoch the activation's writes must carry. A member that does not answer
// in time is skipped (it is dead or about to be declared dead). ErrFenced
// when other claims kept winning.
func (p *Placement) Claim(ctx context.Context, identity string) (uint64, error) {
	p.metrics.claims.Inc()
	// A node that just joined may be asked for grains before it copied the
	// catalog; without it the grain would think its entity does not exist.
	if err := p.WaitSynced(ctx); err != nil {
		return 0, err
	}
	epoch := p.nextEpoch(0)
	if p.Members() == 1 {
		// Alone: the placement actor is the only place this grain can be
		// active, and the epoch's first write fences older activations.
		return epoch, nil
	}
	for attempt := 0; attempt < 5; attempt++ {
		addrs := p.memberAddrs()
		type reply struct {
			addr string
			res  claimRes
			err  error
		}
		replies := make([]reply, len(addrs))
		var wg sync.WaitGroup
		for i, a := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies[i].addr = a
				cctx := ctx
				if p.isDown(a) {
					var cancel context.CancelFunc
					cctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
					defer cancel()
				}
				replies[i].err = p.request(cctx, a, opClaim, claimReq{ID: identity, Epoch: epoch}, &replies[i].res)
			}()
		}
		wg.Wait()
		var maxFence uint64
		fenced := false
		states := map[string]persistence.GrainState{}
		for _, r := range replies {
			if r.err != nil {
				if r.addr == p.self {
					return 0, fmt.Errorf("claim %s locally: %w", identity, r.err)
				}
				p.log.Debug("claim: member did not answer", "entity", identity, "member", r.addr, "err", r.err)
				continue
			}
			if r.res.Fenced {
				fenced = true
				maxFence = max(maxFence, r.res.State.Epoch.Fence)
			}
			states[r.addr] = r.res.State
		}
		if fenced {
			p.metrics.fenced.Inc()
			epoch = p.nextEpoch(maxFence + 1)
			continue
		}
		src := p.self
		for a, st := range states {
			if better(st, states[src]) {
				src = a
			}
		}
		if src != p.self && !sameState(states[src], states[p.self]) {
			if err := p.pull(ctx, src, identity, epoch); err != nil {
				return 0, fmt.Errorf("copy %s from %s: %w", identity, src, err)
			}
			p.metrics.pulls.Inc()
		}
		replicas, _ := p.replicasOf(identity)
		for _, r := range replicas {
			st, ok := states[r]
			if ok && sameState(st, states[src]) {
				continue
			}
			if err := p.push(ctx, r, identity, epoch); err != nil {
				// Not fatal: the write path falls back to other members.
				p.log.Warn("bring replica up to date", "entity", identity, "replica", r, "err", err)
				continue
			}
			p.metrics.pushes.Inc()
		}
		return epoch, nil
	}
	return 0, fmt.Errorf("%w: claim of %s kept losing to newer epochs", ErrFenced, identity)
}

const snapshotPage = 2000

// pull copies identity's grain-scoped state from member src into the local
// store, fenced by epoch.
func (p *Placement) pull(ctx context.Context, src, identity string, epoch uint64) error {
	var after int64
	for {
		var res snapshotRes
		if err := p.request(ctx, src, opSnapshot, snapshotReq{ID: identity, After: after, Limit: snapshotPage}, &res); err != nil {
			return err
		}
		ops := []persistence.Op{persistence.CheckEpoch(identity, epoch)}
		for _, w := range res.Ops {
			ops = append(ops, persistence.FromWire(w))
		}
		if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
			return err
		}
		if res.Next == 0 {
			return nil
		}
		after = res.Next
	}
}

// push sends identity's grain-scoped state from the local store to member
// dst, fenced by epoch.
func (p *Placement) push(ctx context.Context, dst, identity string, epoch uint64) error {
	var after int64
	for {
		ops, next, err := p.cfg.Store.GrainSnapshot(identity, after, snapshotPage)
		if err != nil {
			return err
		}
		if err := p.request(ctx, dst, opApply, applyReq{ID: identity, Epoch: epoch, Ops: ops}, nil); err != nil {
			return err
		}
		if next == 0 {
			return nil
		}
		after = next
	}
}

// Commit writes ops of identity's grain, fenced by epoch, to the local
// store and to the grain's replicas, and returns once min(Replicas,
// members) nodes committed them. Catalog ops among them go to every
// member. When a replica does not answer, the next member in rendezvous
// order takes its place.
func (p *Placement) Commit(ctx context.Context, identity string, epoch uint64, ops []persistence.Op) error {
	local := make([]persistence.Op, 0, len(ops)+1)
	local = append(local, persistence.CheckEpoch(identity, epoch))
	local = append(local, ops...)
	if err := p.cfg.Store.Commit(ctx, local...); err != nil {
		if errors.Is(err, persistence.ErrFenced) {
			p.metrics.fenced.Inc()
			return fmt.Errorf("%w: %v", ErrFenced, err)
		}
		return err
	}
	return p.ship(ctx, identity, epoch, ops)
}

// CommitCatalog writes cluster-wide ops (identities, rules, grants) that
// belong to no grain: locally, then to every member, acknowledged once
// min(Replicas, members) nodes hold them.
func (p *Placement) CommitCatalog(ctx context.Context, ops []persistence.Op) error {
	if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
		return err
	}
	return p.ship(ctx, "", 0, ops)
}

// onlyContrib reports whether every op writes a rollup contribution.
func onlyContrib(ops []persistence.WireOp) bool {
	for _, w := range ops {
		if w.B != string(persistence.BucketContrib) {
			return false
		}
	}
	return true
}

// copyInBackground sends catalog ops to a member without waiting for its
// answer. At most cap(p.async) copies are in flight; beyond that the copy
// is made in the caller's goroutine, which pushes back on writers instead
// of queueing without bound.
func (p *Placement) copyInBackground(ctx context.Context, addr string, ops []persistence.WireOp) {
	if p.closed.Load() {
		return
	}
	select {
	case p.async <- struct{}{}:
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.async }()
			_ = p.request(p.ctx, addr, opApply, applyReq{Ops: ops}, nil)
		}()
	default:
		if !p.isDown(addr) {
			_ = p.request(ctx, addr, opApply, applyReq{Ops: ops}, nil)
		}
	}
}

func (p *Placement) ship(ctx context.Context, identity string, epoch uint64, ops []persistence.Op) error {
	var full, catalog []persistence.WireOp
	for _, op := range ops {
		w, ok := op.Wire()
		if !ok {
			continue
		}
		full = append(full, w)
		if op.Catalog() {
			catalog = append(catalog, w)
		}
	}
	if len(full) == 0 {
		return nil
	}
	key := identity
	if key == "" && len(full) > 0 {
		key = full[0].K
	}
	replicas, rest := p.replicasOf(key)
	if identity == "" {
		// Catalog writes: every member gets everything.
		replicas, rest = append(replicas, rest...), nil
	}
	if len(replicas) == 0 && len(rest) == 0 {
		return nil
	}
	start := time.Now()
	need := min(p.cfg.Replicas, p.Members()) - 1
	type result struct {
		addr    string
		full    bool
		err     error
		replica bool
	}
	results := make(chan result, len(replicas)+2*len(rest))
	send := func(addr string, payload []persistence.WireOp, isFull, isReplica bool) {
		go func() {
			err := p.request(ctx, addr, opApply, applyReq{ID: identity, Epoch: epoch, Ops: payload}, nil)
			results <- result{addr, isFull, err, isReplica}
		}()
	}
	// A replica that is down is replaced by the next member that is up; it
	// stays a fallback of last resort.
	var upRepl, downRepl, upRest, downRest []string
	for _, a := range replicas {
		if p.isDown(a) {
			downRepl = append(downRepl, a)
		} else {
			upRepl = append(upRepl, a)
		}
	}
	for _, a := range rest {
		if p.isDown(a) {
			downRest = append(downRest, a)
		} else {
			upRest = append(upRest, a)
		}
	}
	for len(downRepl) > 0 && len(upRest) > 0 && identity != "" {
		upRepl = append(upRepl, upRest[0])
		upRest = upRest[1:]
		downRest = append(downRest, downRepl[0])
		downRepl = downRepl[1:]
	}
	replicas = append(upRepl, downRepl...)
	rest = append(upRest, downRest...)
	pending := 0
	for _, a := range replicas {
		if p.isDown(a) && identity == "" {
			// Catalog copy to a member that is down: in the background.
			p.copyInBackground(ctx, a, full)
			continue
		}
		send(a, full, true, true)
		pending++
	}
	fallbacks := rest
	if len(catalog) > 0 {
		// Rollup contributions are internal (the parent grain is also told
		// directly) and change with every numeric telemetry message: the
		// members that are not replicas get them in the background, so a
		// telemetry write waits only for its replicas. User-visible catalog
		// data (entities, identities, rules, alerts, grants) is waited for,
		// so that a read on any node right after the write sees it.
		background := onlyContrib(catalog)
		for _, a := range rest {
			if p.isDown(a) || background {
				p.copyInBackground(ctx, a, catalog)
				continue
			}
			send(a, catalog, false, false)
			pending++
		}
	}
	acks := 0
	fullTo := map[string]bool{}
	for _, a := range replicas {
		fullTo[a] = true
	}
	var fencedErr, lastErr error
	for pending > 0 {
		r := <-results
		pending--
		if r.err == nil {
			if r.full {
				acks++
			}
			continue
		}
		if errors.Is(r.err, persistence.ErrFenced) {
			fencedErr = r.err
			continue
		}
		if !r.full {
			p.log.Debug("catalog copy to member failed", "member", r.addr, "err", r.err)
			continue
		}
		lastErr = r.err
		p.log.Warn("replica did not acknowledge; trying the next member", "entity", identity, "replica", r.addr, "err", r.err)
		for len(fallbacks) > 0 {
			next := fallbacks[0]
			fallbacks = fallbacks[1:]
			if fullTo[next] {
				continue
			}
			fullTo[next] = true
			send(next, full, true, true)
			pending++
			break
		}
	}
	p.metrics.replSeconds.Observe(time.Since(start).Seconds())
	if fencedErr != nil {
		p.metrics.fenced.Inc()
		return fmt.Errorf("%w: %v", ErrFenced, fencedErr)
	}
	if acks < need {
		p.metrics.underRepl.Inc()
		return fmt.Errorf("%w: %d of %d (last error: %v)", ErrUnderReplicated, acks+1, need+1, lastErr)
	}
	return nil
}

// settle is how long the topology must stay unchanged before a
// re-replication pass starts (memberlist reports a crash to members a few
// hundred milliseconds apart).
const settle = 3 * time.Second

// rereplicateLoop runs a re-replication pass after every topology change,
// once it settled; a change during a pass restarts it. It runs until
// Shutdown.
func (p *Placement) rereplicateLoop() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case <-p.topoChanged:
		}
	wait:
		for {
			select {
			case <-p.stop:
				return
			case <-p.topoChanged:
			case <-time.After(settle):
				break wait
			}
		}
		ctx, cancel := context.WithCancel(p.ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.rereplicate(ctx)
		}()
		select {
		case <-done:
			cancel()
		case <-p.topoChanged:
			cancel()
			<-done
			// Run again after the new change settles.
			select {
			case p.topoChanged <- struct{}{}:
			default:
			}
		case <-p.stop:
			cancel()
			<-done
			return
		}
	}
}

// rereplicate restores the replication factor after members changed,
// without waiting for each grain's next activation: for every entity this
// node ranks first, it sends its copy to each of the entity's replicas that
// holds an older one (a member that returned after missing writes, or one
// that became a replica because another left). Grains this node ranks
// first but does not hold (it just joined) copy their state when they
// activate here.
func (p *Placement) rereplicate(ctx context.Context) {
	if p.Members() <= 1 || p.cfg.Replicas <= 1 || !p.isSynced() {
		return
	}
	start := time.Now()
	checked, pushed := 0, 0
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	after := ""
	for ctx.Err() == nil {
		ents, next, err := p.cfg.Store.ListEntities(persistence.EntityFilter{}, after, 500)
		if err != nil {
			p.log.Warn("re-replication: list entities", "err", err)
			break
		}
		for _, e := range ents {
			all := p.memberAddrs()
			ranked := Rank(e.ID, all)
			if len(ranked) == 0 || ranked[0] != p.self {
				continue
			}
			local, err := p.cfg.Store.GrainState(e.ID)
			if err != nil || (!local.HasTwin && local.Telemetry == 0 && local.Inbox == 0) {
				continue
			}
			n := min(p.cfg.Replicas, len(ranked))
			for _, r := range ranked[1:n] {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					var st persistence.GrainState
					if err := p.request(ctx, r, opState, claimReq{ID: e.ID}, &st); err != nil {
						return
					}
					mu.Lock()
					checked++
					mu.Unlock()
					if !better(local, st) {
						return
					}
					if err := p.push(ctx, r, e.ID, local.Epoch.Fence); err != nil {
						p.log.Debug("re-replication: push", "entity", e.ID, "replica", r, "err", err)
						return
					}
					mu.Lock()
					pushed++
					mu.Unlock()
					p.metrics.pushes.Inc()
				}()
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	wg.Wait()
	if checked > 0 || pushed > 0 {
		p.log.Info("re-replication pass", "checked", checked, "copied", pushed, "took", time.Since(start).Round(time.Millisecond))
	}
}

// Broadcast queues an event (a JSON document) for every other member. It
// never blocks: when the bounded queue is full the event is dropped and
// counted (events are notifications; state is always read from grains).
func (p *Placement) Broadcast(ev json.RawMessage) {
	if p.Members() <= 1 || p.closed.Load() {
		return
	}
	select {
	case p.events <- ev:
	default:
		p.metrics.eventsDropped.Inc()
	}
}

// forwardEvents batches queued events and sends each batch to every other
// member. It runs until Shutdown.
func (p *Placement) forwardEvents() {
	defer p.wg.Done()
	const maxBatch = 256
	batch := make([]json.RawMessage, 0, maxBatch)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		body, _ := json.Marshal(batch)
		for _, a := range p.memberAddrs() {
			if a != p.self {
				p.c.ActorSystem.Root.Send(actor.NewPID(a, nodeActorName), &actorspb.Notify{Op: opEvents, Body: body})
			}
		}
		batch = batch[:0]
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case ev := <-p.events:
			batch = append(batch, ev)
			if len(batch) == maxBatch {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// Invoke runs a direct method on a device whose MQTT session is on the
// member named node.
func (p *Placement) Invoke(ctx context.Context, node, device, method string, payload []byte) (int, []byte, error) {
	if p.cfg.Resolve == nil {
		return 0, nil, ErrNoMember
	}
	addr, ok := p.cfg.Resolve(node)
	if !ok {
		return 0, nil, fmt.Errorf("%w: %s", ErrNoMember, node)
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	var res invokeRes
	if err := p.request(ctx, addr, opInvoke, invokeReq{Device: device, Method: method, Payload: payload, Timeout: timeout.Milliseconds()}, &res); err != nil {
		return 0, nil, err
	}
	return res.Status, res.Payload, nil
}

// GrainCounts asks every member how many grains it hosts, by remote
// address; members that do not answer within the peer timeout are absent.
func (p *Placement) GrainCounts(ctx context.Context) map[string]int64 {
	addrs := p.memberAddrs()
	out := make(map[string]int64, len(addrs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r statsRes
			if err := p.request(ctx, a, opStats, struct{}{}, &r); err == nil {
				mu.Lock()
				out[a] = r.Grains
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

func (p *Placement) markSynced() { p.syncOnce.Do(func() { close(p.synced) }) }

func (p *Placement) isSynced() bool {
	select {
	case <-p.synced:
		return true
	default:
		return false
	}
}

// WaitSynced returns once a joining node copied the catalog (entities,
// identities, rules, alerts, grants, rollup contributions) from a member,
// or at once for a node that did not join.
func (p *Placement) WaitSynced(ctx context.Context) error {
	select {
	case <-p.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("catalog not copied from the cluster: %w", ctx.Err())
	}
}

// pullCatalog copies the catalog from the first other member that answers.
func (p *Placement) pullCatalog() {
	for _, a := range p.memberAddrs() {
		if a == p.self {
			continue
		}
		select {
		case <-p.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(p.ctx, 2*time.Minute)
		n, err := p.pullCatalogFrom(ctx, a)
		cancel()
		if err != nil {
			p.log.Warn("catalog copy failed; trying another member", "member", a, "err", err)
			continue
		}
		p.log.Info("catalog copied", "from", a, "records", n)
		p.markSynced()
		return
	}
}

func (p *Placement) pullCatalogFrom(ctx context.Context, addr string) (int, error) {
	cursor, n := "", 0
	var all []persistence.WireOp
	for {
		var res catalogRes
		if err := p.request(ctx, addr, opCatalog, catalogReq{Cursor: cursor}, &res); err != nil {
			return n, err
		}
		ops := make([]persistence.Op, len(res.Ops))
		for i, w := range res.Ops {
			ops[i] = persistence.FromWire(w)
		}
		if err := p.cfg.Store.Commit(ctx, ops...); err != nil {
			return n, err
		}
		n += len(ops)
		all = append(all, res.Ops...)
		if res.Next == "" {
			break
		}
		cursor = res.Next
	}
	if h := p.handlers.Load(); h.Catalog != nil {
		h.Catalog(all)
	}
	return n, nil
}

// nodeActor answers other members' requests. Each is handled on its own
// goroutine (a commit waits for its group commit), at most cap(p.work) at
// once; beyond that the actor's mailbox holds them, which pushes back on
// the senders.
type nodeActor struct{ p *Placement }

func (a *nodeActor) Receive(ctx actor.Context) {
	p := a.p
	switch m := ctx.Message().(type) {
	case *actorspb.Request:
		sender := ctx.Sender()
		if sender == nil {
			return
		}
		p.work <- struct{}{}
		go func() {
			defer func() { <-p.work }()
			rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res := p.handle(rctx, m)
			p.c.ActorSystem.Root.Send(sender, res)
		}()
	case *actorspb.Notify:
		if m.Op != opEvents {
			return
		}
		var evs []json.RawMessage
		if err := json.Unmarshal(m.Body, &evs); err != nil {
			p.log.Warn("bad event batch from member", "err", err)
			return
		}
		if h := p.handlers.Load(); h.Events != nil {
			h.Events(evs)
		}
	}
}

// handoff asks the placement actor to stop every local grain.
type handoff struct{}

type grainRef struct {
	ci  *pcluster.ClusterIdentity
	pid *actor.PID
}

// placementActor spawns the grains this node owns and stops those it no
// longer owns.
type placementActor struct {
	p      *Placement
	grains map[string]grainRef // by ClusterIdentity.AsKey()
	closed bool
}

func (a *placementActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *pcluster.ActivationRequest:
		a.activate(ctx, m)
	case *actor.Terminated:
		a.terminated(ctx, m)
	case *pcluster.ClusterTopology:
		a.rebalance(ctx)
	case handoff:
		a.closed = true
		a.stopAll(ctx)
		ctx.Respond(&actorspb.Response{Status: 200})
	case *actor.Stopping:
		a.stopAll(ctx)
	}
}

func (a *placementActor) activate(ctx actor.Context, m *pcluster.ActivationRequest) {
	key := m.ClusterIdentity.AsKey()
	if g, ok := a.grains[key]; ok {
		ctx.Respond(&pcluster.ActivationResponse{Pid: g.pid})
		return
	}
	if a.closed {
		// Leaving: refuse, so the caller retries on the next owner.
		ctx.Respond(&pcluster.ActivationResponse{Failed: true})
		return
	}
	kind, ok := a.p.c.TryGetClusterKind(m.ClusterIdentity.Kind)
	if !ok {
		ctx.Respond(&pcluster.ActivationResponse{Failed: true})
		return
	}
	pid := ctx.SpawnPrefix(pcluster.WithClusterIdentity(kind.Props, m.ClusterIdentity), m.ClusterIdentity.Identity)
	kind.Inc()
	a.grains[key] = grainRef{ci: m.ClusterIdentity, pid: pid}
	ctx.Respond(&pcluster.ActivationResponse{Pid: pid})
}

func (a *placementActor) terminated(_ actor.Context, m *actor.Terminated) {
	for key, g := range a.grains {
		if !g.pid.Equal(m.Who) {
			continue
		}
		delete(a.grains, key)
		if kind, ok := a.p.c.TryGetClusterKind(g.ci.Kind); ok {
			kind.Dec()
		}
		a.p.c.MemberList.BroadcastEvent(&pcluster.ActivationTerminated{Pid: g.pid, ClusterIdentity: g.ci}, true)
		return
	}
}

// rebalance moves the grains another member owns now: each flushes and,
// for MoveGrace, answers every request with "moved" so callers retry at
// once on the new owner (a request queued behind a plain poison pill is
// dropped and costs its caller a whole timeout), then stops. The new
// owner's activation claims the grain, which fences this one.
func (a *placementActor) rebalance(ctx actor.Context) {
	for _, g := range a.grains {
		if owner := a.p.ownerOf(g.ci.Identity, g.ci.Kind); owner != "" && owner != a.p.self {
			ctx.Send(g.pid, &actorspb.Notify{Op: NotifyMove})
		}
	}
}

// stopAll moves every grain away and waits until they stopped.
func (a *placementActor) stopAll(ctx actor.Context) {
	for _, g := range a.grains {
		ctx.Send(g.pid, &actorspb.Notify{Op: NotifyMove})
	}
	if len(a.grains) > 0 {
		time.Sleep(MoveGrace)
	}
	futures := make([]*actor.Future, 0, len(a.grains))
	for _, g := range a.grains {
		futures = append(futures, ctx.PoisonFuture(g.pid))
	}
	for _, f := range futures {
		_ = f.Wait()
	}
}

// NotifyMove is the actorspb.Notify operation that tells a grain it moves
// to another member; MoveGrace is how long it then answers "moved" before
// it stops. The actor layer's grains implement both.
const (
	NotifyMove = "move"
	MoveGrace  = 300 * time.Millisecond
)

var _ pcluster.IdentityLookup = (*Placement)(nil)
