package coap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Server is the CoAP endpoint of a node: a plain UDP listener, a DTLS-PSK
// listener, or both, over one Backend. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	backend Backend
	m       *metrics

	udp      *udpserver.Server
	dtls     *dtlsserver.Server
	addr     string
	dtlsAddr string

	auth *authCache
	keys *keyChooser
	obs  *observers
	pres *presence
	// refusals limits the log lines of refused requests (one per device
	// and reason per 10 s); they are all counted.
	refusals *logLimiter

	non    chan nonItem
	events chan func()
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup // workers
	serves sync.WaitGroup // the go-coap servers' Serve

	mu        sync.Mutex
	closing   bool // no more work goroutines (spawn)
	endpoints map[*udpclient.Conn]*endpoint
	sessions  map[string]map[*udpclient.Conn]struct{} // DTLS sessions by device
}

type nonItem struct {
	device string
	m      Telemetry
}

// New validates cfg and builds the server; Start opens the listeners.
func New(cfg Config, b Backend) (*Server, error) {
	if b == nil {
		return nil, errors.New("coap: Backend is required")
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "coap"), backend: b,
		non: make(chan nonItem, cfg.NonQueue), events: make(chan func(), eventQueue), stop: make(chan struct{}),
		endpoints: map[*udpclient.Conn]*endpoint{}, sessions: map[string]map[*udpclient.Conn]struct{}{},
		refusals: &logLimiter{interval: 10 * time.Second, seen: map[string]time.Time{}}}
	var err error
	if s.auth, err = newAuthCache(s, authCacheSize); err != nil {
		return nil, err
	}
	if s.keys, err = newKeyChooser(keyCacheSize); err != nil {
		return nil, err
	}
	s.obs = newObservers()
	s.pres = newPresence(s)
	s.m = newMetrics(s)
	if cfg.Registerer != nil {
		if err := s.m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("coap metrics: %w", err)
		}
	}
	return s, nil
}

// Start binds the listeners and starts serving; a port in use is an error.
func (s *Server) Start(_ context.Context) error {
	if s.cfg.Addr != "" {
		l, err := listenUDP(s.cfg.Addr)
		if err != nil {
			return fmt.Errorf("coap listener: %w", err)
		}
		s.addr = l.LocalAddr().String()
		s.udp = udpserver.New(udpOptions{s})
		s.serves.Add(1)
		go func() {
			defer s.serves.Done()
			if err := s.udp.Serve(l); err != nil {
				s.log.Error("coap listener stopped", "err", err)
			}
		}()
	}
	if s.cfg.DTLSAddr != "" {
		l, err := s.listenDTLS(s.cfg.DTLSAddr)
		if err != nil {
			s.Close()
			return fmt.Errorf("coaps listener: %w", err)
		}
		s.dtlsAddr = l.Addr().String()
		s.dtls = dtlsserver.New(dtlsOptions{s})
		s.serves.Add(1)
		go func() {
			defer s.serves.Done()
			if err := s.dtls.Serve(l); err != nil {
				s.log.Error("coaps listener stopped", "err", err)
			}
		}()
	}
	for i := 0; i < s.cfg.NonWorkers; i++ {
		s.wg.Add(1)
		go s.nonWorker()
	}
	s.wg.Add(3)
	go s.eventWorker()
	go s.pres.run()
	go s.refreshObservers()
	return nil
}

// Addr returns the plain listener's bound address ("" if disabled).
func (s *Server) Addr() string { return s.addr }

// DTLSAddr returns the DTLS listener's bound address ("" if disabled).
func (s *Server) DTLSAddr() string { return s.dtlsAddr }

// Close is Shutdown with five seconds to mark the devices disconnected.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown stops the listeners, ends every DTLS session and observation,
// stores the queued non-confirmable telemetry, and marks the devices it
// showed as connected disconnected, best effort until ctx is done (a
// cancelled ctx skips that).
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		close(s.stop)
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		if s.udp != nil {
			s.udp.Stop()
		}
		if s.dtls != nil {
			s.dtls.Stop()
		}
		s.serves.Wait()
		s.wg.Wait()
		s.pres.disconnectAll(ctx)
	})
	return nil
}

// readBuffer is the socket receive buffer the listeners ask for. go-coap
// reads every datagram of a listener on one goroutine: with a thousand
// devices each awaiting an answer, the kernel's default (208 KiB, about 200
// datagrams) overflows whenever that goroutine pauses, and clients wait
// for their retransmission (2 s and more). Linux caps it at
// net.core.rmem_max.
const readBuffer = 4 << 20

// listenUDP binds a plain CoAP listener with a large receive buffer.
func listenUDP(addr string) (*coapnet.UDPConn, error) {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", a)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(readBuffer)
	return coapnet.NewUDPConn("udp", c), nil
}

// spawn runs f on a goroutine Close waits for; false (and f does not
// run) once the server is closing.
func (s *Server) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// nonWorker stores queued non-confirmable telemetry until the server
// closes, then what is left in the queue.
func (s *Server) nonWorker() {
	defer s.wg.Done()
	for {
		select {
		case it := <-s.non:
			_ = s.storeTelemetry(it.device, it.m)
		case <-s.stop:
			for {
				select {
				case it := <-s.non:
					_ = s.storeTelemetry(it.device, it.m)
				default:
					return
				}
			}
		}
	}
}

