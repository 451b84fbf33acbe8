package amqp

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/twinmesh/twinmesh/actors"
)

// condEnv is the shape of the environment a route condition sees; it is
// given to expr.Compile so that misspelled names fail at PUT, not later.
var condEnv = map[string]any{
	"source":     "",
	"deviceId":   "",
	"kind":       "",
	"section":    "",
	"body":       map[string]any{},
	"properties": map[string]string{},
}

// compileCondition compiles a route condition; the empty condition matches
// everything (nil program).
func compileCondition(src string) (*vm.Program, error) {
	if src == "" {
		return nil, nil
	}
	p, err := expr.Compile(src, expr.Env(condEnv), expr.AsBool())
	if err != nil {
		return nil, fmt.Errorf("%w: condition: %v", ErrInvalid, err)
	}
	return p, nil
}

// outMessage is a routed message before it is queued: the body, the
// application properties and the annotation values.
type outMessage struct {
	Device     string            `json:"d"`
	Source     string            `json:"s"` // iothub-message-source value
	Body       []byte            `json:"b"`
	Properties map[string]string `json:"p,omitempty"`
	Enqueued   time.Time         `json:"t"`
}

// classify maps an actor event to a route source, its body and properties;
// ok is false for events no route takes (rollups, topology updates that
// neither create nor delete).
func classify(e actors.Event) (source string, props map[string]string, ok bool) {
	switch e.Type {
	case actors.EventTelemetry:
		return SourceTelemetry, nil, true
	case actors.EventTwin:
		return SourceTwinChanges, map[string]string{"opType": "updateTwin", "section": e.Section,
			"version": strconv.FormatInt(e.Version, 10)}, true
	case actors.EventAlert:
		return SourceAlerts, nil, true
	case actors.EventTopology:
		var t struct {
			Created bool `json:"created"`
			Deleted bool `json:"deleted"`
		}
		_ = json.Unmarshal(e.Data, &t)
		switch {
		case t.Created:
			return SourceLifecycle, map[string]string{"opType": "createDeviceIdentity"}, true
		case t.Deleted:
			return SourceLifecycle, map[string]string{"opType": "deleteDeviceIdentity"}, true
		}
	case actors.EventConnection:
		var c struct {
			State string `json:"state"`
		}
		_ = json.Unmarshal(e.Data, &c)
		op := "deviceDisconnected"
		if c.State == "connected" {
			op = "deviceConnected"
		}
		return SourceLifecycle, map[string]string{"opType": op}, true
	}
	return "", nil, false
}

// compiledRoute is a route ready to match events.
type compiledRoute struct {
	Route
	prog *vm.Program
}

// match evaluates the route against an event already classified; a
// condition that fails to evaluate does not match (and is reported).
func (r *compiledRoute) match(source string, e actors.Event, body map[string]any, props map[string]string) (bool, error) {
	if !r.Enabled || r.Source != source {
		return false, nil
	}
	if r.prog == nil {
		return true, nil
	}
	if props == nil {
		props = map[string]string{}
	}
	out, err := expr.Run(r.prog, map[string]any{
		"source": source, "deviceId": e.Entity, "kind": e.Kind, "section": e.Section,
		"body": body, "properties": props,
	})
	if err != nil {
		return false, fmt.Errorf("route %s: %w", r.Name, err)
	}
	b, _ := out.(bool)
	return b, nil
}
