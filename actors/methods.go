package actors

import (
	"context"
	"errors"
	"strings"
)

// RouteMethods returns a Commander that reaches a device's session wherever
// it is: through local (this node's MQTT adapter) when the device is
// connected here, otherwise through the member its twin names in
// connection.node (for a device connected via a gateway, the gateway's). On
// a node without replication it is local itself.
func (s *System) RouteMethods(local Commander) Commander {
	return methodRouter{s: s, local: local}
}

type methodRouter struct {
	s     *System
	local Commander
}

func (m methodRouter) InvokeMethod(ctx context.Context, id, method string, payload []byte) (int, []byte, error) {
	st, resp, err := m.local.InvokeMethod(ctx, id, method, payload)
	r := m.s.cfg.Replication
	if r == nil || !errors.Is(err, ErrNotConnected) {
		return st, resp, err
	}
	node := m.s.sessionNode(ctx, id, 0)
	if node == "" || node == m.s.cfg.NodeName {
		return st, resp, err
	}
	return r.Invoke(ctx, node, id, method, payload)
}

// sessionNode returns the node holding the MQTT session of a device, from
// the connection state its grain reports; "" when it is not connected.
func (s *System) sessionNode(ctx context.Context, id string, depth int) string {
	kind, err := s.kindOf(id)
	if err != nil {
		return ""
	}
	res, err := s.call(ctx, id, kind, getReq)
	if err != nil {
		return ""
	}
	if gw, ok := strings.CutPrefix(res.SessionNode, viaPrefix); ok {
		if depth > 0 {
			return ""
		}
		return s.sessionNode(ctx, gw, depth+1)
	}
	return res.SessionNode
}

// viaPrefix marks a connection state derived from a gateway's.
const viaPrefix = "via "
