package streams

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
)

// ConnectPath is the path prefix devices connect back to, followed by the
// stream's ID.
const ConnectPath = "/api/v1/streams/"

// Broker opens device streams and relays them. It is safe for concurrent
// use; Close ends every stream.
type Broker struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	upgrader websocket.Upgrader

	mu        sync.Mutex
	closed    bool
	pending   map[string]*pending // by stream ID, until the device connects back
	active    map[*relay]struct{}
	perDevice map[string]int // streams open or opening, by device
	total     int
	wg        sync.WaitGroup // relays running
}

// pending is a stream waiting for its device to connect back.
type pending struct {
	device  string
	token   [sha256.Size]byte // of the one-time token: the token itself is not kept
	expires time.Time
	conn    chan *websocket.Conn // capacity 1: the device's connection, or nil if its upgrade failed
}

// New builds a Broker.
func New(cfg Config) (*Broker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Broker{
		cfg: cfg, log: cfg.Logger.With("component", "streams"), m: newMetrics(cfg.Registerer),
		// Both sides are authenticated (a bearer token, a one-time
		// token) rather than trusted by origin: service clients are not
		// browsers, and devices send no Origin.
		upgrader: websocket.Upgrader{ReadBufferSize: cfg.ChunkSize, WriteBufferSize: cfg.ChunkSize,
			CheckOrigin: func(*http.Request) bool { return true }},
		pending: map[string]*pending{}, active: map[*relay]struct{}{}, perDevice: map[string]int{},
	}, nil
}

// Open serves a service's stream request, GET
// /api/v1/devices/{device}/streams/{name}; the caller has authorized who
// (the principal's name, for the log), and valid reports whether who's
// token still works (nil: always; see Revalidate). It returns an error
// (the caller writes it) only before the service's WebSocket is upgraded;
// after, it relays until the stream ends and returns nil.
func (b *Broker) Open(w http.ResponseWriter, r *http.Request, device, name, who string, valid func() bool) error {
	if name == "" || len(name) > 128 || strings.ContainsAny(name, "/+#?") {
		b.m.streams.WithLabelValues("bad_request").Inc()
		return errcode.New(errcode.BadRequest, "stream name %q: 1 to 128 characters, none of / + # ?", name)
	}
	if !websocket.IsWebSocketUpgrade(r) {
		b.m.streams.WithLabelValues("bad_request").Inc()
		return errcode.New(errcode.BadRequest, "a device stream is a WebSocket: send an upgrade request")
	}
	if err := b.reserve(device); err != nil {
		b.refused(device, name, who, "limit", err)
		return err
	}
	opened := false
	defer func() {
		if !opened {
			b.release(device)
		}
	}()
	id, token, p, err := b.register(device)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), b.cfg.AcceptTimeout)
	defer cancel()
	url := b.baseURL(r) + ConnectPath + id
	status, err := b.cfg.Signaller.RequestStream(ctx, device, name, url, token)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("device %s refused stream %s with status %d: %w", device, name, status, ErrRefused)
	}
	var dev *websocket.Conn
	if err == nil {
		dev, err = b.connectBack(ctx, id, p)
	}
	if err != nil {
		b.drop(id)
		if errcode.Of(err) == errcode.Internal && ctx.Err() != nil {
			err = errcode.New(errcode.Timeout, "device %s did not answer stream request %s in time", device, name)
		}
		b.refused(device, name, who, resultOf(err), err)
		return err
	}
	svc, err := b.upgrader.Upgrade(w, r, nil)
	if err != nil {
		_ = dev.Close()
		b.refused(device, name, who, "failed", err) // Upgrade wrote the answer
		return nil
	}
	opened = true
	b.run(&relay{id: id, device: device, name: name, who: who, valid: valid, svc: svc, dev: dev})
	return nil
}

// connectBack waits for the device's connection to stream id.
func (b *Broker) connectBack(ctx context.Context, id string, p *pending) (*websocket.Conn, error) {
	select {
	case c := <-p.conn:
		if c == nil {
			return nil, errcode.New(errcode.Unavailable, "the device's connection to stream %s failed", id)
		}
		return c, nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	_, waiting := b.pending[id]
	delete(b.pending, id)
	b.mu.Unlock()
	if !waiting {
		// Accept took it just now: its connection is on the way.
		if c := <-p.conn; c != nil {
			return c, nil
		}
	}
	return nil, ErrNoConnectBack
}

// Accept serves a device's connection back to stream id, GET
// /api/v1/streams/{id}, authenticated by the stream's one-time token
// (Authorization: Bearer, or the access_token query parameter). It returns
// an error (the caller writes it) only before the upgrade.
func (b *Broker) Accept(w http.ResponseWriter, r *http.Request, id string) error {
	token := bearer(r)
	sum := sha256.Sum256([]byte(token))
	b.mu.Lock()
	p := b.pending[id]
	switch {
	case p == nil || token == "" || subtle.ConstantTimeCompare(sum[:], p.token[:]) != 1:
		b.mu.Unlock()
		return fmt.Errorf("stream %s: %w", id, ErrToken)
	case !b.cfg.Now().Before(p.expires):
		b.mu.Unlock()
		return fmt.Errorf("stream %s: the token expired: %w", id, ErrToken)
	}
	delete(b.pending, id) // single use
	b.mu.Unlock()
	c, err := b.upgrader.Upgrade(w, r, nil)
	if err != nil {
		c = nil // Upgrade wrote the answer
	}
	p.conn <- c
	return nil
}

func bearer(r *http.Request) string {
	if scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(cred)
	}
	return r.URL.Query().Get("access_token")
}

