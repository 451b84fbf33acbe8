package coap

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// observer is one observation (RFC 7641) of a device's desired properties
// or inbox, by an endpoint and token.
type observer struct {
	ep     *endpoint
	token  message.Token
	target Target
	client principal // who registered it

	mu      sync.Mutex
	seq     uint32 // the last sequence number sent (24 bits)
	etag    []byte // of the last representation sent
	at      time.Time
	dirty   bool // a change to notify
	refresh bool // notify even if unchanged
	running bool // a goroutine is notifying
	closed  bool
	// inFlight is the confirmable notification awaiting its
	// acknowledgement, if any: a change meanwhile supersedes it.
	inFlight *transmission
	// unacked is when the first notification not acknowledged since was
	// sent (zero when all were): its retransmission window bounds the
	// notifications that supersede it, so an observer that stopped
	// acknowledging is still dropped after MAX_TRANSMIT_WAIT.
	unacked time.Time
}

// transmission is one confirmable notification being sent.
type transmission struct {
	start  time.Time
	cancel context.CancelCauseFunc // with errSuperseded, of the parent of…
	stop   context.CancelFunc      // …the context bounded by the retransmission window
	timer  *time.Timer             // supersedes it at start+AckTimeout; nil until armed
}

// errSuperseded ends the transmission of a notification whose
// representation changed before it was acknowledged (RFC 7641 section
// 4.5.2): the new representation is sent in its place.
var errSuperseded = errors.New("coap: notification superseded by a newer one")

// sent records a representation sent at now and returns the sequence
// number to send it with.
func (o *observer) sent(etag []byte, now time.Time) uint32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq = (o.seq + 1) & 0xffffff
	o.etag, o.at = etag, now
	return o.seq
}

type obsKey struct {
	cc    *udpclient.Conn
	token string
}

// observers is the registry of observations, by endpoint and token, by
// device, by endpoint and by the device that registered them.
type observers struct {
	mu       sync.Mutex
	byKey    map[obsKey]*observer
	byDevice map[string]map[*observer]struct{}
	byConn   map[*udpclient.Conn]map[*observer]struct{}
	byClient map[string]map[*observer]struct{}
}

func newObservers() *observers {
	return &observers{byKey: map[obsKey]*observer{}, byDevice: map[string]map[*observer]struct{}{},
		byConn: map[*udpclient.Conn]map[*observer]struct{}{}, byClient: map[string]map[*observer]struct{}{}}
}

func addTo[K comparable](m map[K]map[*observer]struct{}, k K, o *observer) {
	set := m[k]
	if set == nil {
		set = map[*observer]struct{}{}
		m[k] = set
	}
	set[o] = struct{}{}
}

