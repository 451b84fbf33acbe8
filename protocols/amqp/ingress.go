package amqp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// Backend is what ingress needs of the actor system (*actors.System).
type Backend interface {
	Identity(ctx context.Context, id string) (persistence.Identity, error)
	Ancestors(ctx context.Context, id string) ([]string, error)
	CheckTelemetry(deviceID, component string, payload []byte) error
	Telemetry(ctx context.Context, id string, in actors.TelemetryIn) error
	SendMessage(ctx context.Context, deviceID string, m actors.OutgoingMessage) (persistence.InboxMessage, error)
}

// Error conditions of rejected ingress messages.
const (
	condNotFound     = amqp.ErrCond("amqp:not-found")
	condUnauthorized = amqp.ErrCond("amqp:unauthorized-access")
	condDecode       = amqp.ErrCond("amqp:decode-error")
	condTooLarge     = amqp.ErrCond("amqp:link:message-size-exceeded")
	condInvalid      = amqp.ErrCond("amqp:invalid-field")
)

// IngressStatus is an ingress's definition (URL redacted) with its
// counters.
type IngressStatus struct {
	Ingress
	Connected bool  `json:"connected"`
	Received  int64 `json:"received"`
	Accepted  int64 `json:"accepted"`
	Rejected  int64 `json:"rejected"`
	// LastRejection is the condition and description of the latest
	// rejected message.
	LastRejection string `json:"lastRejection,omitempty"`
	LastError     string `json:"lastError,omitempty"`
}

// ingress consumes one queue.
type ingress struct {
	svc   *Service
	def   Ingress
	stop  context.CancelFunc
	alive bool
	done  chan struct{}

	mu sync.Mutex
	st IngressStatus
}

// status is the ingress's state with the URL redacted.
func (g *ingress) status() IngressStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.st
	st.Ingress = g.def
	st.URL = RedactURL(st.URL)
	return st
}

func (g *ingress) update(f func(st *IngressStatus)) {
	g.mu.Lock()
	f(&g.st)
	g.mu.Unlock()
}

func newIngress(svc *Service, def Ingress) *ingress {
	return &ingress{svc: svc, def: def, done: make(chan struct{})}
}

// run consumes until ctx ends, reconnecting after a backoff.
func (g *ingress) run(ctx context.Context) {
	defer close(g.done)
	bo := backoff{base: g.svc.cfg.BackoffBase, max: g.svc.cfg.BackoffMax}
	for ctx.Err() == nil {
		err := g.session(ctx, &bo)
		if ctx.Err() != nil {
			return
		}
		g.svc.log.Warn("amqp ingress", "ingress", g.def.Name, "url", RedactURL(g.def.URL), "err", err)
		g.update(func(st *IngressStatus) { st.Connected, st.LastError = false, Redact(err.Error()) })
		if !sleep(ctx, bo.next()) {
			return
		}
	}
}

func (g *ingress) session(ctx context.Context, bo *backoff) error {
	dctx, cancel := context.WithTimeout(ctx, g.svc.cfg.DialTimeout)
	conn, sess, err := dial(dctx, g.def.URL, g.def.CA)
	if err != nil {
		cancel()
		return err
	}
	defer conn.Close()
	// The link credit is the most messages the broker hands us before we
	// settle some: a flood waits in the queue, not in our memory.
	rcv, err := sess.NewReceiver(dctx, g.def.Address, &amqp.ReceiverOptions{Credit: int32(g.svc.cfg.Credit)})
	cancel()
	if err != nil {
		return fmt.Errorf("receiver link: %s", Redact(err.Error()))
	}
	bo.reset()
	g.update(func(st *IngressStatus) { st.Connected = true })
	for {
		msg, err := rcv.Receive(ctx, nil)
		if err != nil {
			return fmt.Errorf("receive: %s", Redact(err.Error()))
		}
		g.svc.m.received.WithLabelValues(g.def.Name).Inc()
		rej := g.handle(ctx, msg)
		sctx, cancel := context.WithTimeout(ctx, g.svc.cfg.SendTimeout)
		switch {
		case rej == nil:
			g.svc.m.accepted.WithLabelValues(g.def.Name).Inc()
			g.update(func(st *IngressStatus) { st.Received++; st.Accepted++ })
			err = rcv.AcceptMessage(sctx, msg)
		case rej.Condition == "":
			g.update(func(st *IngressStatus) { st.Received++ })
			err = rcv.ReleaseMessage(sctx, msg) // not stored for a passing reason: the broker redelivers
		default:
			g.svc.m.rejected.WithLabelValues(g.def.Name).Inc()
			g.update(func(st *IngressStatus) {
				st.Received++
				st.Rejected++
				st.LastRejection = string(rej.Condition) + ": " + rej.Description
			})
			err = rcv.RejectMessage(sctx, msg, rej)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("settle: %s", Redact(err.Error()))
		}
	}
}

