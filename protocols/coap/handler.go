package coap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

type writer = responsewriter.ResponseWriter[*udpclient.Conn]

// request is one request being answered.
type request struct {
	s   *Server
	w   *writer
	r   *pool.Message
	ep  *endpoint
	t   Target
	ctx context.Context
	// who sent it, once authenticated
	p principal
}

// handle answers every request of both listeners. go-coap calls it once
// per exchange: a retransmission of a confirmable request (same message ID
// from the same endpoint) is answered from its exchange cache, or dropped
// while the first copy is still being handled, so nothing here runs twice
// for one exchange. A confirmable request is answered when handle returns,
// i.e. after the backend made the change durable.
func (s *Server) handle(w *writer, r *pool.Message) {
	if r.Code() < codes.GET || r.Code() > codes.IPATCH {
		return // not a request: empty messages, responses
	}
	ep := s.endpointOf(w.Conn())
	if ep == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	q := &request{s: s, w: w, r: r, ep: ep, ctx: ctx}
	t, err := ParsePath(pathOf(r))
	if err != nil {
		q.fail(err, false)
		return
	}
	q.t = t
	if q.p, err = s.authenticate(ctx, r, ep); err != nil {
		o := s.cancellation(ep, r)
		if o == nil {
			q.fail(err, false)
			return
		}
		// A deregistration (GET with Observe 1) from the endpoint and
		// token of an observation is authenticated by it: clients send
		// it without the query of the registration.
		q.p = o.client
	}
	s.mu.Lock()
	ep.authed = true
	s.mu.Unlock()
	if err := s.authorize(ctx, q.p, t); err != nil {
		q.fail(err, true)
		return
	}
	if !allowed(t.Resource, r.Code()) {
		q.failWith(errcode.New(errcode.BadRequest, "%v is not allowed on %v", r.Code(), t.Resource), true, codes.MethodNotAllowed)
		return
	}
	now := s.cfg.Now()
	if ok, wait := s.cfg.Rate.Take(q.p.device, now); !ok {
		secs := uint32(math.Ceil(wait.Seconds()))
		q.failWith(errcode.New(errcode.Throttled, "over %g messages per second", s.cfg.Rate.Rate()), true, codes.TooManyRequests,
			message.Option{ID: message.MaxAge, Value: uintBytes(max(secs, 1))})
		return
	}
	s.pres.touch(q.p.device, q.p.proto, now)
	switch t.Resource {
	case ResourceTelemetry:
		q.telemetry(now)
	case ResourceTwin, ResourceDesired, ResourceInbox:
		if r.Code() == codes.GET {
			q.get()
		}
	case ResourceReported:
		q.patchReported()
	case ResourceMessage:
		q.complete()
	}
}

// allowed reports whether a method applies to a resource.
func allowed(res Resource, c codes.Code) bool {
	switch res {
	case ResourceTelemetry:
		return c == codes.POST
	case ResourceTwin, ResourceDesired, ResourceInbox:
		return c == codes.GET
	case ResourceReported:
		return c == codes.PATCH || c == codes.IPATCH || c == codes.POST
	case ResourceMessage:
		return c == codes.DELETE
	}
	return false
}

// pathOf returns the Uri-Path segments of r.
func pathOf(r *pool.Message) []string {
	var segs []string
	for _, o := range r.Options() {
		if o.ID == message.URIPath {
			segs = append(segs, string(o.Value))
		}
	}
	return segs
}

// queryOf returns the Uri-Query options of r.
func queryOf(r *pool.Message) []string {
	var qs []string
	for _, o := range r.Options() {
		if o.ID == message.URIQuery {
			qs = append(qs, string(o.Value))
		}
	}
	return qs
}

// body reads the request payload, refusing one over MaxPayload.
func (q *request) body() ([]byte, bool) {
	if size, err := q.r.BodySize(); err == nil && size > int64(q.s.cfg.MaxPayload) {
		q.failWith(errcode.New(errcode.TooLarge, "payload of %d bytes, the limit is %d", size, q.s.cfg.MaxPayload), true,
			codes.RequestEntityTooLarge, message.Option{ID: message.Size1, Value: uintBytes(uint32(q.s.cfg.MaxPayload))})
		return nil, false
	}
	if q.r.Body() == nil {
		return nil, true
	}
	b, err := q.r.ReadBody()
	if err != nil {
		q.fail(errcode.New(errcode.BadRequest, "read payload: %v", err), true)
		return nil, false
	}
	return b, true
}

