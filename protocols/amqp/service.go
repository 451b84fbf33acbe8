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
	QueueLen                int           // events waiting for the outbox writer (default 8192)
	DialTimeout             time.Duration // default 10s
	SendTimeout             time.Duration // wait for a settlement (default 30s)
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
	def(&c.QueueLen, 8192)
	def(&c.Credit, 32)
	def(&c.MaxMessageBytes, 256<<10)
	defd(&c.BackoffBase, 200*time.Millisecond)
	defd(&c.BackoffMax, 30*time.Second)
	defd(&c.DialTimeout, 10*time.Second)
	defd(&c.SendTimeout, 30*time.Second)
	defd(&c.TagsTTL, 30*time.Second)
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

	queue chan queued // events matched by a route, waiting for the outbox writer
	// enabled counts the enabled routes: with none, HandleEvent returns
	// before it looks at the event (it runs inside every grain's commit
	// path).
	enabled atomic.Int32
	// telemetryRoutes: whether an enabled route takes telemetry; without
	// one a telemetry event is not looked at (not even re-encoded).
	telemetryRoutes atomic.Bool

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
		queue: make(chan queued, cfg.QueueLen), workers: map[string]*worker{},
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
	return s, nil
}

// Start runs the outbox writer, the endpoint workers and the ingress
// consumers until ctx ends or Close.
func (s *Service) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, s.cancel = context.WithCancel(ctx)
	s.ctx = ctx
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.writer(ctx) }()
	for _, w := range s.workers {
		s.startWorker(w)
	}
	for _, g := range s.ingresses {
		s.startIngress(g)
	}
}

