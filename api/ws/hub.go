// Package ws is the dashboard WebSocket API (CONTRACT 6): clients subscribe
// to entities or subtrees and receive their changes as events, and can get,
// patch, invoke and call entity operations over the same connection.
//
// Memory per connection is bounded whatever the client's speed: events go
// through a bounded queue; when it is full, further events are coalesced per
// (subscription, entity) into the latest one with a "missed" count, in a map
// bounded by MaxPending; beyond that, events are dropped and counted on the
// subscription's next event. Events of one entity reach a subscriber in
// version order.
//
// Every op is authorized like a REST route (package api/authz, opNeeds):
// viewers subscribe and get, operators also patch, invoke and call, and
// the entity must be in the token's scope. Events of entities outside the
// scope are dropped before they are queued; a connection closes (1008)
// when its token expires or Revalidate finds it revoked.
package ws

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/api/authz"
)

// Event is a change to stream.
type Event struct {
	Type    string
	Entity  string
	Version int64
	Data    json.RawMessage
	TS      time.Time
}

// Backend serves the request ops. Its errors carry an errcode.Code; the
// client reads them as REST clients do (api.ErrorOf), and an error without
// a code as "internal". Every method may block on IO, must honour ctx and
// must be safe for concurrent use.
type Backend interface {
	GetTwin(ctx context.Context, id string) (json.RawMessage, error)
	PatchDesired(ctx context.Context, id string, patch json.RawMessage, ifVersion *int64) (json.RawMessage, error)
	Invoke(ctx context.Context, id, method string, payload json.RawMessage, timeout time.Duration) (status int, resp json.RawMessage, err error)
	// Ancestors returns the parent chain, nearest first.
	Ancestors(ctx context.Context, id string) ([]string, error)
}

// Caller is the optional capability of a Backend that serves the "call"
// op: entity operations (CONTRACT section 7), with the contract of
// Backend's methods. args is nil when the frame has none. A hub whose
// Backend is not a Caller answers every call unknown_op.
type Caller interface {
	Call(ctx context.Context, id, name string, args json.RawMessage) (json.RawMessage, error)
}

// Config configures a Hub; zero values mean the defaults.
type Config struct {
	// Authz authenticates the token of an upgrade request (bearer header
	// or access_token query) and authorizes every op and event with the
	// rules REST uses (CONTRACT section 13); nil refuses every connection.
	// Call Revalidate when tokens change, so that the connections of a
	// revoked token close at once.
	Authz            *authz.Authorizer
	MaxSubscriptions int           // per connection, default 100
	MaxFrameBytes    int64         // default 64 KiB
	SendQueue        int           // events queued per connection, default 256
	MaxPending       int           // coalesced entities per connection, default 10,000
	PingInterval     time.Duration // default 20 s
	MaxBadFrames     int           // per minute before the connection is closed, default 20
	MaxInvokes       int           // concurrent invokes per connection, default 8
	// AllowedOrigins are the browser origins ("https://ops.example.com")
	// whose pages may open a WebSocket; "*" allows any. Empty: only the
	// node's own origin (its dashboard). A request without an Origin
	// header (not from a browser) is not checked: the token authorizes it.
	AllowedOrigins []string
	Logger         *slog.Logger
	// InterestChanged, when set, is called after a subscription was added
	// and before it is acknowledged, so that a cluster can start sending
	// this node the event types it now wants (see Hub.Wants) before the
	// client counts on them.
	InterestChanged func(ctx context.Context)
}

func (c *Config) defaults() {
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 100
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 256
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 10000
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 20 * time.Second
	}
	if c.MaxBadFrames <= 0 {
		c.MaxBadFrames = 20
	}
	if c.MaxInvokes <= 0 {
		c.MaxInvokes = 8
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Stats are the hub's counters.
type Stats struct {
	Connections, Subscriptions int
	Sent, Coalesced, Dropped   int64
}

// Hub holds the connections. It is safe for concurrent use.
type Hub struct {
	cfg     Config
	backend Backend
	log     *slog.Logger
	up      websocket.Upgrader

	mu    sync.RWMutex
	conns map[*conn]struct{}

	ancMu sync.Mutex
	anc   map[string][]string // ancestors cache, cleared on topology changes

	sent, coalesced, dropped atomic.Int64
	closed                   atomic.Bool
}

// NewHub builds a hub; cfg.Authz decides who may connect and what they
// may do.
func NewHub(cfg Config, b Backend) *Hub {
	cfg.defaults()
	return &Hub{cfg: cfg, backend: b, log: cfg.Logger.With("component", "ws"), conns: map[*conn]struct{}{},
		anc: map[string][]string{},
		up:  websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096, CheckOrigin: originChecker(cfg.AllowedOrigins)}}
}

// originChecker returns the upgrader's Origin check: same origin, or one of
// allowed ("*": any), or no Origin at all (not a browser).
func originChecker(allowed []string) func(r *http.Request) bool {
	set := map[string]bool{}
	for _, o := range allowed {
		set[strings.ToLower(strings.TrimRight(strings.TrimSpace(o), "/"))] = true
	}
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" || set["*"] {
			return true
		}
		u, err := url.Parse(origin)
		if err != nil {
			return false
		}
		if strings.EqualFold(u.Host, r.Host) {
			return true
		}
		return set[strings.ToLower(u.Scheme+"://"+u.Host)]
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	st := Stats{Connections: len(h.conns), Sent: h.sent.Load(), Coalesced: h.coalesced.Load(), Dropped: h.dropped.Load()}
	for c := range h.conns {
		c.mu.Lock()
		st.Subscriptions += len(c.subs)
		c.mu.Unlock()
	}
	return st
}

