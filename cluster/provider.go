package cluster

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/hashicorp/memberlist"
)

// resyncInterval is how often the unchanged topology is handed to protoactor
// again, so that members protoactor blocked on its own (its gossip heartbeat
// expired, or its gossip says they left) drop out of placement: protoactor
// applies its block list only inside UpdateClusterTopology.
const resyncInterval = 2 * time.Second

// maxNotes bounds the membership events waiting to be logged.
const maxNotes = 256

// Provider implements protoactor's cluster.ClusterProvider with
// hashicorp/memberlist, and keeps this node's view of the cluster for
// Members. Lifecycle: NewProvider, then one of StartMember or StartClient
// (protoactor's Cluster calls it), then Shutdown. Members and GossipAddr are
// safe to call at any time from any goroutine.
type Provider struct {
	cfg Config
	log *slog.Logger

	// Never call memberlist while holding mu: memberlist calls the event
	// delegate with its own node lock held, and the delegate takes mu.
	mu      sync.Mutex
	gen     atomic.Uint64 // see Generation
	started bool
	ml      *memberlist.Memberlist // nil before start and after Shutdown
	self    meta
	mlName  string // this incarnation's memberlist name: NodeName/ID
	bound   string
	probe   time.Duration // memberlist's ProbeInterval
	probeTO time.Duration // memberlist's ProbeTimeout
	sink    func(pcluster.Members)
	seq     int              // orders peers by first sight
	peers   map[string]*peer // every memberlist node seen this run, by memberlist name
	pushed  map[string]bool  // IDs in the topology last handed to protoactor
	retired map[string]bool  // IDs that dropped out of it: protoactor blocks them forever
	warned  map[string]bool  // retired IDs seen alive again, already logged
	notes   []note           // membership events for the loop to log
	dropped int              // notes lost because the queue was full
	// leaving maps a memberlist name to the actor-system ID its leave
	// notice named: that incarnation is leaving or has left.
	leaving map[string]string
	// joining is set while StartMember joins the seeds: a member with
	// other kinds met meanwhile (joinRefused, the first) fails the start.
	// Afterwards such members are refused and logged once (refused, by
	// memberlist name).
	joining     bool
	joinRefused error
	refused     map[string]bool
	// retiredBy is, by node name, when a member last told this
	// incarnation that it blocked its ID; retiredCh closes once a
	// majority of the cluster did (see Retired).
	retiredBy   map[string]time.Time
	retiredCh   chan struct{}
	retiredOnce sync.Once
	// reconnecting is set while a reconnect attempt runs.
	reconnecting atomic.Bool

	// relay gossips leave notices (ours and those we receive) to nodes the
	// leaver may not know; numNodes sizes its retransmissions.
	relay    memberlist.TransmitLimitedQueue
	numNodes atomic.Int64

	kick      chan struct{} // "dirty" flag: membership changed (buffered 1)
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// peer is one memberlist node (one incarnation of a twinmesh node) as the
// event delegate last reported it.
type peer struct {
	name    string // memberlist name
	seq     int
	addr    net.IP
	port    uint16
	gossip  string
	meta    meta
	metaErr error
	state   string    // StateAlive or StateDead (memberlist's verdict), or StateLeft (leave notice)
	lastAck time.Time // last direct probe acknowledged, or the join
	gone    bool      // memberlist reported it left or failed (NotifyLeave)
	deadAt  time.Time // when memberlist's dead verdict came
}

// deadGrace is how long a member memberlist declared dead stays in the
// topology handed to protoactor, which blocks the ID of a member that
// drops out for good. When a partition heals, memberlist passes the
// minority's dead verdicts about the majority's members on to the
// majority, whose members then refute them within a gossip round or two;
// without the grace each such verdict made a member block a healthy peer,
// and the peer, blocked by a majority, restarted (the Jepsen harness saw a
// majority member retire with the minority one). Writes do not wait for
// the verdict: a member whose requests fail is passed over at once
// (Placement's down marks).
const deadGrace = 3 * time.Second

// nodeName is the twinmesh node name of the peer.
func (pe *peer) nodeName() string {
	if pe.metaErr == nil && pe.meta.Node != "" {
		return pe.meta.Node
	}
	return pe.name
}

// NewProvider validates cfg (see Config for the defaults it fills) and
// returns a Provider that has not started gossiping yet. Errors wrap
// ErrConfig.
func NewProvider(cfg Config) (*Provider, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Join = slices.Clone(cfg.Join)
	cfg.GossipKey = slices.Clone(cfg.GossipKey)
	return &Provider{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "cluster", "node", cfg.NodeName),
		peers:     map[string]*peer{},
		pushed:    map[string]bool{},
		retired:   map[string]bool{},
		warned:    map[string]bool{},
		leaving:   map[string]string{},
		refused:   map[string]bool{},
		retiredBy: map[string]time.Time{},
		retiredCh: make(chan struct{}),
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}, nil
}