// startWorker runs w under the Start context; callers hold s.mu.
func (s *Service) startWorker(w *worker) {
	if s.ctx == nil {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	w.stop, w.alive = cancel, true
	s.wg.Add(1)
	go func() { defer s.wg.Done(); w.run(ctx) }()
}

func (s *Service) startIngress(g *ingress) {
	if s.ctx == nil {
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

// HandleEvent is an actors.EventSink: it matches the event against the
// routes and queues the matches for the outbox writer. It never blocks: a
// full queue drops the message and counts it.
func (s *Service) HandleEvent(e actors.Event) {
	if s.tags != nil {
		s.tags.observe(e) // also for remote events and with no route
	}
	if e.Remote || s.enabled.Load() == 0 || (e.Type == actors.EventTelemetry && !s.telemetryRoutes.Load()) {
		return // the member hosting the grain routes it; no route
	}
	source, msg, ok := classify(e)
	if !ok {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var body, tags map[string]any // decoded once, for the first condition
	for _, r := range s.routes {
		if !r.Enabled || r.Source != source {
			continue
		}
		if r.prog != nil && body == nil {
			body = conditionBody(msg)
		}
		if r.tags && tags == nil {
			tags = map[string]any{}
			if s.tags != nil {
				var err error
				if tags, err = s.tags.get(e.Entity); err != nil {
					s.log.Warn("amqp route: device tags", "device", e.Entity, "err", err)
				}
			}
		}
		ok, err := r.match(source, e, msg, body, tags)
		if err != nil {
			s.m.condErrors.WithLabelValues(r.Name).Inc()
			continue
		}
		if !ok {
			continue
		}
		ts := e.TS
		if ts.IsZero() {
			ts = s.cfg.Now()
		}
		m := msg
		m.Device, m.Source, m.Enqueued = e.Entity, messageSource[source], ts.UTC()
		q := queued{endpoint: r.Endpoint, rec: record{Route: r.Name, outMessage: m}}
		select {
		case s.queue <- q:
		default:
			s.m.dropped.WithLabelValues(r.Endpoint).Inc()
			if w := s.workers[r.Endpoint]; w != nil {
				w.mu.Lock()
				w.st.Dropped++
				w.mu.Unlock()
			}
		}
	}
}

// writer moves queued messages into the outboxes, many per transaction.
func (s *Service) writer(ctx context.Context) {
	batch := make([]queued, 0, 256)
	for {
		select {
		case <-ctx.Done():
			// What is queued at shutdown still goes to the outbox.
			for {
				batch = batch[:0]
				for len(batch) < cap(batch) {
					select {
					case q := <-s.queue:
						batch = append(batch, q)
						continue
					default:
					}
					break
				}
				if len(batch) == 0 {
					return
				}
				s.writeBatch(batch)
			}
		case q := <-s.queue:
			batch = append(batch[:0], q)
		}
	drain:
		for len(batch) < cap(batch) {
			select {
			case q := <-s.queue:
				batch = append(batch, q)
			default:
				break drain
			}
		}
		s.writeBatch(batch)
	}
}

func (s *Service) writeBatch(batch []queued) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	written, sizes, err := s.st.appendOutbox(batch, func(endpoint string, size int) bool {
		w := s.workers[endpoint]
		if w == nil {
			s.m.dropped.WithLabelValues(endpoint).Inc() // the route names no endpoint
			return false
		}
		return w.admit(size)
	})
	if err != nil {
		// The transaction rolled back: what it admitted is lost, counted
		// as dropped, and its reservations are given back.
		s.log.Error("amqp outbox write", "err", err, "messages", len(batch))
		for i, q := range written {
			w := s.workers[q.endpoint]
			w.account(0, 1, 0, 0, 1, sizes[i])
		}
		return
	}
	for _, q := range written {
		s.workers[q.endpoint].notify()
	}
}

// ErrConflict: a definition refers to something that does not exist (a
// route's endpoint).
var ErrConflict = errors.New("conflict")

// PutEndpoint creates or replaces an endpoint; its outbox is kept and its
// worker restarted with the new definition.
func (s *Service) PutEndpoint(e Endpoint) error {
	if err := e.Check(); err != nil {
		return err
	}
	s.mu.Lock()
	old := s.workers[e.Name]
	s.mu.Unlock()
	if old != nil && old.alive {
		old.stop()
		<-old.done
	}
	if err := s.st.putDef(bucketEndpoints, e.Name, e); err != nil {
		return err
	}
	n, b, err := s.st.stats(e.Name)
	if err != nil {
		return err
	}
	w := newWorker(s, e, n, b)
	if old != nil {
		st := old.status()
		w.st.Delivered, w.st.Retried, w.st.Dropped, w.st.DeadLettered = st.Delivered, st.Retried, st.Dropped, st.DeadLettered
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.workers[e.Name] = w
	s.startWorker(w)
	s.log.Info("amqp endpoint defined", "endpoint", e.Name, "url", RedactURL(e.URL), "address", e.Address)
	return nil
}

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

// DeleteEndpoint stops an endpoint and drops its outbox.
func (s *Service) DeleteEndpoint(name string) error {
	s.mu.Lock()
	w := s.workers[name]
	delete(s.workers, name)
	s.mu.Unlock()
	if w == nil {
		return ErrNotFound
	}
	if w.alive {
		w.stop()
		<-w.done
	}
	return s.st.deleteDef(bucketEndpoints, name)
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

// PutRoute creates or replaces a route; its endpoint must exist.
func (s *Service) PutRoute(r Route) error {
	if err := r.Check(); err != nil {
		return err
	}
	p, _ := compileCondition(r.Condition)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workers[r.Endpoint] == nil {
		return fmt.Errorf("%w: endpoint %q does not exist", ErrConflict, r.Endpoint)
	}
	if err := s.st.putDef(bucketRoutes, r.Name, r); err != nil {
		return err
	}
	s.routes[r.Name] = newCompiledRoute(r, p)
	s.countEnabled()
	return nil
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

// DeleteRoute removes a route.
func (s *Service) DeleteRoute(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routes[name] == nil {
		return ErrNotFound
	}
	delete(s.routes, name)
	s.countEnabled()
	return s.st.deleteDef(bucketRoutes, name)
}
