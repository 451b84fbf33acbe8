package amqp

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/twinmesh/twinmesh/actors"
)

// condEnv is the shape of the environment a route condition sees; it is
// given to expr.Compile so that misspelled names fail at PUT, not later.
var condEnv = map[string]any{
	"source":          "",
	"deviceId":        "",
	"kind":            "",
	"section":         "",
	"body":            map[string]any{},
	"properties":      map[string]string{},
	"messageId":       "",
	"contentType":     "",
	"contentEncoding": "",
	"tags":            map[string]any{},
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
// system and application properties and the annotation values.
type outMessage struct {
	Device          string            `json:"d"`
	Source          string            `json:"s"` // iothub-message-source value
	Body            []byte            `json:"b"`
	Properties      map[string]string `json:"p,omitempty"`
	Enqueued        time.Time         `json:"t"`
	MessageID       string            `json:"m,omitempty"`  // the device's, for telemetry
	ContentType     string            `json:"ct,omitempty"` // "" is application/json
	ContentEncoding string            `json:"ce,omitempty"`
}

// classify maps an actor event to a route source and the message a route
// sends (without Device, Source and Enqueued); ok is false for events no
// route takes (rollups, topology updates that neither create nor delete).
// A telemetry message is the device's: its bytes, content type and
// encoding, message ID and application properties, as IoT Hub routes it.
func classify(e actors.Event) (source string, m outMessage, ok bool) {
	if e.Type == actors.EventTelemetry {
		tm, ok := e.Message()
		if !ok {
			// Published without its message (not by a grain of this
			// node): the event document is all there is.
			return SourceTelemetry, outMessage{Body: e.Data}, true
		}
		return SourceTelemetry, outMessage{Body: tm.Body, Properties: tm.Properties, MessageID: tm.MessageID,
			ContentType: tm.ContentType, ContentEncoding: tm.ContentEncoding}, true
	}
	source, op, schema, ok := classifyOther(e)
	if !ok {
		return "", outMessage{}, false
	}
	// IoT Hub's application properties of its non-telemetry events (no
	// hubName: a node is not a named hub).
	props := map[string]string{"deviceId": e.Entity, "operationTimestamp": e.TS.UTC().Format(time.RFC3339Nano)}
	if op != "" {
		props["opType"], props["iothub-message-schema"] = op, schema
	}
	if e.Type == actors.EventTwin {
		props["section"], props["version"] = e.Section, strconv.FormatInt(e.Version, 10)
	}
	return source, outMessage{Body: e.Data, Properties: props, ContentType: "application/json", ContentEncoding: "utf-8"}, true
}

// classifyOther classifies the events whose body is their JSON document:
// the route source, IoT Hub's opType and iothub-message-schema.
func classifyOther(e actors.Event) (source, op, schema string, ok bool) {
	switch e.Type {
	case actors.EventTwin:
		return SourceTwinChanges, "updateTwin", "twinChangeNotification", true
	case actors.EventAlert:
		return SourceAlerts, "", "", true
	case actors.EventTopology:
		var t struct {
			Created bool `json:"created"`
			Deleted bool `json:"deleted"`
		}
		_ = json.Unmarshal(e.Data, &t)
		switch {
		case t.Created:
			return SourceLifecycle, "createDeviceIdentity", "deviceLifecycleNotification", true
		case t.Deleted:
			return SourceLifecycle, "deleteDeviceIdentity", "deviceLifecycleNotification", true
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
		return SourceLifecycle, op, "deviceConnectionStateNotification", true
	}
	return "", "", "", false
}

// compiledRoute is a route ready to match events.
type compiledRoute struct {
	Route
	prog *vm.Program
	tags bool // the condition reads the device's tags
}

func newCompiledRoute(r Route, p *vm.Program) *compiledRoute {
	return &compiledRoute{Route: r, prog: p, tags: usesTags(p)}
}

// conditionBody is the body a condition sees: the message body decoded
// when it is a JSON object in UTF-8 (as IoT Hub routes query $body), else
// an empty object.
func conditionBody(m outMessage) map[string]any {
	var body map[string]any
	ct, ce := strings.ToLower(m.ContentType), strings.ToLower(m.ContentEncoding)
	if (ct == "" || strings.Contains(ct, "json")) && (ce == "" || ce == "utf-8") {
		_ = json.Unmarshal(m.Body, &body)
	}
	if body == nil {
		body = map[string]any{} // not a JSON object: conditions see no fields
	}
	return body
}

// match evaluates the route against an event already classified (body is
// conditionBody's, nil when no condition needed it yet); a condition that
// fails to evaluate does not match (and is reported).
func (r *compiledRoute) match(source string, e actors.Event, m outMessage, body, tags map[string]any) (bool, error) {
	if !r.Enabled || r.Source != source {
		return false, nil
	}
	if r.prog == nil {
		return true, nil
	}
	props := m.Properties
	if props == nil {
		props = map[string]string{}
	}
	out, err := expr.Run(r.prog, map[string]any{
		"source": source, "deviceId": e.Entity, "kind": e.Kind, "section": e.Section,
		"body": body, "properties": props, "messageId": m.MessageID, "contentType": m.ContentType,
		"contentEncoding": m.ContentEncoding, "tags": tags,
	})
	if err != nil {
		return false, fmt.Errorf("route %s: %w", r.Name, err)
	}
	b, _ := out.(bool)
	return b, nil
}