// StartMember starts gossip as a cluster member: the node's metadata carries
// its name, its actor-system ID, its protoactor address and the kinds of c
// (ErrMetaTooLarge if that exceeds memberlist's 512 bytes); it joins the
// seeds of Config.Join (ErrJoin when none answers), hands protoactor the
// alive members before returning, and from then on after every membership
// change. protoactor's Cluster.StartMember calls it, and panics on an error.
func (p *Provider) StartMember(c *pcluster.Cluster) error {
	kinds := c.GetClusterKinds()
	sort.Strings(kinds)
	self, err := p.selfMeta(c, kinds)
	if err != nil {
		return err
	}
	return p.start(self, c.MemberList.UpdateClusterTopology)
}

// StartClient starts gossip as a cluster client: it gossips no kinds, so no
// grain is placed on it, but it learns the members and feeds protoactor's
// member list like a member does.
func (p *Provider) StartClient(c *pcluster.Cluster) error {
	self, err := p.selfMeta(c, nil)
	if err != nil {
		return err
	}
	return p.start(self, c.MemberList.UpdateClusterTopology)
}

func (p *Provider) selfMeta(c *pcluster.Cluster, kinds []string) (meta, error) {
	addr := c.ActorSystem.Address()
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return meta{}, fmt.Errorf("cluster: actor system address %q (is remote started?): %w", addr, err)
	}
	port, err := parsePort(portStr)
	if err != nil || port == 0 {
		return meta{}, fmt.Errorf("cluster: actor system address %q: bad port", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		p.log.Warn("protoactor remote advertises an unspecified address; other nodes cannot reach it (set remote's advertised host)", "remote", addr)
	}
	return meta{Cluster: c.Config.Name, ID: c.ActorSystem.ID, Host: host, Port: port, Kinds: kinds}, nil
}

