package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
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
	// ErrNoQuorum: a claim was accepted, or an owner's read confirmed, by
	// fewer than a majority of the members this node knows (it is cut off
	// from the others, or they are down): the grain cannot be taken over or
	// read here.
	ErrNoQuorum = errors.New("cluster: no majority of the members answered")
	// ErrNoMember: no live member has that name (Invoke). Its code is
	// errcode.NotConnected: the device's session went with the member.
	ErrNoMember = errcode.New(errcode.NotConnected, "cluster: no such member")
	// ErrStopped: the Placement shut down while the request waited. Its
	// code is errcode.Unavailable.
	ErrStopped = errcode.New(errcode.Unavailable, "cluster: placement stopped")
)

// Store is the local bbolt store as the replication layer uses it.
type Store interface {
	Commit(ctx context.Context, ops ...persistence.Op) error
	GrainState(id string) (persistence.GrainState, error)
	GetEpoch(id string) (persistence.Epoch, error)
	GrainSnapshot(id string, afterNS int64, limit int) ([]persistence.WireOp, int64, error)
	CatalogSnapshot(cursor string, limit int) ([]persistence.WireOp, string, error)
	ListEntities(f persistence.EntityFilter, after string, limit int) ([]persistence.Entity, string, error)
	ListDocs(b persistence.Bucket, prefix string) (map[string][]byte, error)
	GetEntity(id string) (persistence.Entity, error)
	GetDoc(b persistence.Bucket, key string) ([]byte, error)
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
	// Membership names the members: Invoke finds the member holding a
	// device's session by its node name (as in twin connection state), and
	// View lists them. The memberlist Provider implements it; nil knows no
	// member but this node.
	Membership Membership
	// Joining makes the node copy the catalog from the first member it
	// meets before WaitSynced returns (a node started with --join).
	Joining bool
	// Logger receives logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

type placementMetrics struct {
	claims, pulls, pushes, gaps, fenced, underRepl, eventsDropped, eventsInDropped, eventsUnwanted prometheus.Counter
	replSeconds                                                                                    prometheus.Histogram
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

	c       *pcluster.Cluster
	self    string
	members atomic.Pointer[[]*pcluster.Member]
	// knownCache holds known()'s last count and what it was computed from.
	knownCache atomic.Pointer[knownCount]
	placement  *actor.PID
	node       *actor.PID
	queries    queries
	subs       []*eventstream.Subscription
	// send carries a request to another member (sendRemote; tests put
	// members of their own behind it).
	send      func(addr string, req *actorspb.MemberRequest, timeout time.Duration) (any, error)
	lastEpoch atomic.Uint64
	// grains counts the grains active on this node (the placement actor
	// spawns and watches every one).
	grains atomic.Int64

	// down marks members whose last request failed at the transport (a
	// crash not yet declared by memberlist): writes stop waiting for them.
	down   sync.Map // address → time.Time until which it counts as down
	downCh sync.Map // address → chan struct{} closed when it is marked down
	// pushing serializes copies of one grain to one member (push): a
	// stripe of locks chosen by a hash of both, so that memory stays
	// fixed however many grains there are.
	pushing [64]sync.Mutex

	ctx    context.Context // cancelled by Shutdown
	cancel context.CancelFunc
	work   chan struct{} // bounds concurrent handling of peer requests
	events chan queuedEvent
	// interest is what other members want of the bulk event types.
	interest interests
	// contribs are contribution copies waiting for copyContribs.
	contribs contribCopies
	async    chan struct{} // bounds background catalog copies
	stop     chan struct{}
	wg       sync.WaitGroup
	synced   chan struct{}

	// What other members send this node, waiting for Serve.
	inEvents  chan []json.RawMessage
	inCatalog *bucketSet
	inCalls   chan call

	// nodes are the node names recorded as members (known).
	nodes nodeSet
	// behind are the members that missed a catalog write of this node
	// (catchup.go).
	behind behindSet

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
		events: make(chan queuedEvent, 8192),
		async:  make(chan struct{}, 512),
		stop:   make(chan struct{}),
		synced: make(chan struct{}),

		inEvents:  make(chan []json.RawMessage, 1024),
		inCatalog: newBucketSet(),
		inCalls:   make(chan call, 256),

		topoChanged: make(chan struct{}, 1),
	}
	p.send = p.sendRemote
	if err := p.loadNodes(); err != nil {
		return nil, err
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	p.metrics = placementMetrics{
		claims:        counter("twinmesh_cluster_claims_total", "Grain activations that claimed an owner epoch."),
		pulls:         counter("twinmesh_cluster_state_pulls_total", "Activations that copied newer grain state from another member."),
		pushes:        counter("twinmesh_cluster_state_pushes_total", "Grain state snapshots sent to replicas that lagged."),
		gaps:          counter("twinmesh_cluster_replica_gaps_total", "Writes a replica refused because its copy missed earlier writes; it was sent the whole copy."),
		fenced:        counter("twinmesh_cluster_fenced_total", "Writes or claims refused because a newer epoch exists."),
		underRepl:     counter("twinmesh_cluster_under_replicated_total", "Writes not acknowledged because too few replicas answered."),
		eventsDropped: counter("twinmesh_cluster_events_dropped_total", "Events not forwarded to other members because the queue was full."),
		eventsUnwanted: counter("twinmesh_cluster_events_unwanted_total",
			"Telemetry and rollup events not sent to other members because none has a subscriber for them."),
		eventsInDropped: counter("twinmesh_cluster_events_in_dropped_total",
			"Events from other members not delivered on this node because the queue was full."),
		replSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinmesh_cluster_replication_seconds", Help: "Time for replicas to acknowledge a write.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
	}
	if cfg.Registerer != nil {
		m := p.metrics
		cfg.Registerer.MustRegister(m.claims, m.pulls, m.pushes, m.gaps, m.fenced, m.underRepl, m.eventsDropped, m.eventsInDropped, m.eventsUnwanted, m.replSeconds)
	}
	return p, nil
}

// ActiveGrains returns the number of grains active on this node.
func (p *Placement) ActiveGrains() int64 { return p.grains.Load() }

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
	p.wg.Add(5)
	go p.forwardEvents()
	go p.every(interestEvery, p.announceInterest)
	go p.every(contribEvery, p.copyContribs)
	go p.rereplicateLoop()
	go p.catchUpLoop()
}

