package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/protocols/streams"
)

// newStreamBroker builds the device streams of the node (CONTRACT section
// 11) from the --stream-* flags; signal reaches device sessions on any
// member.
func newStreamBroker(c *serveConfig, signal actors.StreamSignaller, log *slog.Logger, reg prometheus.Registerer) (*streams.Broker, error) {
	b, err := streams.New(streams.Config{
		Signaller: signal, URL: c.StreamURL,
		AcceptTimeout: c.StreamAcceptTimeout, TokenTTL: c.StreamTokenTTL, IdleTimeout: c.StreamIdleTimeout,
		MaxPerDevice: c.StreamMaxPerDevice, MaxPerNode: c.StreamMax, BytesPerSecond: c.StreamRate,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return b, nil
}

// streamConnectBack serves devices connecting back to their streams
// (GET /api/v1/streams/{id}); the one-time token is their credential.
func streamConnectBack(b *streams.Broker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := b.Accept(w, r, r.PathValue("id")); err != nil {
			api.WriteError(w, err)
		}
	})
}

// RequestStream reaches the sessions of this node for other members.
func (l local) RequestStream(ctx context.Context, device, name, url, token string) (int, error) {
	return l.streams.RequestStream(ctx, device, name, url, token)
}

// RequestStream: a node without MQTT holds no session.
func (noSessions) RequestStream(context.Context, string, string, string, string) (int, error) {
	return 0, errcode.New(errcode.NotConnected, "MQTT is not running on this node")
}

var (
	_ actors.StreamSignaller = noSessions{}
	_ actors.StreamSignaller = local{}
)
