package actors

import (
	"context"
	"encoding/json"
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
// its twin's connection state; "" when it is not connected.
func (s *System) sessionNode(ctx context.Context, id string, depth int) string {
	doc, _, err := s.GetTwin(ctx, id)
	if err != nil {
		return ""
	}
	var t struct {
		Connection struct {
			State string `json:"state"`
			Node  string `json:"node"`
		} `json:"connection"`
	}
	if json.Unmarshal(doc, &t) != nil || t.Connection.State != "connected" {
		return ""
	}
	if gw, ok := strings.CutPrefix(t.Connection.Node, viaPrefix); ok {
		if depth > 0 {
			return ""
		}
		return s.sessionNode(ctx, gw, depth+1)
	}
	return t.Connection.Node
}
