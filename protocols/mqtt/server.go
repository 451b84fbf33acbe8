package mqtt

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/internal/mochiclose"
	"github.com/twinmesh/twinmesh/protocols/devicerate"
)

// Identity is what the adapter needs of a device identity.
type Identity struct {
	DeviceID, PrimaryKey, SecondaryKey string
	Enabled                            bool
}

// Telemetry is one device-to-cloud message.
type Telemetry struct {
	TS          time.Time
	Payload     []byte
	ContentType string
	Properties  map[string]string
	// MessageID is the device's $.mid, if it sent one: the grain drops a
	// retransmission whose ID it already stored.
	MessageID string
	// ContentEncoding is the device's $.ce (IoT Hub's content-encoding
	// system property, e.g. "utf-8").
	ContentEncoding string
	QoS             byte
	// Component is IoT Plug and Play's $.sub: the component of the
	// device's model the telemetry belongs to, "" for the model itself.
	Component string
}

// C2DMessage is a pending cloud-to-device message.
type C2DMessage struct {
	ID         string
	Payload    []byte
	Properties map[string]string
	ExpiresAt  time.Time
}

// Backend is implemented by the actor layer. Every method may block on IO,
// must honour ctx, and must be safe for concurrent use. Its errors carry an
// errcode.Code (see errors.go), which the adapter maps once to twin
// response statuses and PUBACK reason codes.
type Backend interface {
	Identity(ctx context.Context, deviceID string) (Identity, error)
	// MayActFor reports whether deviceID is connectedVia gatewayID.
	MayActFor(ctx context.Context, gatewayID, deviceID string) (bool, error)
	// MayRead reports whether subscriberID was granted deviceID's telemetry.
	MayRead(ctx context.Context, subscriberID, deviceID string) (bool, error)
	// Telemetry returns after the message is durably stored.
	Telemetry(ctx context.Context, deviceID string, m Telemetry) error
	// GetTwin returns the desired and reported sections, each with "$version".
	GetTwin(ctx context.Context, deviceID string) (desired, reported json.RawMessage, err error)
	// PatchReported applies a merge patch and returns the reported $version.
	PatchReported(ctx context.Context, deviceID string, patch []byte) (int64, error)
	SetConnection(ctx context.Context, deviceID string, connected bool) error
	PendingMessages(ctx context.Context, deviceID string) ([]C2DMessage, error)
	MessageDelivered(ctx context.Context, deviceID, messageID string) error
}

// ModelAnnouncer is an optional capability of a Backend: it records the
// DTDL model ID an IoT Plug and Play device names in its CONNECT user name
// ("<host>/<deviceId>/?api-version=…&model-id=dtmi:…"). It is called once
// per accepted connection that names one; an error refuses the connection.
type ModelAnnouncer interface {
	AnnounceModel(ctx context.Context, deviceID, modelID string) error
}

// Config configures a Server. Zero values mean the defaults.
type Config struct {
	Addr           string // plain listener; "" disables
	TLSAddr        string // TLS listener; "" disables
	TLSCert        string // PEM files for TLSAddr
	TLSKey         string
	MaxConnections int     // default 10,000
	MessageRate    float64 // per-device publishes per second, default 100
	Burst          int     // default 200
	// Rate is the per-device rate limit shared with the other protocol
	// adapters; nil means one of the adapter's own built from MessageRate
	// and Burst.
	Rate        *devicerate.Limiter
	MaxPayload  int // default 256 KiB
	QoS0Queue   int // bounded QoS 0 telemetry queue, default 10,000
	QoS0Workers int // default 128: each waits for a commit, so more workers fill bigger batches
	// RequestTimeout bounds each Backend call. Default 10 s.
	RequestTimeout time.Duration
	// MaxTokenLifetime refuses SAS tokens that expire further ahead than
	// it; 0 allows any.
	MaxTokenLifetime time.Duration
	// ConnectTimeout is how long a new connection may take to send its
	// CONNECT packet before it is closed. Default 10 s.
	ConnectTimeout time.Duration
	// MaxPending caps the connections not yet authenticated; beyond it new
	// ones are closed at once. Default MaxConnections/4, at least 256.
	MaxPending int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock for token expiry; nil means time.Now.
	Now func() time.Time
}