func removeFrom[K comparable](m map[K]map[*observer]struct{}, k K, o *observer) {
	if set := m[k]; set != nil {
		delete(set, o)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

func list(set map[*observer]struct{}) []*observer {
	out := make([]*observer, 0, len(set))
	for o := range set {
		out = append(out, o)
	}
	return out
}

// add registers o, replacing the observation of the same endpoint and
// token (RFC 7641 section 4.1), unless a cap is reached.
func (os *observers) add(o *observer, maxAll, maxDevice int) (replaced *observer, ok bool) {
	os.mu.Lock()
	defer os.mu.Unlock()
	k := obsKey{o.ep.cc, string(o.token)}
	if old := os.byKey[k]; old != nil {
		os.removeLocked(old)
		replaced = old
	}
	if len(os.byKey) >= maxAll || len(os.byDevice[o.target.Device]) >= maxDevice {
		return replaced, false
	}
	os.byKey[k] = o
	addTo(os.byDevice, o.target.Device, o)
	addTo(os.byConn, o.ep.cc, o)
	addTo(os.byClient, o.client.device, o)
	return replaced, true
}

// remove unregisters o; false if it was not registered.
func (os *observers) remove(o *observer) bool {
	os.mu.Lock()
	defer os.mu.Unlock()
	if os.byKey[obsKey{o.ep.cc, string(o.token)}] != o {
		return false
	}
	os.removeLocked(o)
	return true
}

func (os *observers) removeLocked(o *observer) {
	delete(os.byKey, obsKey{o.ep.cc, string(o.token)})
	removeFrom(os.byDevice, o.target.Device, o)
	removeFrom(os.byConn, o.ep.cc, o)
	removeFrom(os.byClient, o.client.device, o)
}

func (os *observers) get(cc *udpclient.Conn, token message.Token) *observer {
	os.mu.Lock()
	defer os.mu.Unlock()
	return os.byKey[obsKey{cc, string(token)}]
}

func (os *observers) ofDevice(device string) []*observer {
	os.mu.Lock()
	defer os.mu.Unlock()
	return list(os.byDevice[device])
}

func (os *observers) ofConn(cc *udpclient.Conn) []*observer {
	os.mu.Lock()
	defer os.mu.Unlock()
	return list(os.byConn[cc])
}

func (os *observers) ofClient(device string) []*observer {
	os.mu.Lock()
	defer os.mu.Unlock()
	return list(os.byClient[device])
}

func (os *observers) hasConn(cc *udpclient.Conn) bool {
	os.mu.Lock()
	defer os.mu.Unlock()
	return len(os.byConn[cc]) > 0
}

func (os *observers) all() []*observer {
	os.mu.Lock()
	defer os.mu.Unlock()
	out := make([]*observer, 0, len(os.byKey))
	for _, o := range os.byKey {
		out = append(out, o)
	}
	return out
}

func (os *observers) len() int {
	os.mu.Lock()
	defer os.mu.Unlock()
	return len(os.byKey)
}

// register adds an observation for the request; nil when a cap is
// reached (the request is then answered without the Observe option).
func (s *Server) register(q *request) *observer {
	o := &observer{ep: q.ep, token: append(message.Token(nil), q.r.Token()...), target: q.t, client: q.p}
	replaced, ok := s.obs.add(o, s.cfg.MaxObservers, s.cfg.MaxObserversPerDevice)
	if replaced != nil {
		s.closeObserver(replaced)
		s.pres.addObs(replaced.client.device, replaced.client.proto, -1)
	}
	if !ok {
		s.m.observersRefused.Inc()
		return nil
	}
	s.m.registrations.Inc()
	s.pres.addObs(o.client.device, o.client.proto, 1)
	return o
}

// deregister ends the observation of cc and token (a GET with Observe 1).
func (s *Server) deregister(cc *udpclient.Conn, token message.Token) {
	if o := s.obs.get(cc, token); o != nil {
		s.dropObserver(o, "deregistered")
	}
}

// cancellation returns the observation a GET with Observe 1 from ep
// cancels, or nil.
func (s *Server) cancellation(ep *endpoint, r *pool.Message) *observer {
	if v, err := r.Observe(); err != nil || v != 1 || r.Code() != codes.GET {
		return nil
	}
	return s.obs.get(ep.cc, r.Token())
}

// dropObserver ends an observation; reason labels the metric.
func (s *Server) dropObserver(o *observer, reason string) {
	if !s.obs.remove(o) {
		return
	}
	s.closeObserver(o)
	s.m.observersDropped.WithLabelValues(reason).Inc()
	s.pres.addObs(o.client.device, o.client.proto, -1)
}

func (s *Server) closeObserver(o *observer) {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

// pokeDevice notifies the observers of a device's resource res that it
// may have changed.
func (s *Server) pokeDevice(device string, res Resource) {
	for _, o := range s.obs.ofDevice(device) {
		if o.target.Resource == res {
			s.poke(o, false)
		}
	}
}

// poke schedules a notification of o: one goroutine per observer at most,
// notifying until nothing is left to notify.
func (s *Server) poke(o *observer, refresh bool) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.dirty = true
	o.refresh = o.refresh || refresh
	if !refresh {
		s.supersede(o)
	}
	if o.running {
		o.mu.Unlock()
		return
	}
	o.running = true
	o.mu.Unlock()
	started := s.spawn(func() {
		for {
			o.mu.Lock()
			if !o.dirty || o.closed {
				o.running = false
				o.mu.Unlock()
				return
			}
			refresh := o.refresh
			o.dirty, o.refresh = false, false
			o.mu.Unlock()
			select {
			case <-s.stop:
				o.mu.Lock()
				o.running = false
				o.mu.Unlock()
				return
			default:
			}
			s.notify(o, refresh)
		}
	})
	if !started {
		o.mu.Lock()
		o.running = false
		o.mu.Unlock()
	}
}

// supersede arranges for the notification o has in flight, if any, to
// give way to a newer one (RFC 7641 section 4.5.2): a notification that
// waited for its acknowledgement through all its retransmissions (about
// 93 s) would hold back every change meanwhile, and a client that lost
// the acknowledgement of a block-wise notification, or is busy fetching
// its blocks, would get the last change late or never. It gives way when
// its first transmission had its acknowledgement timeout, as a
// retransmission would, so that a client that acknowledges gets each
// representation and a flood of changes is not a flood of datagrams.
// o.mu is held.
func (s *Server) supersede(o *observer) {
	t := o.inFlight
	if t == nil || t.timer != nil {
		return
	}
	cancel := t.cancel
	t.timer = time.AfterFunc(max(time.Until(t.start.Add(s.cfg.AckTimeout)), 0), func() { cancel(errSuperseded) })
}

// notify sends o the current representation as a confirmable
// notification, if it changed since the last one or refresh is set. An
// observer that does not acknowledge it (after the retransmissions), or
// answers it with a Reset, is dropped; one that a change superseded is
// sent the new representation by the caller's next round.
func (s *Server) notify(o *observer, refresh bool) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	body, etag, err := s.representation(ctx, o.target)
	cancel()
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			s.final(o, err) // the device is gone
			return
		}
		s.log.Debug("notification not built", "device", o.target.Device, "err", err)
		return
	}
	o.mu.Lock()
	same := bytes.Equal(etag, o.etag)
	o.mu.Unlock()
	if same && !refresh {
		return
	}
	seq := o.sent(etag, s.cfg.Now())
	cc := o.ep.cc
	ctx, t := s.transmit(o)
	defer s.transmitted(o, t)
	m := cc.AcquireMessage(ctx)
	defer cc.ReleaseMessage(m)
	m.SetCode(codes.Content)
	m.SetToken(o.token)
	m.SetType(message.Confirmable)
	m.SetObserve(seq)
	m.SetOptionUint32(message.MaxAge, s.maxAge())
	_ = m.SetETag(etag)
	if len(body) > 0 {
		m.SetContentFormat(message.AppJSON)
		m.SetBody(bytes.NewReader(body))
	}
	ep := o.ep
	ep.sendMu.Lock()
	s.mu.Lock()
	ep.sending, ep.reset = true, false
	s.mu.Unlock()
	err = cc.WriteMessage(m)
	s.mu.Lock()
	reset := ep.reset
	ep.sending, ep.reset = false, false
	s.mu.Unlock()
	ep.sendMu.Unlock()
	switch {
	case err != nil && errors.Is(context.Cause(ctx), errSuperseded):
		// Not acknowledged yet: whatever the next round finds is sent,
		// even the same representation.
		o.mu.Lock()
		o.etag = nil
		o.mu.Unlock()
		s.m.notificationsSuperseded.Inc()
	case err != nil:
		s.dropObserver(o, "no_ack")
		s.log.Debug("observer dropped: notification not acknowledged", "device", o.target.Device, "err", err)
	case reset:
		s.dropObserver(o, "reset")
	default:
		o.mu.Lock()
		o.unacked = time.Time{}
		o.mu.Unlock()
		s.m.notifications.Inc()
	}
}

