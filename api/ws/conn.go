package ws

// One WebSocket connection: its writer, its reader and the frames it handles.

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/api/authz"
)

func newConn(h *Hub, ws *websocket.Conn, p authz.Principal) *conn {
	return &conn{h: h, ws: ws, p: p, subs: map[string]*subscription{},
		pending: map[string]*pendingEvent{}, lost: map[string]int64{}, control: make(chan []byte, 64),
		wake: make(chan struct{}, 1), invokes: make(chan struct{}, h.cfg.MaxInvokes), done: make(chan struct{})}
}

func (c *conn) start() {
	if !c.p.Expires.IsZero() {
		c.mu.Lock()
		c.expiry = time.AfterFunc(time.Until(c.p.Expires), func() {
			c.close(websocket.ClosePolicyViolation, "token expired")
		})
		c.mu.Unlock()
	}
	c.wg.Add(2)
	go c.writer()
	go c.reader()
}

func (c *conn) close(code int, reason string) {
	c.once.Do(func() {
		c.mu.Lock()
		if c.expiry != nil {
			c.expiry.Stop()
		}
		c.mu.Unlock()
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
	b, _ := api.Marshal(eventFrame{Sub: sub, Type: e.Type, Entity: e.Entity, Version: e.Version, Data: e.Data, TS: e.TS, Missed: missed})
	return b
}

// offer queues an event for every matching subscription without blocking.
// Events of entities outside the token's scope never reach it.
func (c *conn) offer(e Event, anc func() []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.subs) == 0 || (!c.p.Whole() && !authz.InScopeOf(c.p, e.Entity, anc())) {
		return
	}
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
	b, _ := api.Marshal(v)
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

// opNeeds is what each op requires of the connection's token, the
// WebSocket side of the REST route table (api/routes.go); every op but
// unsubscribe also needs its entity in the token's scope.
var opNeeds = map[string]authz.Need{
	"subscribe":   {Role: authz.Viewer},
	"unsubscribe": {Role: authz.Viewer},
	"get":         {Role: authz.Viewer},
	"patch":       {Role: authz.Operator},
	"invoke":      {Role: authz.Operator},
	"call":        {Role: authz.Operator},
}

// authorize checks a frame against opNeeds; a token that stopped working
// closes the connection.
func (c *conn) authorize(ctx context.Context, f Frame) error {
	if !c.h.cfg.Authz.Valid(c.p) {
		c.close(websocket.ClosePolicyViolation, "token revoked")
		return errcode.New(errcode.Unauthorized, "the token was revoked or has expired")
	}
	need, ok := opNeeds[f.Op]
	if !ok {
		return errcode.New(errcode.Forbidden, "op %q is not allowed", f.Op)
	}
	if f.Op == "subscribe" && (f.Entity == JobsEntity || strings.HasPrefix(f.Entity, JobsEntity+"/")) {
		// Jobs are cluster-wide, as their REST routes: an admin of the
		// whole tree only; they name no entity to check the scope of.
		return c.h.cfg.Authz.Allow(c.p, authz.Need{Role: authz.Admin, Whole: true})
	}
	var ents []string
	if f.Op != "unsubscribe" {
		ents = append(ents, f.Entity)
	}
	return c.h.cfg.Authz.Check(ctx, c.p, need, ents...)
}

func (c *conn) handle(f Frame) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.authorize(ctx, f); err != nil {
		c.reply(errReply{ID: f.ID, Error: errorOf(err)})
		return
	}
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
		if ic := c.h.cfg.InterestChanged; ic != nil {
			ic(ctx)
		}
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