func (c *Config) defaults() error {
	if c.Addr == "" && c.TLSAddr == "" {
		return errors.New("mqtt: no listener configured")
	}
	if c.TLSAddr != "" && (c.TLSCert == "" || c.TLSKey == "") {
		return errors.New("mqtt: a TLS listener needs a certificate and a key")
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 10000
	}
	if c.MessageRate <= 0 {
		c.MessageRate = 100
	}
	if c.Burst <= 0 {
		c.Burst = 200
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 256 << 10
	}
	if c.QoS0Queue <= 0 {
		c.QoS0Queue = 10000
	}
	if c.QoS0Workers <= 0 {
		c.QoS0Workers = 128
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxPending <= 0 {
		c.MaxPending = max(256, c.MaxConnections/4)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rate == nil {
		c.Rate = devicerate.New(c.MessageRate, c.Burst)
	}
	return nil
}

type metrics struct {
	messages    *prometheus.CounterVec
	refused     *prometheus.CounterVec
	qos0Dropped prometheus.Counter
	// eventsDropped counts device work (desired notifications,
	// disconnects, deliveries) lost to a full event queue.
	eventsDropped prometheus.Counter
	connections   prometheus.GaugeFunc
	queue         prometheus.GaugeFunc
}

// Server is the embedded broker. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	backend Backend
	broker  *mochi.Server
	metrics metrics

	addr, tlsAddr string
	guards        []*guardListener // the TCP listeners under mochi's
	guardMetrics  *guardMetrics
	// refusals limits the log lines of refused connections (one per
	// client and reason per 10 s); they are all counted.
	refusals *logLimiter

	qos0   chan qos0Item
	events chan func() // device work caused by events (HandleEvent)
	stop   chan struct{}
	wg     sync.WaitGroup

	rid      atomic.Uint64
	mu       sync.Mutex
	sessions map[string]*session // by client (device) ID
	// The publish rate limits are cfg.Rate's, by client ID: per device, not
	// per session, so that reconnecting does not refill the burst (issue
	// 12), and shared with the other protocols.
	methodsMu sync.Mutex
	methods   map[string]chan methodResult // by deviceID + "\x00" + rid
}

type qos0Item struct {
	device string
	m      Telemetry
}

type methodResult struct {
	status  int
	payload []byte
}

// session is our per-connection state next to mochi's. It is kept small
// for idle devices (BENCHMARKS.md, footprint): the subscribed kinds are a
// bit set, and the maps stay nil until the session uses them (reading a
// nil map is fine; writers make it).
type session struct {
	cl       *mochi.Client
	subs     topicSet
	bound    map[string]bool   // devices whose devicebound topic this session subscribed to
	inflight map[uint16]c2dRef // C2D packet ID → message
	sent     map[string]bool   // C2D message IDs in flight this session
}

// topicSet is a set of TopicKinds.
type topicSet uint32

func (t topicSet) has(k TopicKind) bool { return t&(1<<uint(k)) != 0 }
func (t *topicSet) add(k TopicKind)     { *t |= 1 << uint(k) }

type c2dRef struct{ device, msg string }

// New validates cfg and builds the broker; Start opens the listeners.
func New(cfg Config, b Backend) (*Server, error) {
	if b == nil {
		return nil, errors.New("mqtt: Backend is required")
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "mqtt"), backend: b,
		qos0: make(chan qos0Item, cfg.QoS0Queue), events: make(chan func(), eventQueue), stop: make(chan struct{}),
		sessions: map[string]*session{}, methods: map[string]chan methodResult{}}
	s.metrics = metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinmesh_mqtt_messages_total", Help: "Telemetry messages accepted, by QoS."}, []string{"qos"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinmesh_mqtt_refused_total", Help: "Refused connections and publishes, by reason."}, []string{"reason"}),
		qos0Dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinmesh_mqtt_qos0_dropped_total", Help: "QoS 0 telemetry dropped because the queue was full."}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinmesh_mqtt_event_work_dropped_total", Help: "Device notifications, disconnects and deliveries dropped because the event queue was full."}),
	}
	// The number of sessions itself, not increments: a session taken over
	// by a reconnect of the same device was counted twice and let go once
	// (the gauge drifted to 48 with no socket open, issue 12).
	s.metrics.connections = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "twinmesh_mqtt_connections", Help: "Connected devices (open sessions)."}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.sessions))
	})
	s.refusals = &logLimiter{interval: 10 * time.Second, seen: map[string]time.Time{}}
	s.guardMetrics = &guardMetrics{
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_mqtt_accept_errors_total",
			Help: "Failed accepts on the MQTT listeners (e.g. too many open files); the listener retries with backoff."}),
		refusedPending: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_mqtt_pending_refused_total",
			Help: "MQTT connections closed at once because too many were not yet authenticated."}),
	}
	s.guardMetrics.pending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "twinmesh_mqtt_pending_connections",
		Help: "MQTT connections accepted and not yet authenticated."}, func() float64 {
		var n int64
		s.mu.Lock()
		for _, g := range s.guards {
			n += g.pending.Load()
		}
		s.mu.Unlock()
		return float64(n)
	})
	s.metrics.queue = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "twinmesh_mqtt_qos0_queue", Help: "QoS 0 telemetry waiting to be stored."}, func() float64 { return float64(len(s.qos0)) })
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.metrics.messages, s.metrics.refused, s.metrics.qos0Dropped, s.metrics.eventsDropped, s.metrics.connections, s.metrics.queue)
		cfg.Registerer.MustRegister(s.guardMetrics.acceptErrors, s.guardMetrics.refusedPending, s.guardMetrics.pending)
	}
	caps := mochi.NewDefaultServerCapabilities()
	// Our hook enforces MaxConnections (and counts refusals); mochi's limit
	// is only a backstop.
	caps.MaximumClients = int64(cfg.MaxConnections)*2 + 100
	caps.MaximumPacketSize = uint32(cfg.MaxPayload + 64<<10) // the payload check is ours, with a clear count
	caps.RetainAvailable = 0
	caps.MaximumSessionExpiryInterval = 3600
	// mochi allocates a client's outbound queue up front, 8,192 pointers
	// (64 KiB) by default: with 4,000 devices connected the node's Go heap
	// was 328 MB, 73 MB with 256 (BENCHMARKS.md, footprint). A device has few
	// writes pending (responses, desired changes, methods, messages); a
	// full queue refuses the write and the QoS 1 message stays inflight.
	caps.MaximumClientWritesPending = clientWritesPending
	// Topic aliases are MQTT 5's, and per client: a bound keeps a client
	// from filling a map of 65,535 names.
	caps.TopicAliasMaximum = 64
	s.broker = mochi.New(&mochi.Options{InlineClient: true, Capabilities: caps,
		// mochi reads each connection through a bufio.Reader of 2 KiB by
		// default, allocated for the whole session: 36 MB for 18,000
		// idle devices. A packet larger than the buffer is read straight
		// into its own slice, so a smaller buffer costs only a few more
		// reads when small packets come back to back.
		ClientNetReadBufferSize: clientReadBuffer,
		Logger:                  slog.New(newQuietHandler(cfg.Logger.With("component", "mochi").Handler(), 10*time.Second))})
	if err := s.broker.AddHook(&hook{s: s}, nil); err != nil {
		return nil, fmt.Errorf("mqtt: add hook: %w", err)
	}
	return s, nil
}