// TopologyChanged forgets cached ancestors, so subtree subscriptions follow
// re-parenting and deletes.
func (h *Hub) TopologyChanged(string) {
	h.ancMu.Lock()
	h.anc = map[string][]string{}
	h.ancMu.Unlock()
}

// eventAncestors returns the ancestors of an event's entity. A deleted
// entity has none in the store; its topology event names its parent,
// whose ancestors are used, so that subtree subscribers (and scoped
// tokens) hear of the deletion.
func (h *Hub) eventAncestors(e Event) []string {
	a := h.ancestors(e.Entity)
	if a != nil || e.Type != "topology" {
		return a
	}
	var top struct {
		Entity struct {
			Parent string `json:"parent"`
		} `json:"entity"`
	}
	if json.Unmarshal(e.Data, &top) != nil || top.Entity.Parent == "" {
		return nil
	}
	return append([]string{top.Entity.Parent}, h.ancestors(top.Entity.Parent)...)
}

func (h *Hub) ancestors(id string) []string {
	h.ancMu.Lock()
	a, ok := h.anc[id]
	h.ancMu.Unlock()
	if ok {
		return a
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	a, _ = h.backend.Ancestors(ctx, id)
	cancel()
	h.ancMu.Lock()
	if len(h.anc) > 100000 {
		h.anc = map[string][]string{}
	}
	h.anc[id] = a
	h.ancMu.Unlock()
	return a
}

// Wants reports whether some subscription of a connection of this hub takes
// events of eventType.
func (h *Hub) Wants(eventType string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.conns {
		c.mu.Lock()
		for _, s := range c.subs {
			if len(s.types) == 0 || s.types[eventType] {
				c.mu.Unlock()
				return true
			}
		}
		c.mu.Unlock()
	}
	return false
}

// Publish fans an event out to matching subscriptions. It never blocks on
// a client.
func (h *Hub) Publish(e Event) {
	if e.Type == "topology" {
		h.TopologyChanged(e.Entity)
	}
	h.mu.RLock()
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.RUnlock()
	var anc []string
	ancLoaded := false
	for _, c := range conns {
		c.offer(e, func() []string {
			if !ancLoaded {
				anc, ancLoaded = h.eventAncestors(e), true
			}
			return anc
		})
	}
}

// Close closes every connection.
func (h *Hub) Close() {
	h.closed.Store(true)
	h.mu.Lock()
	conns := h.conns
	h.conns = map[*conn]struct{}{}
	h.mu.Unlock()
	for c := range conns {
		c.close(websocket.CloseGoingAway, "server shutting down")
		c.wg.Wait()
	}
}

// errorOf is the error object of a reply: the same as a REST error's.
func errorOf(err error) *api.ErrorBody {
	_, body := api.ErrorOf(err)
	return &body
}

// ServeHTTP authorizes and upgrades the connection.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Authz == nil {
		api.WriteError(w, errcode.New(errcode.Unauthorized, "missing or invalid token"))
		return
	}
	p, err := h.cfg.Authz.Authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="twinmesh"`)
		api.WriteError(w, err)
		return
	}
	if h.closed.Load() {
		api.WriteError(w, errcode.New(errcode.Unavailable, "shutting down"))
		return
	}
	ws, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader wrote the error
	}
	c := newConn(h, ws, p)
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	c.start()
}

// Revalidate closes, at once, the connections whose token no longer works
// (revoked, expired, gone); the node calls it whenever tokens change
// (actors.System.OnTokensChanged). It does not block on clients for more
// than a second each.
func (h *Hub) Revalidate() {
	if h.cfg.Authz == nil {
		return
	}
	h.mu.RLock()
	var gone []*conn
	for c := range h.conns {
		if !h.cfg.Authz.Valid(c.p) {
			gone = append(gone, c)
		}
	}
	h.mu.RUnlock()
	for _, c := range gone {
		h.log.Info("closing the WebSocket of a revoked token", "token", c.p.TokenID)
		c.close(websocket.ClosePolicyViolation, "token revoked")
	}
}

func (h *Hub) remove(c *conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
}

// JobsEntity is what a subscription names to receive the events of every
// fleet job (each job's events name "$jobs/<job ID>").
const JobsEntity = "$jobs"

// subscription is one "subscribe" of a connection.
type subscription struct {
	id      string
	entity  string
	subtree bool
	types   map[string]bool // empty: all
}

func (s *subscription) matches(e Event, anc func() []string) bool {
	if len(s.types) > 0 && !s.types[e.Type] {
		return false
	}
	if e.Entity == s.entity {
		return true
	}
	if s.entity == JobsEntity && strings.HasPrefix(e.Entity, JobsEntity+"/") {
		return true // "$jobs" stands for every job
	}
	if !s.subtree {
		return false
	}
	for _, a := range anc() {
		if a == s.entity {
			return true
		}
	}
	return false
}

type pendingEvent struct {
	sub    string
	e      Event
	missed int64
}

type conn struct {
	h  *Hub
	ws *websocket.Conn
	p  authz.Principal // who connected; fixed for the connection's life
	// expiry closes the connection when its token expires.
	expiry *time.Timer

	mu      sync.Mutex
	subs    map[string]*subscription
	nextSub int
	queue   [][]byte                 // event frames in order, at most SendQueue; guarded by mu
	pending map[string]*pendingEvent // sub+"\x00"+entity → latest, when the queue was full
	order   []string                 // pending keys in arrival order
	lost    map[string]int64         // per sub: events dropped beyond MaxPending
	control chan []byte              // replies and pings, small and served first
	wake    chan struct{}

	invokes chan struct{}
	bad     []time.Time
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}
