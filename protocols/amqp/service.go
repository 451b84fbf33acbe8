package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors"
)

// Bounds limit each endpoint's outbox; past them messages are dropped and
// counted.
type Bounds struct {
	MaxCount int           // messages (default 100,000)
	MaxBytes int           // encoded bytes (default 64 MiB)
	MaxAge   time.Duration // older messages are dropped unsent (0: no limit)
}

// Config configures a Service. Zero values take the documented defaults.
type Config struct {
	Path     string  // the bbolt file of definitions, outboxes and dead letters
	Backend  Backend // the actor system, for ingress (nil: ingress refused)
	Bounds   Bounds
	MaxTries int // a rejected message is dead-lettered after this many tries (default 5)
	// BackoffBase and BackoffMax shape the retry delays (default 200ms, 30s).
	BackoffBase, BackoffMax time.Duration
	Window                  int           // messages in flight per endpoint (default 64)
	DialTimeout             time.Duration // default 10s
	SendTimeout             time.Duration // wait for a settlement (default 30s)
	// Grains holds the grains' outboxes, which RouteEvents fills (the Service
	// is the actor system's Router) and the endpoints' workers send; nil:
	// only the legacy outbox of Path is sent.
	Grains Grains
	// RescanEvery is how often the outboxes of the store are scanned for
	// the devices this member owns (default 2s): how soon a new owner
	// sends what a dead member left.
	RescanEvery time.Duration
	// Definitions keeps endpoints, routes and ingresses cluster-wide;
	// nil: in the Path file, for this member only.
	Definitions Definitions
	// Members gathers the dead letters from every member of a cluster;
	// nil: this member's only.
	Members Members
	// DefsEvery is how often definitions written on other members are
	// looked for (default 1s).
	DefsEvery time.Duration
	// Credit bounds the ingress messages in flight per ingress (default 32).
	Credit int
	// MaxMessageBytes is the largest ingress message body (default 256 KiB).
	MaxMessageBytes int
	// KeepPayloads is told whether an enabled telemetry route exists, so
	// that the actor system carries the devices' original bytes only then
	// (actors.System.KeepTelemetryPayloads).
	KeepPayloads func(on bool)
	// Tags loads a device's tags from the node's store, for conditions
	// that read them (nil: conditions see no tags).
	Tags func(deviceID string) (map[string]any, error)
	// TagsTTL bounds how long cached tags are used without a change
	// event (default 30s; see tagCache).
	TagsTTL    time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

func (c *Config) defaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.Bounds.MaxCount, 100_000)
	def(&c.Bounds.MaxBytes, 64<<20)
	def(&c.MaxTries, 5)
	def(&c.Window, 64)
	def(&c.Credit, 32)
	def(&c.MaxMessageBytes, 256<<10)
	defd(&c.BackoffBase, 200*time.Millisecond)
	defd(&c.BackoffMax, 30*time.Second)
	defd(&c.DialTimeout, 10*time.Second)
	defd(&c.SendTimeout, 30*time.Second)
	defd(&c.TagsTTL, 30*time.Second)
	defd(&c.RescanEvery, 2*time.Second)
	defd(&c.DefsEvery, time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Service owns the endpoints, routes and ingresses of a node.
type Service struct {
	cfg  Config
	log  *slog.Logger
	st   *store
	m    *metrics
	tags *tagCache // devices' tags for conditions; nil without Config.Tags

	// enabled counts the enabled routes: with none, grains do not call
	// RouteEvents (it runs inside every grain's commit path).
	enabled atomic.Int32
	// telemetryRoutes: whether an enabled route takes telemetry; without
	// one a telemetry event is not looked at (not even re-encoded).
	telemetryRoutes atomic.Bool

	// defsMu serialises the changes of definitions (REST and defsPoller);
	// applied holds the catalog documents applied, by key.
	defsMu   sync.Mutex
	applied  map[string]string
	migrated bool

	mu        sync.RWMutex
	ctx       context.Context // the Start context; nil before Start
	cancel    context.CancelFunc
	closed    bool
	wg        sync.WaitGroup
	workers   map[string]*worker
	routes    map[string]*compiledRoute
	ingresses map[string]*ingress
}

// New opens the store at cfg.Path and loads the definitions; Start runs
// them.
func New(cfg Config) (*Service, error) {
	cfg.defaults()
	st, err := openStore(cfg.Path)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Logger, st: st, m: newMetrics(cfg.Registerer),
		workers: map[string]*worker{}, applied: map[string]string{},
		routes: map[string]*compiledRoute{}, ingresses: map[string]*ingress{}}
	if cfg.Tags != nil {
		s.tags = newTagCache(cfg.Tags, cfg.TagsTTL, 100_000, cfg.Now)
	}
	load := func(bucket []byte, fn func(raw []byte) error) {
		if err == nil {
			err = st.defs(bucket, fn)
		}
	}
	load(bucketEndpoints, func(raw []byte) error {
		var e Endpoint
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		n, b, err := st.stats(e.Name)
		s.workers[e.Name] = newWorker(s, e, n, b)
		return err
	})
	load(bucketRoutes, func(raw []byte) error {
		var r Route
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		p, err := compileCondition(r.Condition)
		s.routes[r.Name] = newCompiledRoute(r, p)
		return err
	})
	load(bucketIngress, func(raw []byte) error {
		var g Ingress
		if err := json.Unmarshal(raw, &g); err != nil {
			return err
		}
		s.ingresses[g.Name] = newIngress(s, g)
		return nil
	})
	if err != nil {
		_ = st.close()
		return nil, fmt.Errorf("load amqp definitions: %w", err)
	}
	s.countEnabled()
	s.syncDefs(false) // the cluster's definitions (moved from amqp.db once running)
	return s, nil
}

