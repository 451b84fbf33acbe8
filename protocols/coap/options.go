package coap

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options/config"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"
)

// Settings of the go-coap servers that are not in Config.
const (
	// tick is how often go-coap checks retransmissions and expirations
	// (its default, 4 s, would delay a notification's retransmission by
	// up to 4 s over its 2–3 s acknowledgement timeout).
	tick = 500 * time.Millisecond
	// transferTimeout is how long a block-wise transfer may pause between
	// two blocks: long enough for a client's retransmissions over a lossy
	// link (go-coap's default is 3 s).
	transferTimeout = 2 * time.Minute
	// transfersPerEndpoint bounds the block-wise uploads one endpoint may
	// have under way (go-coap's default is 4096).
	transfersPerEndpoint = 4
	// unauthenticatedIdle is how long an endpoint that never sent an
	// authenticated request keeps its state.
	unauthenticatedIdle = 30 * time.Second
)

// udpOptions configures the plain go-coap server.
type udpOptions struct{ s *Server }

// UDPServerApply implements udpserver.Option.
func (o udpOptions) UDPServerApply(cfg *udpserver.Config) {
	s := o.s
	s.common(&cfg.Common)
	cfg.Handler = s.handle
	cfg.RequestMonitor = s.monitor
	cfg.OnNewConn = s.onNewConn
	cfg.CreateInactivityMonitor = func() udpclient.InactivityMonitor { return &idleMonitor{s: s} }
	cfg.TransmissionAcknowledgeTimeout = s.cfg.AckTimeout
	cfg.TransmissionMaxRetransmit = uint32(s.cfg.MaxRetransmit)
}

// dtlsOptions configures the DTLS go-coap server.
type dtlsOptions struct{ s *Server }

// DTLSServerApply implements dtlsserver.Option.
func (o dtlsOptions) DTLSServerApply(cfg *dtlsserver.Config) {
	s := o.s
	s.common(&cfg.Common)
	cfg.Handler = s.handle
	cfg.RequestMonitor = s.monitor
	cfg.OnNewConn = s.onNewConn
	cfg.CreateInactivityMonitor = func() udpclient.InactivityMonitor { return &idleMonitor{s: s} }
	cfg.TransmissionAcknowledgeTimeout = s.cfg.AckTimeout
	cfg.TransmissionMaxRetransmit = uint32(s.cfg.MaxRetransmit)
	cfg.HandshakeTimeout = 30 * time.Second
}

// common sets what both servers share.
func (s *Server) common(c *config.Common[*udpclient.Conn]) {
	c.Ctx = context.Background()
	c.Errors = func(err error) { s.log.Debug("coap", "err", err) }
	c.BlockwiseEnable = true
	c.BlockwiseSZX = blockwise.SZX1024
	c.BlockwiseTransferTimeout = transferTimeout
	c.BlockwiseReceivingMessagesCacheMaxEntries = transfersPerEndpoint
	c.PeriodicRunner = s.periodic
}

// periodic runs f every tick until it returns false or the server closes.
func (s *Server) periodic(f func(now time.Time) bool) {
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case now := <-t.C:
				if !f(now) {
					return
				}
			}
		}
	}()
}

// idleMonitor closes an endpoint after SessionIdle without a datagram
// (30 s when it never authenticated), unless it has observations: those
// are kept alive, and checked, by their periodic confirmable
// notifications.
type idleMonitor struct {
	s    *Server
	last atomic.Int64
}

// Notify records activity.
func (m *idleMonitor) Notify() { m.last.Store(time.Now().UnixNano()) }

// CheckInactivity closes cc when it has been idle too long.
func (m *idleMonitor) CheckInactivity(now time.Time, cc *udpclient.Conn) {
	last := m.last.Load()
	if last == 0 {
		m.Notify()
		return
	}
	idle := m.s.cfg.SessionIdle
	if ep := m.s.endpointOf(cc); ep == nil || !m.s.authenticated(ep) {
		idle = unauthenticatedIdle
	}
	if now.Sub(time.Unix(0, last)) < idle || m.s.obs.hasConn(cc) {
		return
	}
	_ = cc.Close()
}

func (s *Server) authenticated(ep *endpoint) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ep.authed
}