// storeTelemetry hands a message to the backend and counts the outcome.
func (s *Server) storeTelemetry(device string, m Telemetry) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	err := s.backend.Telemetry(ctx, device, m)
	kind := "non"
	if m.Confirmable {
		kind = "con"
	}
	if err != nil {
		reason := "store_failed"
		switch errcode.Of(err) {
		case errcode.TooLarge:
			reason = "too_large"
		case errcode.BadRequest:
			reason = "bad_request"
		}
		s.m.refused.WithLabelValues(reason).Inc()
		if s.refusals.allow(device+"\x00"+reason, time.Now()) {
			s.log.Warn("telemetry not stored", "device", device, "type", kind, "reason", reason, "err", err)
		}
		return err
	}
	s.m.messages.WithLabelValues(kind).Inc()
	return nil
}

// eventQueue bounds the work events cause that waits for the event worker.
const eventQueue = 4096

func (s *Server) enqueueEvent(f func()) {
	select {
	case s.events <- f:
	default:
		s.m.eventsDropped.Inc()
	}
}

// eventWorker runs queued event work until the server closes.
func (s *Server) eventWorker() {
	defer s.wg.Done()
	for {
		select {
		case f := <-s.events:
			f()
		case <-s.stop:
			return
		}
	}
}

// endpoint is the adapter's state of one go-coap connection: a UDP
// endpoint (address and port) or a DTLS session.
type endpoint struct {
	cc     *udpclient.Conn
	secure bool   // a DTLS session
	device string // its PSK identity
	// sendMu lets one confirmable notification at a time be outstanding
	// on the endpoint, so that a Reset arriving meanwhile answers it.
	sendMu  sync.Mutex
	sending bool // guarded by s.mu
	reset   bool // guarded by s.mu
	authed  bool // guarded by s.mu: a request was authenticated
	// exchanges are the message IDs the endpoint used recently.
	exchanges exchanges
}

// onNewConn records a new endpoint, and a DTLS session for its device.
func (s *Server) onNewConn(cc *udpclient.Conn) {
	ep := &endpoint{cc: cc}
	if pc, ok := cc.NetConn().(*pskConn); ok {
		ep.secure, ep.device = true, pc.Device()
	}
	s.mu.Lock()
	s.endpoints[cc] = ep
	if ep.secure {
		set := s.sessions[ep.device]
		if set == nil {
			set = map[*udpclient.Conn]struct{}{}
			s.sessions[ep.device] = set
		}
		set[cc] = struct{}{}
		ep.authed = true
	}
	s.mu.Unlock()
	if ep.secure {
		s.m.sessionsOpened.Inc()
		s.pres.addDTLS(ep.device, 1)
	}
	cc.AddOnClose(func() { s.onClose(cc) })
}

// onClose forgets a closed endpoint: its observations end, and its DTLS
// session no longer keeps its device connected.
func (s *Server) onClose(cc *udpclient.Conn) {
	s.mu.Lock()
	ep := s.endpoints[cc]
	delete(s.endpoints, cc)
	if ep != nil && ep.secure {
		if set := s.sessions[ep.device]; set != nil {
			delete(set, cc)
			if len(set) == 0 {
				delete(s.sessions, ep.device)
			}
		}
	}
	s.mu.Unlock()
	for _, o := range s.obs.ofConn(cc) {
		s.dropObserver(o, "closed")
	}
	if ep != nil && ep.secure {
		s.pres.addDTLS(ep.device, -1)
	}
}

func (s *Server) endpointOf(cc *udpclient.Conn) *endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpoints[cc]
}

// sessionCount returns the number of open DTLS sessions.
func (s *Server) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, set := range s.sessions {
		n += len(set)
	}
	return n
}

// endSessions closes the DTLS sessions of a device (disabled or deleted)
// and drops its observations; it returns how many sessions it closed.
func (s *Server) endSessions(device string) int {
	s.mu.Lock()
	var conns []*udpclient.Conn
	for cc := range s.sessions[device] {
		conns = append(conns, cc)
	}
	s.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
	for _, o := range s.obs.ofClient(device) {
		s.dropObserver(o, "disabled")
	}
	s.pres.forget(device)
	return len(conns)
}

// IsConnected reports whether the device counts as connected here: an
// observation, a DTLS session, or a request within the presence window.
func (s *Server) IsConnected(deviceID string) bool { return s.pres.connected(deviceID) }

// logLimiter allows one log line per key and interval.
type logLimiter struct {
	mu       sync.Mutex
	interval time.Duration
	seen     map[string]time.Time
}

func (l *logLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.seen[key]; ok && now.Sub(t) < l.interval {
		return false
	}
	if len(l.seen) > 10000 {
		for k, t := range l.seen {
			if now.Sub(t) >= l.interval {
				delete(l.seen, k)
			}
		}
	}
	l.seen[key] = now
	return true
}

// codeString renders a CoAP code as "4.01", for metrics.
func codeString(c uint16) string {
	return strconv.Itoa(int(c>>5)) + "." + fmt.Sprintf("%02d", c&0x1f)
}