// telemetry stores a message: a confirmable one before the answer, a
// non-confirmable one through the bounded queue (best effort, as MQTT
// QoS 0; a full queue is answered 5.03 and counted).
func (q *request) telemetry(now time.Time) {
	b, ok := q.body()
	if !ok {
		return
	}
	m := Telemetry{TS: now.UTC(), Payload: b, ContentType: contentType(q.r), Confirmable: q.r.Type() == message.Confirmable}
	if !m.Confirmable {
		select {
		case q.s.non <- nonItem{device: q.t.Device, m: m}:
			q.reply(codes.Changed, nil, 0)
		default:
			q.s.m.nonDropped.Inc()
			q.fail(errcode.New(errcode.Unavailable, "queue of non-confirmable telemetry full"), true)
		}
		return
	}
	if err := q.s.storeTelemetry(q.t.Device, m); err != nil {
		q.fail(err, true)
		return
	}
	q.reply(codes.Changed, nil, 0)
}

// get answers a GET of the twin, desired properties or the inbox, and
// registers or removes an observation (RFC 7641) of the latter two.
func (q *request) get() {
	obs, err := q.r.Observe()
	observe := err == nil && obs == 0 && q.t.Resource != ResourceTwin
	if err == nil && obs == 1 {
		q.s.deregister(q.ep.cc, q.r.Token())
	}
	var o *observer
	if observe {
		// Registered before the representation is read: a change after
		// the read is notified.
		o = q.s.register(q)
	}
	body, etag, err := q.s.representation(q.ctx, q.t)
	if err != nil {
		if o != nil {
			q.s.dropObserver(o, "failed")
		}
		q.fail(err, true)
		return
	}
	var opts []message.Option
	if o != nil {
		seq := o.sent(etag, q.s.cfg.Now())
		opts = append(opts, message.Option{ID: message.Observe, Value: uintBytes(seq)},
			message.Option{ID: message.MaxAge, Value: uintBytes(q.s.maxAge())})
	}
	if etag != nil {
		opts = append(opts, message.Option{ID: message.ETag, Value: etag})
	}
	q.reply(codes.Content, body, message.AppJSON, opts...)
}

// representation is the current state of a resource and its entity tag:
// the twin, the desired properties, or the oldest pending message (an
// empty body when none is pending).
func (s *Server) representation(ctx context.Context, t Target) ([]byte, []byte, error) {
	var body []byte
	switch t.Resource {
	case ResourceTwin, ResourceDesired:
		desired, reported, err := s.backend.GetTwin(ctx, t.Device)
		if err != nil {
			return nil, nil, err
		}
		if t.Resource == ResourceTwin {
			body, _ = json.Marshal(map[string]json.RawMessage{"desired": desired, "reported": reported})
		} else {
			body = desired
		}
	case ResourceInbox:
		msgs, err := s.backend.PendingMessages(ctx, t.Device)
		if err != nil {
			return nil, nil, err
		}
		if len(msgs) > 0 {
			body = envelope(msgs[0])
		}
	default:
		return nil, nil, errcode.New(errcode.NotFound, "no representation of %v", t.Resource)
	}
	sum := sha256.Sum256(body)
	return body, sum[:8], nil
}

// patchReported applies a merge patch to the reported properties and
// answers 2.04 with {"$version":n}.
func (q *request) patchReported() {
	b, ok := q.body()
	if !ok {
		return
	}
	v, err := q.s.backend.PatchReported(q.ctx, q.t.Device, b)
	if err != nil {
		q.fail(err, true)
		return
	}
	out, _ := json.Marshal(map[string]int64{"$version": v})
	q.reply(codes.Changed, out, message.AppJSON)
}

