package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/authz"
	"github.com/twinmesh/twinmesh/api/jobs"
	"github.com/twinmesh/twinmesh/internal/strictjson"
)

// Config configures the HTTP handler.
type Config struct {
	// Token is the admin token (--api-token): every right over the whole
	// tree. Access tokens with roles and scopes (CONTRACT section 13) are
	// minted through POST /api/v1/tokens.
	Token string
	// Authz authenticates and authorizes callers; nil builds one from
	// Token and System. The WebSocket hub is built with the same one.
	Authz *authz.Authorizer
	// MaxTokenLifetime bounds the ttl of access tokens. Default 366 days.
	MaxTokenLifetime time.Duration
	// System is the node's actor layer.
	System *actors.System
	// MaxBody bounds request bodies; larger ones get 413. Default 1 MiB.
	MaxBody int64
	// SignToken mints a SAS token for a device (POST /devices/{id}/token).
	SignToken func(deviceID, key string, ttl time.Duration) (token string, expires time.Time, err error)
	// Methods invokes direct methods (the MQTT adapter); nil answers 404.
	Methods Methods
	// Streams opens device streams (GET /devices/{id}/streams/{name},
	// CONTRACT section 11); nil answers 404.
	Streams Streams
	// Cluster reports the cluster view for GET /cluster.
	Cluster func() any
	// ForgetMember removes a node stopped for good from the members the
	// cluster's majorities count (DELETE /cluster/members/{node}); nil
	// answers 404.
	ForgetMember func(ctx context.Context, node string) error
	// Backup writes a consistent copy of the store (GET /backup); nil
	// answers 404.
	Backup func(w io.Writer) (int64, error)
	// Ready reports readiness for /readyz; nil means the System's readiness.
	Ready func() error
	// Extra mounts further handlers (WebSocket hub, dashboard, commands);
	// auth admits only the admin token or an admin access token for the
	// whole tree.
	Extra func(mux *http.ServeMux, auth func(http.Handler) http.Handler)
	// OwnsJob reports whether this member runs the fleet job with this ID
	// (RunJobs); nil: every job (a node on its own).
	OwnsJob func(jobID string) bool
	// Logger and metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
}

// Server is the HTTP handler of a node.
type Server struct {
	cfg Config
	sys *actors.System
	log *slog.Logger
	mux *http.ServeMux
	// authz is the one authorization layer (routes.go declares what each
	// route needs).
	authz    *authz.Authorizer
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	jobs     *jobs.Manager
}

// New builds the handler.
func New(cfg Config) (*Server, error) {
	if cfg.System == nil {
		return nil, fmt.Errorf("api: Config.System is required")
	}
	if cfg.Token == "" {
		return nil, fmt.Errorf("api: Config.Token is required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxTokenLifetime <= 0 {
		cfg.MaxTokenLifetime = 366 * 24 * time.Hour
	}
	if cfg.Authz == nil {
		cfg.Authz = authz.New(authz.Config{AdminToken: cfg.Token, Tokens: cfg.System, Tree: cfg.System})
	}
	s := &Server{cfg: cfg, sys: cfg.System, log: cfg.Logger.With("component", "api"), mux: http.NewServeMux(),
		authz: cfg.Authz}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "twinmesh_http_requests_total", Help: "HTTP requests by route and status.",
	}, []string{"route", "status"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "twinmesh_http_request_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 12),
	}, []string{"route"})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.requests, s.latency)
	}
	s.jobs = s.newJobs()
	s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) routes() {
	table := s.routeTable()
	for _, rt := range table {
		limit := s.cfg.MaxBody
		if rt.stream {
			limit = -1 // the handler reads the body as a stream, a bounded line at a time
		}
		s.mux.Handle(rt.pattern, s.instrument(rt.pattern, limit, s.guard(rt, handlerFunc(rt.h))))
	}
	allow := newAllowed(table)
	s.mux.Handle("/api/", s.instrument("unknown", s.cfg.MaxBody, s.guard(route{need: anyone}, handlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if methods := allow.of(r); methods != nil {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, struct {
				Error ErrorBody `json:"error"`
			}{ErrorBody{Code: "method_not_allowed", Message: fmt.Sprintf("%s takes %s, not %s", r.URL.Path, strings.Join(methods, ", "), r.Method)}})
			return nil
		}
		return errcode.New(errcode.NotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	}))))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	gatherer := s.cfg.Gatherer
	if gatherer == nil {
		gatherer = prometheus.DefaultGatherer
	}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	if s.cfg.Extra != nil {
		s.cfg.Extra(s.mux, func(next http.Handler) http.Handler { return s.guard(route{need: whole}, next) })
	}
}

// handlerFunc lets handlers return errors that are written as JSON.
type handlerFunc func(http.ResponseWriter, *http.Request) error

func (f handlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := f(w, r); err != nil {
		WriteError(w, err)
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack lets WebSocket routes (device streams) take the connection over;
// the status is recorded as 101.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be hijacked")
	}
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

// instrument counts and times a route's requests and bounds their bodies
// to maxBody bytes (none when negative).
func (s *Server) instrument(route string, maxBody int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		if maxBody >= 0 {
			r.Body = http.MaxBytesReader(rec, r.Body, maxBody)
		}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = 200
		}
		s.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var err error
	if s.cfg.Ready != nil {
		err = s.cfg.Ready()
	} else if !s.sys.Ready() {
		err = errors.New("actor system not ready")
	}
	if err != nil {
		WriteError(w, errcode.Wrap(errcode.Unavailable, err))
		return
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

// readBody reads a request body: 413 over MaxBody, 400 when it cannot be
// read. An empty body is not an error here.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errcode.New(errcode.TooLarge, "request body over %d bytes", mbe.Limit)
		}
		return nil, errcode.New(errcode.BadRequest, "read body: %v", err)
	}
	return body, nil
}

// decode reads a JSON body into v: 413 over MaxBody, 400 on an empty body,
// malformed JSON or trailing data.
func decode(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return errcode.New(errcode.BadRequest, "empty body: a JSON document is required")
	}
	return unmarshal(body, v)
}

// unmarshal decodes a JSON document read with readBody; 400 when malformed.
func unmarshal(body []byte, v any) error {
	if err := strictjson.Check(body); err != nil {
		return errcode.New(errcode.BadRequest, "%v", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errcode.New(errcode.BadRequest, "malformed JSON: %v", err)
	}
	return nil
}