// Start runs the outbox scan, the endpoint workers and the ingress
// consumers until ctx ends or Close.
func (s *Service) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, s.cancel = context.WithCancel(ctx)
	s.ctx = ctx
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.rescanner(ctx) }()
	if s.cfg.Definitions != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.defsPoller(ctx) }()
	}
	for _, w := range s.workers {
		s.startWorker(w)
	}
	for _, g := range s.ingresses {
		s.startIngress(g)
	}
}

// startWorker runs w under the Start context; callers hold s.mu.
func (s *Service) startWorker(w *worker) {
	if s.ctx == nil || s.closed {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	w.stop, w.alive = cancel, true
	s.wg.Add(1)
	go func() { defer s.wg.Done(); w.run(ctx) }()
}

func (s *Service) startIngress(g *ingress) {
	if s.ctx == nil || s.closed {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	g.stop, g.alive = cancel, true
	s.wg.Add(1)
	go func() { defer s.wg.Done(); g.run(ctx) }()
}

// Wait waits until what Start started ended (its context was cancelled).
func (s *Service) Wait() { s.wg.Wait() }

// Close stops everything Start started and closes the store; a second
// Close does nothing.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	for _, w := range s.workers {
		if w.alive {
			w.stop()
		}
	}
	for _, g := range s.ingresses {
		if g.alive {
			g.stop()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return s.st.close()
}

// HandleEvent is an actors.EventSink: it keeps the tags cache up to date
// (routing itself happens in the grain, see RouteEvents).
func (s *Service) HandleEvent(e actors.Event) {
	if s.tags != nil {
		s.tags.observe(e) // also for remote events and with no route
	}
}

// ErrConflict: a definition refers to something that does not exist (a
// route's endpoint).
var ErrConflict = errors.New("conflict")

// Endpoint returns an endpoint's status; ErrNotFound when undefined.
func (s *Service) Endpoint(name string) (EndpointStatus, error) {
	s.mu.RLock()
	w := s.workers[name]
	s.mu.RUnlock()
	if w == nil {
		return EndpointStatus{}, ErrNotFound
	}
	return w.status(), nil
}

// Endpoints lists the endpoints by name.
func (s *Service) Endpoints() []EndpointStatus {
	s.mu.RLock()
	out := make([]EndpointStatus, 0, len(s.workers))
	for _, w := range s.workers {
		out = append(out, w.status())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DeadLetters returns up to limit dead letters of an endpoint.
func (s *Service) DeadLetters(endpoint string, limit int) ([]DeadLetter, error) {
	recs, err := s.st.deadLetters(endpoint, limit)
	out := make([]DeadLetter, 0, len(recs))
	for _, r := range recs {
		out = append(out, DeadLetter{Route: r.Route, Device: r.Device, Source: r.Source, Body: r.Body,
			Properties: r.Properties, Enqueued: r.Enqueued, Tries: r.Tries, Error: r.Error, DeadAt: r.Dead})
	}
	return out, err
}

// DeadLetter is a message the broker rejected MaxTries times.
type DeadLetter struct {
	Route      string            `json:"route"`
	Device     string            `json:"deviceId"`
	Source     string            `json:"source"`
	Body       []byte            `json:"body"`
	Properties map[string]string `json:"properties,omitempty"`
	Enqueued   time.Time         `json:"enqueuedTime"`
	Tries      int               `json:"tries"`
	Error      string            `json:"error"`
	DeadAt     time.Time         `json:"deadAt"`
	// Member is the cluster member that holds the dead letter (its
	// remote address); empty on a node without Members.
	Member string `json:"member,omitempty"`
}

// countEnabled recounts the enabled routes and tells KeepPayloads whether
// one takes telemetry; callers hold s.mu (or own s, in New).
func (s *Service) countEnabled() {
	n, telemetry := 0, false
	for _, r := range s.routes {
		if r.Enabled {
			n++
			telemetry = telemetry || r.Source == SourceTelemetry
		}
	}
	s.enabled.Store(int32(n))
	s.telemetryRoutes.Store(telemetry)
	if s.cfg.KeepPayloads != nil {
		s.cfg.KeepPayloads(telemetry)
	}
}

// Route returns a route; ErrNotFound when undefined.
func (s *Service) Route(name string) (Route, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.routes[name]
	if r == nil {
		return Route{}, ErrNotFound
	}
	return r.Route, nil
}

// Routes lists the routes by name.
func (s *Service) Routes() []Route {
	s.mu.RLock()
	out := make([]Route, 0, len(s.routes))
	for _, r := range s.routes {
		out = append(out, r.Route)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
