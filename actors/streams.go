package actors

import (
	"context"
	"errors"
)

// StreamSignaller signals device stream requests (CONTRACT section 11) to
// devices: it asks device to open stream name by connecting a WebSocket to
// url with the one-time token, and returns the status the device answered.
// Its errors are ErrNotConnected (no live session that takes stream
// requests) and ErrTimeout (no answer before ctx is done). It must be safe
// for concurrent use.
type StreamSignaller interface {
	RequestStream(ctx context.Context, deviceID, name, url, token string) (status int, err error)
}

// streamReplication is the optional capability of a Replication that
// reaches the sessions of other members for stream requests.
type streamReplication interface {
	RequestStream(ctx context.Context, node, device, name, url, token string) (int, error)
}

// RouteStreams returns a StreamSignaller that reaches a device's session
// wherever it is, as RouteMethods does for direct methods: through local
// when the device is connected here, otherwise through the member its twin
// names in connection.node. The URL stays the caller's: the device
// connects back to the member that holds the service's side.
func (s *System) RouteStreams(local StreamSignaller) StreamSignaller {
	return streamRouter{s: s, local: local}
}

type streamRouter struct {
	s     *System
	local StreamSignaller
}

func (m streamRouter) RequestStream(ctx context.Context, id, name, url, token string) (int, error) {
	st, err := m.local.RequestStream(ctx, id, name, url, token)
	r, ok := m.s.cfg.Replication.(streamReplication)
	if !ok || !errors.Is(err, ErrNotConnected) {
		return st, err
	}
	node := m.s.sessionNode(ctx, id, 0)
	if node == "" || node == m.s.cfg.NodeName {
		return st, err
	}
	return r.RequestStream(ctx, node, id, name, url, token)
}
