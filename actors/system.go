package actors

import (
	lru "github.com/hashicorp/golang-lru/v2"

	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/persistence"
)

// Config configures a System. The zero value of every field but Store and
// Provider means its default.
type Config struct {
	// ClusterName must be equal on every node of a cluster. Default "twinmesh".
	ClusterName string
	// NodeName names this node in twin connection state and logs.
	NodeName string
	// RemoteAddr is the protoactor remote bind address. Default "127.0.0.1:0".
	RemoteAddr string
	// Provider supplies cluster membership (our memberlist provider).
	Provider pcluster.ClusterProvider
	// IdentityLookup places grains; nil means protoactor's disthash. When it
	// has a Handoff(time.Duration) method, a graceful Stop calls it before
	// leaving the cluster so every grain flushes while its peers can take it.
	IdentityLookup pcluster.IdentityLookup
	// Replication fences activations and replicates writes (a cluster);
	// nil means this node's store is the only copy.
	Replication Replication
	// RemoteTLS, when set, makes protoactor's remote (gRPC between nodes)
	// use TLS: Server for the listener (set ClientAuth to require peers'
	// certificates), Client for connections to other nodes.
	RemoteTLS *RemoteTLS
	// Store persists entities, twins and identities.
	Store Store
	// Registry holds the kinds to host; nil means plugin.Default().
	Registry *plugin.Registry
	// IdleTimeout is how long a grain stays active without messages before
	// it passivates. Default 10 minutes.
	IdleTimeout time.Duration
	// RequestTimeout bounds a grain call when the caller's context has no
	// deadline. Default 10 seconds.
	RequestTimeout time.Duration
	// Limits bound twin sections. Default twin.DefaultLimits().
	Limits twin.Limits
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil means none are registered.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now. Tests inject a virtual clock.
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.Store == nil {
		return errors.New("actors: Config.Store is required")
	}
	if c.Provider == nil {
		return errors.New("actors: Config.Provider is required")
	}
	if c.ClusterName == "" {
		c.ClusterName = "twinmesh"
	}
	if c.RemoteAddr == "" {
		c.RemoteAddr = "127.0.0.1:0"
	}
	if c.Registry == nil {
		c.Registry = plugin.Default()
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.Limits == (twin.Limits{}) {
		c.Limits = twin.DefaultLimits()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if len(c.Registry.Kinds()) == 0 {
		return errors.New("actors: no kinds registered (import _ \"github.com/twinmesh/twinmesh/actors/kinds\")")
	}
	return nil
}

type metrics struct {
	activations *prometheus.CounterVec
	active      *prometheus.GaugeVec
	requests    *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinmesh_grain_activations_total", Help: "Grain activations by kind.",
		}, []string{"kind"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinmesh_grains_active", Help: "Grains active on this node by kind.",
		}, []string{"kind"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "twinmesh_grain_request_seconds", Help: "Grain request latency by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.activations, m.active, m.requests)
	}
	return m
}

// System is a node's actor layer: the protoactor actor system, remote and
// cluster, hosting one grain kind per registered Behavior, plus the Go
// facade that adapters call. It is safe for concurrent use.
type System struct {
	cfg     Config
	log     *slog.Logger
	store   Store
	metrics *metrics
	// keepPayloads: telemetry carries the device's bytes to the grain
	// (KeepTelemetryPayloads).
	keepPayloads atomic.Bool
	// router matches grains' events against message routes (SetRouter).
	router atomic.Pointer[Router]

	actors  *actor.ActorSystem
	cluster *pcluster.Cluster
	// send makes one attempt of a grain call (attempt; tests replace it).
	send func(ctx context.Context, id, kind string, req *actorspb.Request, timeout time.Duration) (any, error)

	sinksMu sync.RWMutex
	sinks   []EventSink

	timers *timerService

	rules   atomic.Pointer[ruleSet]
	rulesMu sync.Mutex // serialises rule set updates
	actions *actionRunner

	models *modelRegistry

	tokens        atomic.Pointer[tokenSet]
	tokenLoadMu   sync.Mutex // serialises loadTokens
	tokenMu       sync.Mutex // guards tokenWatchers
	tokenWatchers []func()

	// runDeadline is the context grains run in (runCtx).
	runDeadline atomic.Pointer[sharedDeadline]

	// deaths wakes callers of local grains that stopped (deathWatch).
	deaths deathWatch

	// kinds caches entity kinds for the hot paths (see callCached).
	kinds *lru.Cache[string, string]

	activeGrains atomic.Int64
	started      atomic.Bool
	stopped      atomic.Bool
}

// New validates cfg and builds a System; Start brings it up.
func New(cfg Config) (*System, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &System{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "actors"),
		store:   cfg.Store,
		metrics: newMetrics(cfg.Registerer),
		kinds:   newKindCache(),
	}
	s.send = s.attempt
	s.rules.Store(&ruleSet{})
	s.models = newModelRegistry(cfg.Registerer)
	s.actions = newActionRunner(s)
	s.timers = newTimerService(s)
	return s, nil
}

