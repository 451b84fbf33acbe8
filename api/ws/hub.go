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
package ws

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api"
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
	// Authorize checks the token (bearer header or access_token query) of
	// an upgrade request; it must be safe for concurrent use. nil refuses
	// every connection.
	Authorize        func(r *http.Request) bool
	MaxSubscriptions int           // per connection, default 100
	MaxFrameBytes    int64         // default 64 KiB
	SendQueue        int           // events queued per connection, default 256
	MaxPending       int           // coalesced entities per connection, default 10,000
	PingInterval     time.Duration // default 20 s
	MaxBadFrames     int           // per minute before the connection is closed, default 20
	MaxInvokes       int           // concurrent invokes per connection, default 8
	Logger           *slog.Logger
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

// NewHub builds a hub; cfg.Authorize decides who may connect.
func NewHub(cfg Config, b Backend) *Hub {
	cfg.defaults()
	return &Hub{cfg: cfg, backend: b, log: cfg.Logger.With("component", "ws"), conns: map[*conn]struct{}{},
		anc: map[string][]string{},
		up: websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096,
			// Dashboards may be served from elsewhere; the token, not the
			// origin, is what authorizes.
			CheckOrigin: func(*http.Request) bool { return true }}}
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
				anc, ancLoaded = h.ancestors(e.Entity), true
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
	if h.cfg.Authorize == nil || !h.cfg.Authorize(r) {
		api.WriteError(w, errcode.New(errcode.Unauthorized, "missing or invalid token"))
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
	c := newConn(h, ws)
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	c.start()
}

func (h *Hub) remove(c *conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
}

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

func newConn(h *Hub, ws *websocket.Conn) *conn {
	return &conn{h: h, ws: ws, subs: map[string]*subscription{},
		pending: map[string]*pendingEvent{}, lost: map[string]int64{}, control: make(chan []byte, 64),
		wake: make(chan struct{}, 1), invokes: make(chan struct{}, h.cfg.MaxInvokes), done: make(chan struct{})}
}

func (c *conn) start() {
	c.wg.Add(2)
	go c.writer()
	go c.reader()
}

func (c *conn) close(code int, reason string) {
	c.once.Do(func() {
		msg := websocket.FormatCloseMessage(code, reason)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		close(c.done)
		_ = c.ws.Close()
		c.h.remove(c)
	})
}

type eventFrame struct {
	Sub     string          `json:"sub"`
	Type    string          `json:"type"`
	Entity  string          `json:"entity"`
	Version int64           `json:"version"`
	Data    json.RawMessage `json:"data,omitempty"`
	TS      time.Time       `json:"ts"`
	Missed  int64           `json:"missed,omitempty"`
}

func encodeEvent(sub string, e Event, missed int64) []byte {
	b, _ := json.Marshal(eventFrame{Sub: sub, Type: e.Type, Entity: e.Entity, Version: e.Version, Data: e.Data, TS: e.TS, Missed: missed})
	return b
}

// offer queues an event for every matching subscription without blocking.
func (c *conn) offer(e Event, anc func() []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.subs {
		if !s.matches(e, anc) {
			continue
		}
		key := s.id + "\x00" + e.Entity
		if p, ok := c.pending[key]; ok {
			// Already behind for this entity: keep only the latest, in order.
			p.e, p.missed = e, p.missed+1
			c.h.coalesced.Add(1)
			continue
		}
		missed := c.lost[s.id]
		switch {
		case len(c.queue) < c.h.cfg.SendQueue:
			c.queue = append(c.queue, encodeEvent(s.id, e, missed))
			delete(c.lost, s.id)
		case len(c.pending) >= c.h.cfg.MaxPending:
			c.lost[s.id]++
			c.h.dropped.Add(1)
			continue
		default:
			c.pending[key] = &pendingEvent{sub: s.id, e: e, missed: missed}
			delete(c.lost, s.id)
			c.order = append(c.order, key)
		}
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// next returns the next event frames to write: queued frames first; only
// when none are queued, the coalesced ones. Taking both under one lock is
// what keeps an entity's events in version order.
func (c *conn) next() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) > 0 {
		out := c.queue
		c.queue = make([][]byte, 0, min(len(out), c.h.cfg.SendQueue))
		return out
	}
	return c.takePendingLocked()
}