// start creates the memberlist, joins the seeds, pushes the first topology
// and starts the loop. sink receives every topology (protoactor's
// MemberList.UpdateClusterTopology outside tests).
func (p *Provider) start(self meta, sink func(pcluster.Members)) error {
	self.Node = p.cfg.NodeName
	if n, ok := self.fits(); !ok {
		return fmt.Errorf("%w: %d bytes for %d kinds, memberlist allows %d", ErrMetaTooLarge, n, len(self.Kinds), memberlist.MetaMaxSize)
	}
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return errors.New("cluster: provider already started")
	}
	// Each incarnation is its own memberlist node: a restarted node never
	// inherits the death notices of the previous one still being gossiped,
	// nor fights over its name with a different address.
	p.started, p.self, p.sink, p.mlName = true, self, sink, self.Node+"/"+self.ID
	p.joining = len(p.cfg.Join) > 0
	p.mu.Unlock()

	mc := p.cfg.memberlistConfig()
	mc.Name = p.mlName
	mc.Delegate = (*nodeDelegate)(p)
	mc.Events = (*eventDelegate)(p)
	mc.Ping = (*pingDelegate)(p)
	mc.Merge = (*mergeDelegate)(p)
	mc.Alive = (*aliveDelegate)(p)
	mc.Logger = log.New(memberlistLog{p.log}, "", 0)
	// Notices are tiny and rare: retransmit them more than memberlist does
	// its own messages, which push/pull sync backs up.
	p.relay.RetransmitMult = 3 * mc.RetransmitMult
	p.relay.NumNodes = func() int { return int(p.numNodes.Load()) }
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: start gossip on %s: %w", p.cfg.GossipAddr, err)
	}
	local := ml.LocalNode()
	bound := net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port)))
	p.mu.Lock()
	p.ml, p.bound, p.probe, p.probeTO = ml, bound, mc.ProbeInterval, mc.ProbeTimeout
	p.mu.Unlock()

	if len(p.cfg.Join) > 0 {
		n, err := ml.Join(p.cfg.Join)
		p.mu.Lock()
		refused := p.joinRefused
		p.joining = false
		p.mu.Unlock()
		if refused != nil || n == 0 {
			p.mu.Lock()
			p.ml = nil
			p.mu.Unlock()
			_ = ml.Shutdown()
			if refused != nil {
				return refused
			}
			return fmt.Errorf("%w: join %s: %v", ErrJoin, strings.Join(p.cfg.Join, ","), err)
		}
		if err != nil {
			p.log.Warn("some seeds did not answer", "seeds", p.cfg.Join, "contacted", n, "err", err)
		}
	}
	// The first topology is handed over on the caller's goroutine, before
	// the cluster serves requests: protoactor's disthash swaps its
	// rendezvous table without a lock (fixed upstream after the version we
	// use), so this write must happen before the first lookup.
	p.push(true)
	p.wg.Add(1)
	go p.loop()
	p.log.Info("gossip started", "gossip", bound, "id", self.ID, "remote", self.remote(),
		"kinds", self.Kinds, "seeds", p.cfg.Join, "profile", p.cfg.Profile, "encrypted", len(p.cfg.GossipKey) > 0)
	return nil
}

// loop is the goroutine that acts on membership events: it logs them and
// hands the topology to protoactor. Apart from start, it is the only caller
// of the sink, so topology updates never interleave.
func (p *Provider) loop() {
	defer p.wg.Done()
	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	reconnect := time.NewTicker(reconnectInterval)
	defer reconnect.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-p.kick:
			p.flushNotes()
			p.push(false)
		case <-resync.C:
			p.push(true)
		case <-reconnect.C:
			p.reconnect()
		}
	}
}

// reconnectInterval is how often a node tries to reach the members it took
// for dead. memberlist gossips to the dead only for GossipToTheDeadTime
// after its verdict, so a partition that outlasts it would never heal by
// gossip alone (serf reconnects the same way). It bounds how long a healed
// partition goes unnoticed (the Jepsen harness measured 13 s from the heal
// to a minority node learning it was retired with 10 s); an attempt to a
// member still unreachable costs a TCP connect in the background.
const reconnectInterval = 3 * time.Second

// reconnect joins, in the background, the gossip addresses of the nodes
// whose newest incarnation this node took for dead (not those that left).
// One attempt runs at a time.
func (p *Provider) reconnect() {
	p.mu.Lock()
	ml := p.ml
	newest := map[string]*peer{}
	for _, pe := range p.peers {
		if n := newest[pe.nodeName()]; n == nil || pe.seq > n.seq {
			newest[pe.nodeName()] = pe
		}
	}
	var addrs []string
	for _, pe := range newest {
		if pe.state == StateDead && pe.name != p.mlName && pe.gossip != "" {
			addrs = append(addrs, pe.gossip)
		}
	}
	p.mu.Unlock()
	if ml == nil || len(addrs) == 0 || !p.reconnecting.CompareAndSwap(false, true) {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.reconnecting.Store(false)
		if n, err := ml.Join(addrs); n > 0 {
			p.log.Info("reached members taken for dead", "members", n, "addrs", addrs)
		} else {
			p.log.Debug("members taken for dead still unreachable", "addrs", addrs, "err", err)
		}
	}()
}