// OnEvent adds a sink that receives every event published on this node.
// Add sinks before Start.
func (s *System) OnEvent(sink EventSink) {
	s.sinksMu.Lock()
	s.sinks = append(s.sinks, sink)
	s.sinksMu.Unlock()
}

func (s *System) publish(e Event) {
	if r := s.cfg.Replication; r != nil {
		r.Broadcast(e.Type, e)
	}
	s.publishLocal(e)
}

// publishLocal hands an event to this node's sinks only.
func (s *System) publishLocal(e Event) {
	if e.Type == EventIdentity {
		s.models.forgetDevice(e.Entity) // its model may have changed
	}
	s.sinksMu.RLock()
	sinks := s.sinks
	s.sinksMu.RUnlock()
	for _, sink := range sinks {
		sink(e)
	}
}

// DeliverRemoteEvents hands events published on another member to this
// node's sinks (WebSocket subscribers, MQTT sessions), so that a dashboard
// or a device connected here sees changes of grains living elsewhere.
func (s *System) DeliverRemoteEvents(evs []json.RawMessage) {
	for _, b := range evs {
		var e Event
		if err := json.Unmarshal(b, &e); err != nil {
			s.log.Warn("bad event from member", "err", err)
			continue
		}
		e.Remote = true
		s.publishLocal(e)
	}
}

// CatalogChanged tells the node that another member changed catalog data
// in its store: rules and access tokens are reloaded so they apply here at
// once (a revoked token's WebSockets close, see OnTokensChanged).
func (s *System) CatalogChanged(buckets []string) {
	var rulesChanged, tokensChanged, modelsChanged bool
	for _, b := range buckets {
		switch b {
		case string(persistence.BucketModels):
			modelsChanged = true
		case string(persistence.BucketRules), string(persistence.BucketTombstones):
			rulesChanged, modelsChanged = true, true
		case string(persistence.BucketTokens):
			tokensChanged = true
		}
	}
	if tokensChanged {
		if err := s.loadTokens(); err != nil {
			s.log.Warn("reload access tokens", "err", err)
		}
	}
	if rulesChanged {
		if err := s.loadRules(); err != nil {
			s.log.Warn("reload rules", "err", err)
		}
	}
	if modelsChanged {
		if err := s.loadModels(); err != nil {
			s.log.Warn("reload models", "err", err)
		}
	}
}

// tombstone records the deletion of a catalog item ("entity/<id>",
// "rules/<id>", "grants/<key>") so that a member that was away learns of
// it; untombstone clears it when the item is created again.
func (s *System) tombstone(key string) persistence.Op {
	doc, _ := json.Marshal(map[string]time.Time{"at": s.cfg.Now().UTC()})
	return persistence.PutDoc(persistence.BucketTombstones, key, doc)
}

func untombstone(key string) persistence.Op {
	return persistence.DeleteDoc(persistence.BucketTombstones, key)
}

// commitCatalog writes cluster-wide ops (identities, rules, grants,
// access tokens): to every member when clustered.
func (s *System) commitCatalog(ctx context.Context, ops ...persistence.Op) error {
	if r := s.cfg.Replication; r != nil {
		return r.CommitCatalog(ctx, ops)
	}
	return s.store.Commit(ctx, ops...)
}

// Start starts the actor system, remote and cluster member. protoactor
// panics when it cannot bind or join; Start turns that into an error.
func (s *System) Start(ctx context.Context) (err error) {
	host, portStr, err := net.SplitHostPort(s.cfg.RemoteAddr)
	if err != nil {
		return fmt.Errorf("remote address %q: %w", s.cfg.RemoteAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("remote address %q: bad port: %w", s.cfg.RemoteAddr, err)
	}
	if err := s.loadRules(); err != nil {
		return err
	}
	if err := s.loadModels(); err != nil {
		return err
	}
	if err := s.loadTokens(); err != nil {
		return err
	}
	// Fail early and clearly on a port in use instead of a protoactor panic.
	if port != 0 {
		l, lerr := net.Listen("tcp", s.cfg.RemoteAddr)
		if lerr != nil {
			return fmt.Errorf("remote listener: %w", lerr)
		}
		_ = l.Close()
	}
	logger := slog.New(protoactorHandler{minLevel{s.cfg.Logger.Handler(), slog.LevelWarn}}).With("component", "protoactor")
	s.actors = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	watchDeadLetters(s.actors)
	lookup := s.cfg.IdentityLookup
	if lookup == nil {
		lookup = disthash.New()
	}
	var kinds []*pcluster.Kind
	for _, name := range s.cfg.Registry.Kinds() {
		k, _ := s.cfg.Registry.Lookup(name)
		kinds = append(kinds, pcluster.NewKind(name, actor.PropsFromProducer(s.grainProducer(k))))
	}
	ccfg := pcluster.Configure(s.cfg.ClusterName, s.cfg.Provider, lookup,
		remote.Configure(host, port, s.remoteOptions()...),
		pcluster.WithKinds(kinds...),
		pcluster.WithRequestTimeout(s.cfg.RequestTimeout),
		pcluster.WithRequestLog(false),
	)
	s.cluster = pcluster.New(s.actors, ccfg)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("start cluster member: %v", r)
		}
	}()
	s.cluster.StartMember()
	s.started.Store(true)
	s.timers.start()
	s.log.Info("actor system started", "remote", s.actors.Address(), "id", s.actors.ID, "kinds", s.cfg.Registry.Kinds())
	return nil
}