// Start binds the listeners and starts serving; a port in use is an error.
func (s *Server) Start(_ context.Context) error {
	if s.cfg.Addr != "" {
		tcp, err := net.Listen("tcp", s.cfg.Addr)
		if err != nil {
			return fmt.Errorf("mqtt listener: %w", err)
		}
		s.addr = tcp.Addr().String()
		ln := newGuardListener(tcp, "mqtt", s.cfg, s.guardMetrics)
		s.mu.Lock()
		s.guards = append(s.guards, ln)
		s.mu.Unlock()
		if err := s.broker.AddListener(listeners.NewNet("mqtt", ln)); err != nil {
			return fmt.Errorf("mqtt listener: %w", err)
		}
	}
	if s.cfg.TLSAddr != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("mqtts certificate: %w", err)
		}
		tcp, err := net.Listen("tcp", s.cfg.TLSAddr)
		if err != nil {
			return fmt.Errorf("mqtts listener: %w", err)
		}
		s.tlsAddr = tcp.Addr().String()
		g := newGuardListener(tcp, "mqtts", s.cfg, s.guardMetrics)
		s.mu.Lock()
		s.guards = append(s.guards, g)
		s.mu.Unlock()
		ln := tls.NewListener(g, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err := s.broker.AddListener(listeners.NewNet("mqtts", ln)); err != nil {
			return fmt.Errorf("mqtts listener: %w", err)
		}
	}
	for i := 0; i < s.cfg.QoS0Workers; i++ {
		s.wg.Add(1)
		go s.qos0Worker()
	}
	s.wg.Add(1)
	go s.eventWorker()
	if err := s.broker.Serve(); err != nil {
		return fmt.Errorf("mqtt serve: %w", err)
	}
	return nil
}