// takePendingLocked removes and returns the coalesced events in arrival
// order; c.mu is held.
func (c *conn) takePendingLocked() [][]byte {
	if len(c.order) == 0 {
		return nil
	}
	out := make([][]byte, 0, len(c.order))
	for _, k := range c.order {
		if p, ok := c.pending[k]; ok {
			out = append(out, encodeEvent(p.sub, p.e, p.missed))
			delete(c.pending, k)
		}
	}
	c.order = c.order[:0]
	return out
}

func (c *conn) write(b []byte) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *conn) writer() {
	defer c.wg.Done()
	ping := time.NewTicker(c.h.cfg.PingInterval)
	defer ping.Stop()
	for {
		// Replies first, so a flood of events never delays an answer.
		select {
		case b := <-c.control:
			if c.write(b) != nil {
				c.close(websocket.CloseAbnormalClosure, "write failed")
				return
			}
			continue
		default:
		}
		select {
		case <-c.done:
			return
		case b := <-c.control:
			if c.write(b) != nil {
				c.close(websocket.CloseAbnormalClosure, "write failed")
				return
			}
		case <-c.wake:
			// Drain in order; replies may overtake events between batches.
			for batch := c.next(); len(batch) > 0; batch = c.next() {
				for _, b := range batch {
					if c.write(b) != nil {
						c.close(websocket.CloseAbnormalClosure, "write failed")
						return
					}
					c.h.sent.Add(1)
				}
				c.drainControl()
			}
		case <-ping.C:
			if c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)) != nil {
				c.close(websocket.CloseAbnormalClosure, "ping failed")
				return
			}
		}
	}
}

// drainControl writes the replies waiting, between event batches.
func (c *conn) drainControl() {
	for {
		select {
		case b := <-c.control:
			if c.write(b) != nil {
				c.close(websocket.CloseAbnormalClosure, "write failed")
				return
			}
		default:
			return
		}
	}
}

func (c *conn) reply(v any) {
	b, _ := json.Marshal(v)
	select {
	case c.control <- b:
	case <-c.done:
	}
}

