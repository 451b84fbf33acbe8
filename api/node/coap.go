package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/protocols/coap"
	"github.com/twinmesh/twinmesh/protocols/devicerate"
)

// coapBackend adapts the actor System to the CoAP adapter's Backend, with
// the same calls as the MQTT one. Errors pass as they are: both sides speak
// errcode.
type coapBackend struct{ sys *actors.System }

func (b coapBackend) Identity(ctx context.Context, id string) (coap.Identity, error) {
	idn, err := mqttBackend(b).Identity(ctx, id)
	return coap.Identity(idn), err
}

func (b coapBackend) MayActFor(ctx context.Context, gw, dev string) (bool, error) {
	return b.sys.MayActFor(ctx, gw, dev)
}

func (b coapBackend) Telemetry(ctx context.Context, id string, m coap.Telemetry) error {
	if err := b.sys.CheckTelemetry(id, "", m.Payload); err != nil {
		return err
	}
	return b.sys.Telemetry(ctx, id, actors.DecodeTelemetry(m.Payload, m.ContentType, m.TS, nil))
}

func (b coapBackend) GetTwin(ctx context.Context, id string) (json.RawMessage, json.RawMessage, error) {
	return mqttBackend(b).GetTwin(ctx, id)
}

func (b coapBackend) PatchReported(ctx context.Context, id string, patch []byte) (int64, error) {
	if err := b.sys.CheckReported(id, patch); err != nil {
		return 0, err
	}
	return b.sys.PatchReported(ctx, id, patch)
}

// SetSession records CoAP presence; a disconnection applies only while the
// twin says the device is connected over that protocol to this node.
func (b coapBackend) SetSession(ctx context.Context, id string, connected bool, protocol string) error {
	return b.sys.SetSession(ctx, id, actors.Session{Connected: connected, Protocol: protocol, OnlyHere: true})
}

func (b coapBackend) PendingMessages(ctx context.Context, id string) ([]coap.Message, error) {
	msgs, err := b.sys.PendingMessages(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]coap.Message, len(msgs))
	for i, m := range msgs {
		out[i] = coap.Message{ID: m.ID, Payload: m.Payload, Properties: m.Properties}
	}
	return out, nil
}

func (b coapBackend) CompleteMessage(ctx context.Context, id, msg string) error {
	return b.sys.MessageDelivered(ctx, id, msg)
}

// newCoAP builds the CoAP adapter when --coap or --coaps is set (nil
// otherwise) and subscribes it to the System's events; startCoAP opens
// its listeners once the catalog is synced.
func newCoAP(c *serveConfig, sys *actors.System, log *slog.Logger, reg prometheus.Registerer, rate *devicerate.Limiter) (*coap.Server, error) {
	if c.COAP == "" && c.COAPS == "" {
		return nil, nil
	}
	cs, err := coap.New(coap.Config{
		Addr: c.COAP, DTLSAddr: c.COAPS, Insecure: c.COAPInsecure, PresenceWindow: c.COAPPresenceWindow,
		MaxPayload: c.MaxPayload, Rate: rate, MaxTokenLifetime: c.MaxTokenLifetime,
		Logger: log, Registerer: reg,
	}, coapBackend{sys})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	sys.OnEvent(cs.HandleEvent)
	return cs, nil
}

// startCoAP opens the CoAP listeners (cs may be nil) and stops them with
// the node.
func (n *node) startCoAP(ctx context.Context, cs *coap.Server) error {
	if cs == nil {
		return nil
	}
	if err := cs.Start(ctx); err != nil {
		return err
	}
	n.coap = cs
	n.stops = append(n.stops, func(ctx context.Context) {
		if n.retiring { // cut off from the cluster: no twin to tell
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			cancel()
		}
		_ = cs.Shutdown(ctx)
	})
	if cs.Addr() != "" {
		n.log.Info("listening", "listener", "coap", "addr", cs.Addr())
	}
	if cs.DTLSAddr() != "" {
		n.log.Info("listening", "listener", "coaps", "addr", cs.DTLSAddr())
	}
	return nil
}

// keepCoAP makes c start the next incarnation's CoAP listeners where this
// one's are.
func (n *node) keepCoAP(c *serveConfig) {
	if n.coap == nil {
		return
	}
	if c.COAP != "" {
		c.COAP = n.coap.Addr()
	}
	if c.COAPS != "" {
		c.COAPS = n.coap.DTLSAddr()
	}
}

var _ coap.Backend = coapBackend{}