// handle stores one message; nil means stored (accept), an *amqp.Error
// with a condition means reject, one without means release.
func (g *ingress) handle(ctx context.Context, msg *amqp.Message) *amqp.Error {
	to := ""
	if msg.Properties != nil && msg.Properties.To != nil {
		to = *msg.Properties.To
	}
	dev, kind, ok := parseTo(to)
	if !ok {
		return &amqp.Error{Condition: condInvalid, Description: fmt.Sprintf("to %q is neither /devices/{id}/messages/events nor /devices/{id}/messages/devicebound", to)}
	}
	body, err := messageBody(msg)
	if err != nil {
		return &amqp.Error{Condition: condDecode, Description: err.Error()}
	}
	if len(body) > g.svc.cfg.MaxMessageBytes {
		return &amqp.Error{Condition: condTooLarge, Description: fmt.Sprintf("body of %d bytes exceeds %d", len(body), g.svc.cfg.MaxMessageBytes)}
	}
	be := g.svc.cfg.Backend
	if be == nil {
		return &amqp.Error{Condition: condUnauthorized, Description: "this node takes no ingress"}
	}
	if rej := g.authorize(ctx, dev); rej != nil {
		return rej
	}
	props := map[string]string{}
	for k, v := range msg.ApplicationProperties {
		if s, ok := v.(string); ok {
			props[k] = s
		}
	}
	switch kind {
	case "events":
		if err := be.CheckTelemetry(dev, props["$.sub"], body); err != nil {
			return storeError(err)
		}
		ct := ""
		if msg.Properties != nil && msg.Properties.ContentType != nil {
			ct = *msg.Properties.ContentType
		}
		in := actors.DecodeTelemetry(body, ct, time.Time{}, props)
		if p := msg.Properties; p != nil {
			if p.MessageID != nil {
				in.MessageID = fmt.Sprint(p.MessageID)
			}
			if p.ContentEncoding != nil {
				in.ContentEncoding = *p.ContentEncoding
			}
		}
		return storeError(be.Telemetry(ctx, dev, in))
	default:
		m := actors.OutgoingMessage{Payload: body, Properties: props}
		if msg.Header != nil && msg.Header.TTL > 0 {
			m.TTL = max(msg.Header.TTL, time.Second)
		}
		_, err := be.SendMessage(ctx, dev, m)
		return storeError(err)
	}
}

// authorize rejects unknown and disabled devices, and devices outside the
// ingress's subtree.
func (g *ingress) authorize(ctx context.Context, dev string) *amqp.Error {
	be := g.svc.cfg.Backend
	idn, err := be.Identity(ctx, dev)
	if err != nil {
		if errors.Is(err, actors.ErrNotFound) {
			return &amqp.Error{Condition: condNotFound, Description: fmt.Sprintf("device %s is not registered", dev)}
		}
		return &amqp.Error{Description: err.Error()} // release: try again later
	}
	if idn.Status == "disabled" {
		return &amqp.Error{Condition: condUnauthorized, Description: fmt.Sprintf("device %s is disabled", dev)}
	}
	if g.def.Under == "" || g.def.Under == dev {
		return nil
	}
	anc, err := be.Ancestors(ctx, dev)
	if err != nil && !errors.Is(err, actors.ErrNotFound) {
		return &amqp.Error{Description: err.Error()}
	}
	for _, a := range anc {
		if a == g.def.Under {
			return nil
		}
	}
	return &amqp.Error{Condition: condUnauthorized, Description: fmt.Sprintf("device %s is not under %s", dev, g.def.Under)}
}

// storeError maps the actor system's answer to an outcome: bad input is
// rejected with its reason; a passing failure releases the message.
func storeError(err error) *amqp.Error {
	if err == nil {
		return nil
	}
	switch errcode.Of(err) {
	case errcode.BadRequest, errcode.TooLarge:
		return &amqp.Error{Condition: condDecode, Description: err.Error()}
	case errcode.NotFound:
		return &amqp.Error{Condition: condNotFound, Description: err.Error()}
	case errcode.Forbidden:
		return &amqp.Error{Condition: condUnauthorized, Description: err.Error()}
	}
	return &amqp.Error{Description: err.Error()}
}

// parseTo splits "/devices/{id}/messages/events|devicebound".
func parseTo(to string) (dev, kind string, ok bool) {
	rest, found := strings.CutPrefix(to, "/devices/")
	if !found {
		return "", "", false
	}
	dev, kind, found = strings.Cut(rest, "/messages/")
	if !found || dev == "" || !actors.ValidID(dev) || (kind != "events" && kind != "devicebound") {
		return "", "", false
	}
	return dev, kind, true
}

// messageBody is the message's data sections joined, or a string or binary
// AMQP value.
func messageBody(m *amqp.Message) ([]byte, error) {
	if len(m.Data) > 0 {
		return m.GetData(), nil
	}
	switch v := m.Value.(type) {
	case string:
		return []byte(v), nil
	case []byte:
		return v, nil
	case nil:
		return nil, errors.New("message has no body")
	}
	return nil, fmt.Errorf("body is an AMQP value of type %T, not data, string or binary", m.Value)
}