// transmit starts the transmission of a notification of o: its context
// ends when the notification is superseded, or when the retransmission
// window of the first notification not acknowledged since has passed.
// A change already waiting arms the superseding at once.
func (s *Server) transmit(o *observer) (context.Context, *transmission) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.unacked.IsZero() {
		o.unacked = now
	}
	parent, cancel := context.WithCancelCause(context.Background())
	ctx, stop := context.WithDeadline(parent, o.unacked.Add(s.cfg.maxTransmitWait()+2*tick))
	t := &transmission{start: now, cancel: cancel, stop: stop}
	o.inFlight = t
	if o.dirty && !o.refresh {
		s.supersede(o)
	}
	return ctx, t
}

// transmitted ends the transmission t of a notification of o.
func (s *Server) transmitted(o *observer, t *transmission) {
	o.mu.Lock()
	if o.inFlight == t {
		o.inFlight = nil
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	o.mu.Unlock()
	t.stop()
	t.cancel(context.Canceled)
}

// final sends o a last, non-confirmable notification with err's code
// (4.04 for a deleted device, 4.01 for an expired token), which ends the
// observation at the client (RFC 7641 section 3.2), and drops o.
func (s *Server) final(o *observer, err error) {
	s.dropObserver(o, refusalReason(err))
	cc := o.ep.cc
	m := cc.AcquireMessage(context.Background())
	defer cc.ReleaseMessage(m)
	m.SetCode(codeOf(err))
	m.SetToken(o.token)
	m.SetType(message.NonConfirmable)
	m.SetBody(bytes.NewReader(diagnostic(err, maxDiagnostic)))
	_ = cc.WriteMessage(m)
}

// refreshObservers checks every observer a few times per ObserveRefresh:
// one whose SAS token expired gets a final 4.01 and is dropped, one that
// heard nothing for ObserveRefresh gets the current representation again
// (which tells whether it is still there).
func (s *Server) refreshObservers() {
	defer s.wg.Done()
	every := min(max(s.cfg.ObserveRefresh/4, 100*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := s.cfg.Now()
		for _, o := range s.obs.all() {
			if !o.client.until.IsZero() && !now.Before(o.client.until) {
				s.final(o, errcode.Wrap(errcode.Unauthorized, errExpired))
				continue
			}
			o.mu.Lock()
			stale := now.Sub(o.at) >= s.cfg.ObserveRefresh
			o.mu.Unlock()
			if stale {
				s.poke(o, true)
			}
		}
	}
}

// envelope is the representation of a cloud-to-device message:
// {"messageId":…,"payload":…,"properties":{…}}. A payload that is JSON is
// embedded as is, UTF-8 text as a string, anything else base64-encoded in
// "payloadBase64".
func envelope(m Message) []byte {
	type env struct {
		MessageID     string            `json:"messageId"`
		Payload       json.RawMessage   `json:"payload,omitempty"`
		PayloadBase64 string            `json:"payloadBase64,omitempty"`
		Properties    map[string]string `json:"properties,omitempty"`
	}
	e := env{MessageID: m.ID, Properties: m.Properties}
	switch {
	case len(m.Payload) > 0 && json.Valid(m.Payload):
		e.Payload = m.Payload
	case utf8.Valid(m.Payload):
		e.Payload, _ = json.Marshal(string(m.Payload))
	default:
		e.PayloadBase64 = base64.StdEncoding.EncodeToString(m.Payload)
	}
	b, _ := json.Marshal(e)
	return b
}