type okReply struct {
	ID  json.RawMessage `json:"id"`
	OK  bool            `json:"ok"`
	Sub string          `json:"sub,omitempty"`
	// Result fields of get/patch/invoke.
	Twin    json.RawMessage `json:"twin,omitempty"`
	Status  int             `json:"status,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	// Result of call.
	Result json.RawMessage `json:"result,omitempty"`
}

type errReply struct {
	ID    json.RawMessage `json:"id"`
	OK    bool            `json:"ok"`
	Error *api.ErrorBody  `json:"error"`
}

func (c *conn) reader() {
	defer c.wg.Done()
	defer c.close(websocket.CloseNormalClosure, "")
	wait := 2*c.h.cfg.PingInterval + 5*time.Second
	c.ws.SetReadLimit(c.h.cfg.MaxFrameBytes)
	_ = c.ws.SetReadDeadline(time.Now().Add(wait))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(wait)) })
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.close(websocket.CloseMessageTooBig, "frame over "+strconv.FormatInt(c.h.cfg.MaxFrameBytes, 10)+" bytes")
			}
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(wait))
		f, err := ParseFrame(msg)
		if err != nil {
			c.reply(errReply{ID: f.ID, Error: errorOf(err)})
			if c.badFrame() {
				c.close(websocket.ClosePolicyViolation, "too many bad frames")
				return
			}
			continue
		}
		c.handle(f)
	}
}

// badFrame counts a bad frame; true when the last minute had too many.
func (c *conn) badFrame() bool {
	now := time.Now()
	kept := c.bad[:0]
	for _, t := range c.bad {
		if now.Sub(t) < time.Minute {
			kept = append(kept, t)
		}
	}
	c.bad = append(kept, now)
	return len(c.bad) > c.h.cfg.MaxBadFrames
}

func (c *conn) handle(f Frame) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch f.Op {
	case "subscribe":
		c.mu.Lock()
		if len(c.subs) >= c.h.cfg.MaxSubscriptions {
			c.mu.Unlock()
			c.reply(errReply{ID: f.ID, Error: errorOf(errcode.New(errcode.Throttled, "subscription limit of %d reached", c.h.cfg.MaxSubscriptions))})
			return
		}
		c.nextSub++
		s := &subscription{id: "s" + strconv.Itoa(c.nextSub), entity: f.Entity, subtree: f.Subtree, types: map[string]bool{}}
		for _, t := range f.Events {
			s.types[t] = true
		}
		c.subs[s.id] = s
		c.mu.Unlock()
		c.reply(okReply{ID: f.ID, OK: true, Sub: s.id})
	case "unsubscribe":
		c.mu.Lock()
		_, ok := c.subs[f.Sub]
		delete(c.subs, f.Sub)
		for k := range c.pending {
			if strings.HasPrefix(k, f.Sub+"\x00") {
				delete(c.pending, k)
			}
		}
		c.mu.Unlock()
		if !ok {
			c.reply(errReply{ID: f.ID, Error: errorOf(errcode.New(errcode.NotFound, "no subscription %s", f.Sub))})
			return
		}
		c.reply(okReply{ID: f.ID, OK: true, Sub: f.Sub})
	case "get":
		doc, err := c.h.backend.GetTwin(ctx, f.Entity)
		if err != nil {
			c.reply(errReply{ID: f.ID, Error: errorOf(err)})
			return
		}
		c.reply(okReply{ID: f.ID, OK: true, Twin: doc})
	case "patch":
		doc, err := c.h.backend.PatchDesired(ctx, f.Entity, f.Desired, f.Version)
		if err != nil {
			c.reply(errReply{ID: f.ID, Error: errorOf(err)})
			return
		}
		c.reply(okReply{ID: f.ID, OK: true, Twin: doc})
	case "invoke":
		// Answered when the device answers; the reader goes on meanwhile.
		select {
		case c.invokes <- struct{}{}:
		default:
			c.reply(errReply{ID: f.ID, Error: errorOf(errcode.New(errcode.Throttled, "too many invocations in flight"))})
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer func() { <-c.invokes }()
			timeout := time.Duration(f.TimeoutSeconds) * time.Second
			ictx, icancel := context.WithTimeout(context.Background(), timeout)
			defer icancel()
			go func() {
				select {
				case <-c.done:
					icancel()
				case <-ictx.Done():
				}
			}()
			st, resp, err := c.h.backend.Invoke(ictx, f.Entity, f.Method, f.Payload, timeout)
			if err != nil {
				c.reply(errReply{ID: f.ID, Error: errorOf(err)})
				return
			}
			c.reply(okReply{ID: f.ID, OK: true, Status: st, Payload: resp})
		}()
	case "call":
		caller, ok := c.h.backend.(Caller)
		if !ok {
			c.reply(errReply{ID: f.ID, Error: errorOf(errcode.New(errcode.UnknownOp, "this hub serves no entity operations"))})
			return
		}
		res, err := caller.Call(ctx, f.Entity, f.Name, f.Args)
		if err != nil {
			c.reply(errReply{ID: f.ID, Error: errorOf(err)})
			return
		}
		if len(res) == 0 {
			res = json.RawMessage("null")
		}
		c.reply(okReply{ID: f.ID, OK: true, Result: res})
	}
}