// RemoteTLS is the TLS configuration of the traffic between nodes.
type RemoteTLS struct {
	Server, Client *tls.Config
}

func (s *System) remoteOptions() []remote.ConfigOption {
	t := s.cfg.RemoteTLS
	if t == nil {
		return nil
	}
	return []remote.ConfigOption{
		remote.WithServerOptions(grpc.Creds(credentials.NewTLS(t.Server))),
		remote.WithDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(t.Client))),
	}
}

// RemoteAddr returns the protoactor remote address actually bound.
func (s *System) RemoteAddr() string { return s.actors.Address() }

// NodeName returns the configured node name.
func (s *System) NodeName() string { return s.cfg.NodeName }

// Ready reports whether the system is started and not stopping.
func (s *System) Ready() bool { return s.started.Load() && !s.stopped.Load() }

// ActiveGrains returns the number of grains active on this node.
func (s *System) ActiveGrains() int64 { return s.activeGrains.Load() }

// Stop leaves the cluster (gracefully when graceful is true) and stops every
// grain. Grains persist before they answer, so nothing acknowledged is lost.
func (s *System) Stop(graceful bool) {
	s.stop(graceful, graceful)
}

// StopRetired stops a node the cluster retired (declared dead while it was
// cut off, and took its grains over): the cluster member and remote stop
// as in a graceful stop, so that a new incarnation can listen on the same
// addresses at once, but nothing is handed off, as the grains here were
// superseded.
func (s *System) StopRetired() {
	s.stop(false, true)
}

func (s *System) stop(handoff, graceful bool) {
	if !s.started.Load() || s.stopped.Swap(true) {
		return
	}
	s.actions.close()
	s.timers.close()
	if h, ok := s.cfg.IdentityLookup.(interface{ Handoff(time.Duration) }); ok && handoff {
		h.Handoff(10 * time.Second)
	}
	s.cluster.Shutdown(graceful)
	s.log.Info("actor system stopped")
}

// notify sends a fire-and-forget message to a grain, activating it if needed.
// A grain on this node is addressed through the PID cache while its
// activation lives: asking the placement for every notification (each
// telemetry message tells the parent its new contribution) was a request
// to the one placement actor per message. The check leaves the same window
// as asking the placement did: an activation that stops after it.
func (s *System) notify(sender actor.SenderContext, id, kind string, n *actorspb.Notify) {
	if pid, ok := s.cluster.PidCache.Get(id, kind); ok && pid.Address == s.actors.Address() {
		if _, alive := s.actors.ProcessRegistry.Get(pid); alive {
			sender.Send(pid, n)
			return
		}
		s.cluster.PidCache.Remove(id, kind)
	}
	pid := s.cluster.Get(id, kind)
	if pid == nil {
		s.log.Warn("notify: no activation", "entity", id, "kind", kind)
		return
	}
	if pid.Address == s.actors.Address() {
		s.cluster.PidCache.Set(id, kind, pid)
	}
	sender.Send(pid, n)
}

var _ proto.Message = (*actorspb.Request)(nil)

// sharedDeadline is a context with a deadline that many grain runs share.
type sharedDeadline struct {
	ctx      context.Context
	cancel   context.CancelFunc
	deadline time.Time
}

// runCtx returns the context grains run in: a deadline between half of
// and a whole RequestTimeout ahead, shared by every run in that span. A
// context per run (a timer armed and stopped for every message) was 2 %
// of the node's CPU on the ingest path, and one per grain would cost every
// active twin a timer; the deadline only bounds a stuck store. A replaced
// context is left to expire at its own deadline, as runs may still use it.
func (s *System) runCtx() context.Context {
	if d := s.runDeadline.Load(); d != nil && time.Until(d.deadline) >= s.cfg.RequestTimeout/2 {
		return d.ctx
	}
	d := &sharedDeadline{deadline: time.Now().Add(s.cfg.RequestTimeout)}
	d.ctx, d.cancel = context.WithDeadline(context.Background(), d.deadline)
	s.runDeadline.Store(d)
	return d.ctx
}