// complete acknowledges a cloud-to-device message; the device's inbox
// observers then get the next pending one.
func (q *request) complete() {
	if err := q.s.backend.CompleteMessage(q.ctx, q.t.Device, q.t.MessageID); err != nil {
		q.fail(err, true)
		return
	}
	q.s.pokeDevice(q.t.Device, ResourceInbox)
	q.reply(codes.Deleted, nil, 0)
}

// reply sets the response; an empty body has no Content-Format.
func (q *request) reply(code codes.Code, body []byte, cf message.MediaType, opts ...message.Option) {
	q.s.m.requests.WithLabelValues(q.t.Resource.String(), codeString(uint16(code))).Inc()
	if len(body) == 0 {
		_ = q.w.SetResponse(code, 0, nil, opts...)
		return
	}
	_ = q.w.SetResponse(code, cf, bytes.NewReader(body), opts...)
}

// fail answers with err's code and a diagnostic payload.
func (q *request) fail(err error, authenticated bool) {
	q.failWith(err, authenticated, codeOf(err))
}

// failWith answers with code, opts and err's diagnostic. An
// unauthenticated request is never answered with more bytes than it
// carried (an amplification check: a spoofed source address must not
// turn the node into an amplifier), so its diagnostic is shortened or
// left out.
func (q *request) failWith(err error, authenticated bool, c codes.Code, opts ...message.Option) {
	q.s.m.requests.WithLabelValues(q.t.Resource.String(), codeString(uint16(c))).Inc()
	reason := refusalReason(err)
	q.s.m.refused.WithLabelValues(reason).Inc()
	if q.s.refusals.allow(q.p.device+"\x00"+reason, time.Now()) {
		q.s.log.Info("request refused", "device", q.p.device, "path", q.t.Device, "code", codeString(uint16(c)),
			"reason", reason, "err", err, "remote", q.ep.cc.RemoteAddr().String())
	}
	if q.w.SetResponse(c, 0, nil, opts...) != nil {
		return // the request's No-Response option suppresses it
	}
	limit := maxDiagnostic
	if !authenticated {
		limit = q.budget()
	}
	diag := diagnostic(err, limit)
	if len(diag) < len(diagnostic(err, maxDiagnostic)) {
		q.s.m.amplification.Inc()
	}
	if len(diag) > 0 {
		q.w.Message().SetBody(bytes.NewReader(diag))
	}
}

// budget is how many payload bytes the response to an unauthenticated
// request may carry: the request's size, less the response's header,
// token and options, less the payload marker.
func (q *request) budget() int {
	req := message.Message{Token: q.r.Token(), Code: q.r.Code(), Options: q.r.Options(), Type: message.Confirmable}
	reqSize, err := coder.DefaultCoder.Size(req)
	if err != nil {
		return 0
	}
	if n, err := q.r.BodySize(); err == nil && n > 0 {
		reqSize += 1 + int(n)
	}
	res := q.w.Message()
	head, err := coder.DefaultCoder.Size(message.Message{Token: res.Token(), Code: res.Code(), Options: res.Options(), Type: message.Acknowledgement})
	if err != nil {
		return 0
	}
	return reqSize - head - 1
}

// refusalReason names a refusal for metrics and logs.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, errExpired):
		return "expired_token"
	case errors.Is(err, errNoToken):
		return "no_token"
	}
	return errcode.Of(err).PublicCode().String()
}

// contentType is the media type of r's Content-Format, "" when absent.
func contentType(r *pool.Message) string {
	cf, err := r.ContentFormat()
	if err != nil {
		return ""
	}
	switch cf {
	case message.AppJSON:
		return "application/json"
	case message.TextPlain:
		return "text/plain;charset=utf-8"
	case message.AppCBOR:
		return "application/cbor"
	case message.AppOctets:
		return "application/octet-stream"
	}
	return cf.String()
}

// maxAge is the Max-Age of observation responses, in seconds: a client
// that hears nothing for that long re-registers (the node sends at least
// one notification per ObserveRefresh).
func (s *Server) maxAge() uint32 {
	return uint32((s.cfg.ObserveRefresh + time.Minute) / time.Second)
}