// every runs f every d until Shutdown. Start it as a goroutine counted in
// p.wg.
func (p *Placement) every(d time.Duration, f func()) {
	defer p.wg.Done()
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
			f()
		}
	}
}

func (p *Placement) onTopology(t *pcluster.ClusterTopology) {
	ms := append([]*pcluster.Member(nil), t.Members...)
	p.members.Store(&ms)
	p.rememberMembers(p.ctx)
	p.c.ActorSystem.Root.Send(p.placement, t)
	select {
	case p.topoChanged <- struct{}{}:
	default: // a pass is already due
	}
	p.trySync()
}

// trySync starts copying the catalog when this node still needs it, has a
// member to copy it from, and no copy is running.
func (p *Placement) trySync() {
	if p.Members() > 1 && !p.isSynced() && !p.closed.Load() && p.syncing.CompareAndSwap(false, true) {
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
	var ms []*pcluster.Member
	if m := p.members.Load(); m != nil { // nil before the cluster started
		ms = *m
	}
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

// supersede tells the placement actor that another member claimed
// identity's grain.
func (p *Placement) supersede(identity string) {
	if p.c != nil && p.placement != nil {
		p.c.ActorSystem.Root.Send(p.placement, superseded{identity: identity})
	}
}

// Members returns the number of members this node counts, itself included.
func (p *Placement) Members() int {
	// Counted as memberAddrs lists them, without building the list: it is
	// asked on every commit and every event.
	var ms []*pcluster.Member
	if m := p.members.Load(); m != nil {
		ms = *m
	}
	n, hasSelf := 0, false
	for _, m := range ms {
		n++
		hasSelf = hasSelf || m.Address() == p.self
	}
	if !hasSelf {
		n++
	}
	return n
}

// known returns the size of the cluster as this node knows it: the node
// names recorded as members (see known.go: every grain-hosting node seen
// alive, in this run or before it, until an operator forgets it) and every
// such node it sees alive now (recorded as it is seen) — this one
// included. A node cut off from the others (a partition, a
// pause that outlasted failure detection, a restart) still counts them, so
// it needs their acknowledgements and, not getting them, refuses the write
// instead of taking itself and the few members it sees for the whole
// cluster.
func (p *Placement) known() int {
	members := p.members.Load()
	g, versioned := p.cfg.Membership.(generational)
	if versioned {
		key := knownKey{members: members, membership: g.Generation()}
		p.nodes.mu.Lock()
		key.nodes = p.nodes.gen
		p.nodes.mu.Unlock()
		if c := p.knownCache.Load(); c != nil && c.key == key {
			return c.n
		}
		n := p.countKnown()
		p.knownCache.Store(&knownCount{key: key, n: n})
		return n
	}
	return p.countKnown()
}

// generational is a Membership that counts its changes, so that what is
// derived from its members can be kept until the next one. Every commit asks
// known(); building the member list each time was 2.5 % of a single node's
// CPU on the ingest path.
type generational interface {
	Generation() uint64
}

// knownKey is what known() depends on: the placement's member list (a new
// pointer on each change), the membership's generation and the recorded
// nodes' generation. A count is reused only while all three are unchanged.
type knownKey struct {
	members    *[]*pcluster.Member
	membership uint64
	nodes      uint64
}

type knownCount struct {
	key knownKey
	n   int
}

// countKnown computes known() from the current membership.
func (p *Placement) countKnown() int {
	n := p.Members()
	if p.cfg.Membership == nil {
		return n
	}
	// Counted without copying the recorded names.
	ms := p.cfg.Membership.Members()
	var extra []string // seen alive, not recorded yet
	p.nodes.mu.Lock()
	k := len(p.nodes.names)
	for _, m := range ms {
		if (m.State == StateAlive || m.State == StateSuspect || m.Self) && (len(m.Kinds) > 0 || m.Self) &&
			!p.nodes.names[m.Name] && !slices.Contains(extra, m.Name) {
			extra = append(extra, m.Name)
		}
	}
	p.nodes.mu.Unlock()
	return max(k+len(extra), n)
}

// quorum is a majority of n nodes.
func quorum(n int) int { return n/2 + 1 }

// writeAcks is how many nodes, this one included, must hold a grain's write
// before it is acknowledged: --replicas (capped by the known members), and
// never fewer than n−quorum(n)+1, so that every acknowledged write set
// meets every claim majority. A claim is acknowledged by a majority; an
// older owner's write then reaches at least one member that knows the new
// epoch and refuses it.
func (p *Placement) writeAcks() int {
	n := p.known()
	return max(min(p.cfg.Replicas, n), n-quorum(n)+1)
}

// replicasOf returns the other members that should hold identity, in
// rendezvous order, followed by the rest (fallbacks). Members marked down
// go last, so that a live member takes a down replica's place.
func (p *Placement) replicasOf(identity string) (replicas, rest []string) {
	all := p.memberAddrs()
	need := min(p.writeAcks(), len(all)) - 1
	var up, down []string
	for _, a := range Rank(identity, all) {
		switch {
		case a == p.self:
		case p.isDown(a):
			down = append(down, a)
		default:
			up = append(up, a)
		}
	}
	others := append(up, down...)
	return others[:need], others[need:]
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