// changed marks the membership dirty; it never blocks. Call it after the
// change is made and mu released: the generation it bumps tells readers
// that what they derived from Members before is stale.
func (p *Provider) changed() {
	p.gen.Add(1)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// push hands the alive members to protoactor when they changed, or always
// when force is set.
func (p *Provider) push(force bool) {
	p.mu.Lock()
	members, ids, back := p.topologyLocked()
	changed := !mapsEqual(ids, p.pushed)
	sink := p.sink
	p.mu.Unlock()
	p.tellRetired(back)
	if !changed && !force {
		return
	}
	sink(members) // outside mu: protoactor publishes the topology synchronously
	if !changed {
		return
	}
	p.mu.Lock()
	for id := range p.pushed {
		if !ids[id] {
			p.retired[id] = true
		}
	}
	p.pushed = ids
	p.mu.Unlock()
	names := make([]string, 0, len(members))
	for _, m := range members {
		names = append(names, m.Id+"@"+m.Address())
	}
	p.log.Info("topology handed to protoactor", "members", len(members), "ids", names)
}

// topologyLocked returns the members protoactor should place grains on:
// alive ones (memberlist's suspects included: protoactor blocks an ID that
// drops out forever, so only memberlist's dead verdict, once it held for
// deadGrace, removes one), of our
// cluster, hosting kinds, not leaving, the newest incarnation of their node
// and not blocked by protoactor. back lists the blocked incarnations that are
// alive again.
func (p *Provider) topologyLocked() (members pcluster.Members, ids map[string]bool, back []*peer) {
	ids = map[string]bool{}
	newest := map[string]int{} // node name → seq of its newest alive incarnation
	inTopology := func(pe *peer) bool {
		return pe.state == StateAlive || (pe.state == StateDead && time.Since(pe.deadAt) < deadGrace)
	}
	for _, pe := range p.peers {
		if inTopology(pe) {
			newest[pe.nodeName()] = max(newest[pe.nodeName()], pe.seq)
		}
	}
	for _, pe := range p.peers {
		if !inTopology(pe) || pe.metaErr != nil || len(pe.meta.Kinds) == 0 ||
			p.leaving[pe.name] == pe.meta.ID || pe.meta.Cluster != p.self.Cluster || ids[pe.meta.ID] {
			continue
		}
		if pe.seq < newest[pe.nodeName()] {
			continue // superseded: the node restarted before the old incarnation was declared dead
		}
		if p.retired[pe.meta.ID] {
			back = append(back, pe)
			continue
		}
		ids[pe.meta.ID] = true
		members = append(members, pe.meta.member())
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Id < members[j].Id })
	return members, ids, back
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// Shutdown stops gossip. graceful first announces the departure (a notice
// sent to every alive peer over TCP and gossiped, then memberlist's Leave
// broadcast, each bounded by Config.LeaveTimeout), so peers drop the node
// from the topology at once and report it StateLeft instead of declaring it
// dead after failure detection; the returned error reports a peer not told
// or a broadcast that timed out. Shutdown is idempotent. protoactor's
// Cluster.Shutdown calls it only when graceful: after
// Cluster.Shutdown(false), call Shutdown(false) yourself, or the node keeps
// answering gossip and stays in everyone's topology.
func (p *Provider) Shutdown(graceful bool) error {
	p.mu.Lock()
	ml := p.ml
	p.ml = nil
	p.mu.Unlock()
	p.closeOnce.Do(func() { close(p.done) })
	p.wg.Wait()
	if ml == nil {
		return nil
	}
	begin := time.Now()
	var errs []error
	if graceful {
		if err := p.announceLeaving(ml); err != nil {
			errs = append(errs, err)
		}
		if err := ml.Leave(p.cfg.LeaveTimeout); err != nil {
			errs = append(errs, fmt.Errorf("cluster: leave: %w", err))
		}
	}
	if err := ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: stop gossip: %w", err))
	}
	p.mu.Lock()
	if pe := p.peers[p.mlName]; pe != nil {
		pe.state = StateDead
		if graceful {
			pe.state = StateLeft
		}
	}
	p.pushed = map[string]bool{}
	p.mu.Unlock()
	p.gen.Add(1)
	p.flushNotes()
	err := errors.Join(errs...)
	p.log.Info("gossip stopped", "graceful", graceful, "took", time.Since(begin).Round(time.Millisecond), "err", err)
	return err
}