// Addr returns the plain listener's bound address ("" if disabled).
func (s *Server) Addr() string { return s.addr }

// TLSAddr returns the TLS listener's bound address ("" if disabled).
func (s *Server) TLSAddr() string { return s.tlsAddr }

// Close stops the listeners, disconnects every client and stops the QoS 0
// workers after they drained the queue.
// Serving returns an error while a listener fails to accept connections
// (for readiness), nil while every listener serves.
func (s *Server) Serving() error {
	var errs []error
	s.mu.Lock()
	for _, g := range s.guards {
		if err := g.Failing(); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

func (s *Server) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	closers := make([]io.Closer, 0, len(s.guards))
	s.mu.Lock()
	for _, g := range s.guards {
		closers = append(closers, g)
	}
	s.mu.Unlock()
	err := mochiclose.Close(s.broker, closers, 3*time.Second, 5*time.Second)
	close(s.stop)
	s.wg.Wait()
	return err
}

func (s *Server) qos0Worker() {
	defer s.wg.Done()
	for {
		select {
		case it := <-s.qos0:
			s.storeTelemetry(it.device, it.m)
		case <-s.stop:
			for {
				select {
				case it := <-s.qos0:
					s.storeTelemetry(it.device, it.m)
				default:
					return
				}
			}
		}
	}
}

func (s *Server) storeTelemetry(device string, m Telemetry) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	err := s.backend.Telemetry(ctx, device, m)
	if err != nil {
		// The device's fault (too many points, a name too long, bad
		// data) or ours; counted by kind, logged once in a while.
		reason := "store_failed"
		switch errcode.Of(err) {
		case errcode.TooLarge:
			reason = "too_large"
		case errcode.BadRequest:
			reason = "bad_request"
		}
		s.metrics.refused.WithLabelValues(reason).Inc()
		if s.refusals.allow(device+"\x00"+reason, time.Now()) {
			s.log.Warn("telemetry not stored", "device", device, "qos", m.QoS, "reason", reason, "err", err)
		}
		return err
	}
	s.metrics.messages.WithLabelValues(strconv.Itoa(int(m.QoS))).Inc()
	return nil
}

func (s *Server) session(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

// IsConnected reports whether the device has a live session on this node.
func (s *Server) IsConnected(deviceID string) bool {
	ss := s.session(deviceID)
	return ss != nil && !ss.cl.Closed()
}

// Disconnect drops the device's live session (it was disabled or deleted).
func (s *Server) Disconnect(deviceID string) bool {
	cl, ok := s.broker.Clients.Get(deviceID)
	if !ok || cl.Closed() {
		return false
	}
	_ = s.broker.DisconnectClient(cl, packets.ErrNotAuthorized)
	cl.Stop(fmt.Errorf("device %s disconnected by the server", deviceID))
	return true
}

// clientReadBuffer is the size of a connection's read buffer
// (mochi's ClientNetReadBufferSize).
const clientReadBuffer = 1024

// clientWritesPending bounds a client's queue of packets waiting to be
// written (mochi's MaximumClientWritesPending).
const clientWritesPending = 256