func (b *Broker) baseURL(r *http.Request) string {
	if b.cfg.URL != "" {
		return strings.TrimSuffix(b.cfg.URL, "/")
	}
	if r.TLS != nil {
		return "wss://" + r.Host
	}
	return "ws://" + r.Host
}

// reserve takes a slot for a stream to device.
func (b *Broker) reserve(device string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.perDevice[device] >= b.cfg.MaxPerDevice:
		return fmt.Errorf("device %s has %d streams open or opening, the most allowed: %w", device, b.cfg.MaxPerDevice, ErrLimit)
	case b.total >= b.cfg.MaxPerNode:
		return fmt.Errorf("this node has %d streams open or opening, the most allowed: %w", b.cfg.MaxPerNode, ErrLimit)
	}
	b.perDevice[device]++
	b.total++
	return nil
}

func (b *Broker) release(device string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.perDevice[device]--; b.perDevice[device] <= 0 {
		delete(b.perDevice, device)
	}
	b.total--
}

// register creates a pending stream with a fresh ID and one-time token.
func (b *Broker) register(device string) (id, token string, p *pending, err error) {
	var raw [16 + 32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", nil, err
	}
	id = hex.EncodeToString(raw[:16])
	token = base64.RawURLEncoding.EncodeToString(raw[16:])
	p = &pending{device: device, token: sha256.Sum256([]byte(token)), expires: b.cfg.Now().Add(b.cfg.TokenTTL),
		conn: make(chan *websocket.Conn, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return "", "", nil, ErrClosed
	}
	b.pending[id] = p
	return id, token, p, nil
}

func (b *Broker) drop(id string) {
	b.mu.Lock()
	delete(b.pending, id)
	b.mu.Unlock()
}

func resultOf(err error) string {
	switch errcode.Of(err) {
	case errcode.NotConnected:
		return "not_connected"
	case errcode.Forbidden:
		return "refused"
	case errcode.Timeout:
		return "timeout"
	case errcode.BadRequest:
		return "bad_request"
	}
	return "failed"
}

func (b *Broker) refused(device, name, who, result string, err error) {
	b.m.streams.WithLabelValues(result).Inc()
	b.log.Info("stream not opened", "device", device, "name", name, "who", who, "result", result, "err", err)
}

// HandleEvent ends the streams of a device that was disabled or deleted.
// It is an actors.EventSink: it does not block.
func (b *Broker) HandleEvent(ev actors.Event) {
	why := ""
	switch ev.Type {
	case actors.EventIdentity:
		var st struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(ev.Data, &st) == nil && st.Status == "disabled" {
			why = "device disabled"
		}
	case actors.EventTopology:
		var t struct {
			Deleted bool `json:"deleted"`
		}
		if json.Unmarshal(ev.Data, &t) == nil && t.Deleted {
			why = "device deleted"
		}
	}
	if why == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for r := range b.active {
		if r.device == ev.Entity {
			r.stop(why)
		}
	}
}

// Revalidate closes the streams whose caller's token no longer works
// (revoked, expired). Call it when tokens change; it does not block on IO
// as long as the valid functions given to Open do not.
func (b *Broker) Revalidate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for r := range b.active {
		if r.valid != nil && !r.valid() {
			r.stop("token revoked")
		}
	}
}

// Close ends every stream and refuses new ones; it returns once the
// relays have stopped.
func (b *Broker) Close() {
	b.mu.Lock()
	b.closed = true
	for r := range b.active {
		r.stop("node stopping")
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// run relays r until it ends, then logs and counts it.
func (b *Broker) run(r *relay) {
	r.init(b.cfg)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		r.stop("node stopping")
	} else {
		b.active[r] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		defer b.wg.Done()
	}
	b.m.streams.WithLabelValues("opened").Inc()
	b.m.active.Inc()
	b.log.Info("stream opened", "stream", r.id, "device", r.device, "name", r.name, "who", r.who)
	started := b.cfg.Now()
	r.relay(b.m)
	b.m.active.Dec()
	b.mu.Lock()
	delete(b.active, r)
	b.mu.Unlock()
	b.release(r.device)
	b.log.Info("stream closed", "stream", r.id, "device", r.device, "name", r.name, "who", r.who,
		"bytes_to_device", r.up.Load(), "bytes_to_service", r.down.Load(),
		"duration", b.cfg.Now().Sub(started).Round(time.Millisecond), "reason", r.why())
}