// monitor sees every message before go-coap processes it. It notes a
// Reset that answers an outstanding notification, and checks each block of
// a block-wise upload (RFC 7959 Block1) for size and credentials before
// go-coap buffers it, so that an unauthenticated client cannot make the
// node hold large bodies. It never returns an error: that would close the
// endpoint.
func (s *Server) monitor(cc *udpclient.Conn, r *pool.Message) (bool, error) {
	if r.Type() == message.Reset {
		if ep := s.endpointOf(cc); ep != nil {
			s.mu.Lock()
			if ep.sending {
				ep.reset = true
			}
			s.mu.Unlock()
		}
		return false, nil
	}
	if r.Code() < codes.GET || r.Code() > codes.IPATCH {
		return false, nil
	}
	ep := s.endpointOf(cc)
	if ep == nil {
		return true, nil
	}
	if !s.sameExchange(ep, r) {
		s.m.refused.WithLabelValues("message_id_reused").Inc()
		return true, nil
	}
	if !r.HasOption(message.Block1) {
		return false, nil
	}
	v, err := r.GetOptionUint32(message.Block1)
	if err != nil {
		return true, nil
	}
	szx, num, _, err := blockwise.DecodeBlockOption(v)
	if err != nil || szx > blockwise.SZX1024 {
		return true, nil
	}
	size, _ := r.BodySize()
	if end := num*szx.Size() + size; end > int64(s.cfg.MaxPayload) {
		s.m.refused.WithLabelValues("too_large").Inc()
		s.replyBare(cc, r, codes.RequestEntityTooLarge, message.Option{ID: message.Size1, Value: uintBytes(uint32(s.cfg.MaxPayload))})
		return true, nil
	}
	if ep.secure {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	if _, err := s.authenticate(ctx, r, ep); err != nil {
		s.m.refused.WithLabelValues(refusalReason(err)).Inc()
		s.replyBare(cc, r, codeOf(err))
		return true, nil
	}
	return false, nil
}

// sameExchange lets a request through to go-coap unless it reuses the
// message ID of an earlier request from the endpoint (within
// EXCHANGE_LIFETIME) without being a retransmission of it. go-coap
// answers a message ID it has seen from its exchange cache, whatever the
// datagram carries; without this check a short datagram reusing the
// message ID of a request with a large answer would get that answer,
// which is an amplification. A genuine retransmission carries the same
// code, token, options and payload size.
func (s *Server) sameExchange(ep *endpoint, r *pool.Message) bool {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint16(b[:2], uint16(r.Code()))
	b[2] = byte(r.Type())
	_, _ = h.Write(b[:3])
	_, _ = h.Write(r.Token())
	for _, o := range r.Options() {
		binary.BigEndian.PutUint16(b[:2], uint16(o.ID))
		binary.BigEndian.PutUint32(b[2:6], uint32(len(o.Value)))
		_, _ = h.Write(b[:6])
		_, _ = h.Write(o.Value)
	}
	size, _ := r.BodySize()
	binary.BigEndian.PutUint64(b[:], uint64(size))
	_, _ = h.Write(b[:])
	return ep.exchanges.check(r.MessageID(), h.Sum64(), time.Now())
}

// exchanges remembers the fingerprint of each message ID an endpoint used
// within EXCHANGE_LIFETIME.
type exchanges struct {
	mu      sync.Mutex
	seen    map[int32]exchange
	inserts int
}

type exchange struct {
	fp uint64
	at time.Time
}

// check records mid's fingerprint, or reports whether it matches the one
// recorded.
func (x *exchanges) check(mid int32, fp uint64, now time.Time) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, ok := x.seen[mid]; ok && now.Sub(e.at) < exchangeLifetime {
		return e.fp == fp
	}
	if x.seen == nil {
		x.seen = map[int32]exchange{}
	}
	x.seen[mid] = exchange{fp: fp, at: now}
	if x.inserts++; x.inserts%1024 == 0 {
		for k, e := range x.seen {
			if now.Sub(e.at) >= exchangeLifetime {
				delete(x.seen, k)
			}
		}
	}
	return true
}

// replyBare answers r at once with code and opts and no payload: never
// more bytes than r (an unauthenticated block carries at least as much).
func (s *Server) replyBare(cc *udpclient.Conn, r *pool.Message, code codes.Code, opts ...message.Option) {
	m := cc.AcquireMessage(context.Background())
	defer cc.ReleaseMessage(m)
	m.SetCode(code)
	m.SetToken(r.Token())
	m.ResetOptionsTo(opts)
	if r.Type() == message.Confirmable {
		m.SetType(message.Acknowledgement)
		m.SetMessageID(r.MessageID())
	} else {
		m.SetType(message.NonConfirmable)
		m.SetMessageID(cc.GetMessageID())
	}
	if err := cc.Session().WriteMessage(m); err != nil {
		s.log.Debug("coap reply not sent", "err", err)
	}
}

// uintBytes encodes a CoAP uint option value (big-endian, no leading
// zeros).
func uintBytes(v uint32) []byte {
	var b []byte
	for v > 0 {
		b = append([]byte{byte(v)}, b...)
		v >>= 8
	}
	return b
}

var (
	_ udpserver.Option               = udpOptions{}
	_ dtlsserver.Option              = dtlsOptions{}
	_ udpclient.InactivityMonitor    = (*idleMonitor)(nil)
	_ udpclient.RequestMonitorFunc   = (*Server)(nil).monitor
	_ udpserver.OnNewConnFunc        = (*Server)(nil).onNewConn
	_ udpserver.HandlerFunc          = (*Server)(nil).handle
	_ func(func(now time.Time) bool) = (*Server)(nil).periodic
)