// announceLeaving sends a leaveNotice to every alive peer, in parallel, and
// waits for them all or for Config.LeaveTimeout; it also queues the notice
// for gossip, for the peers this node does not know yet.
func (p *Provider) announceLeaving(ml *memberlist.Memberlist) error {
	p.mu.Lock()
	notice := leaveNotice{Leaving: p.mlName, ID: p.self.ID}
	p.leaving[notice.Leaving] = notice.ID
	var to []*memberlist.Node
	for _, pe := range p.peers {
		if pe.state == StateAlive && pe.name != p.mlName {
			to = append(to, &memberlist.Node{Name: pe.name, Addr: pe.addr, Port: pe.port})
		}
	}
	p.mu.Unlock()
	msg := notice.encode()
	p.relay.QueueBroadcast(noticeBroadcast{notice, msg})
	errc := make(chan error, len(to)) // buffered: a late sender never blocks
	for _, n := range to {
		go func() {
			if err := ml.SendReliable(n, msg); err != nil {
				errc <- fmt.Errorf("%s: %w", n.Name, err)
				return
			}
			errc <- nil
		}()
	}
	timeout := time.NewTimer(p.cfg.LeaveTimeout)
	defer timeout.Stop()
	var errs []error
	for range to {
		select {
		case err := <-errc:
			if err != nil {
				errs = append(errs, err)
			}
		case <-timeout.C:
			errs = append(errs, errors.New("timed out"))
			return fmt.Errorf("cluster: announce leaving: %w", errors.Join(errs...))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cluster: announce leaving: %w", errors.Join(errs...))
	}
	return nil
}

// GossipAddr returns the gossip address other nodes should join: after a
// start, the address memberlist bound and advertises (the real port when
// Config.GossipAddr asked for port 0); before, Config.GossipAddr.
func (p *Provider) GossipAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bound != "" {
		return p.bound
	}
	return p.cfg.GossipAddr
}

// Members returns every node seen during this run, this one included,
// sorted by name, one entry per node name: a node that left or failed stays
// with its last state, a node that restarted shows its newest incarnation.
func (p *Provider) Members() []Member {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	others := 0
	latest := map[string]*peer{}
	for _, pe := range p.peers {
		if pe.state == StateAlive && pe.name != p.mlName {
			others++
		}
		if l := latest[pe.nodeName()]; l == nil || pe.seq > l.seq {
			latest[pe.nodeName()] = pe
		}
	}
	// memberlist probes one alive node per interval, in a round shuffled
	// anew each time, so two probes of a node are at most 2×others−1
	// intervals apart.
	suspectAfter := time.Duration(max(1, 2*others-1))*p.probe + 2*p.probeTO
	out := make([]Member, 0, len(latest))
	for name, pe := range latest {
		m := Member{Name: name, Gossip: pe.gossip, State: pe.state, Self: pe.name == p.mlName}
		if pe.metaErr == nil {
			m.Remote, m.ID, m.Kinds = pe.meta.remote(), pe.meta.ID, slices.Clone(pe.meta.Kinds)
			m.InTopology = p.pushed[pe.meta.ID]
		}
		if m.State == StateAlive && !m.Self && p.ml != nil && now.Sub(pe.lastAck) > suspectAfter {
			m.State = StateSuspect
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Generation counts the changes to what Members returns, but for the
// Suspect state, which it derives from time. It is bumped after each
// change, so a value derived from Members and tagged with the generation
// read before is current while the generation is unchanged.
func (p *Provider) Generation() uint64 { return p.gen.Load() }

var _ pcluster.ClusterProvider = (*Provider)(nil)
