package node

import (
	"context"
	"encoding/json"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/protocols/mqtt"
)

// mqttBackend adapts the actor System to the MQTT adapter's Backend. Errors
// pass as they are: both sides speak errcode.
type mqttBackend struct{ sys *actors.System }

func (b mqttBackend) Identity(ctx context.Context, id string) (mqtt.Identity, error) {
	idn, err := b.sys.Identity(ctx, id)
	if err != nil {
		return mqtt.Identity{}, err
	}
	return mqtt.Identity{DeviceID: idn.DeviceID, PrimaryKey: idn.PrimaryKey, SecondaryKey: idn.SecondaryKey,
		Enabled: idn.Status == "enabled"}, nil
}

func (b mqttBackend) MayActFor(ctx context.Context, gw, dev string) (bool, error) {
	return b.sys.MayActFor(ctx, gw, dev)
}

func (b mqttBackend) MayRead(ctx context.Context, sub, dev string) (bool, error) {
	return b.sys.MayRead(ctx, sub, dev)
}

func (b mqttBackend) Telemetry(ctx context.Context, id string, m mqtt.Telemetry) error {
	if err := b.sys.CheckTelemetry(id, m.Component, m.Payload); err != nil {
		return err // a modelled device's message that does not match its model
	}
	in := actors.DecodeTelemetry(m.Payload, m.ContentType, m.TS, m.Properties)
	in.MessageID, in.ContentEncoding = m.MessageID, m.ContentEncoding
	return b.sys.Telemetry(ctx, id, in)
}

func (b mqttBackend) GetTwin(ctx context.Context, id string) (json.RawMessage, json.RawMessage, error) {
	doc, _, err := b.sys.GetTwin(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	var t struct {
		Desired  json.RawMessage `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	}
	if err := json.Unmarshal(doc, &t); err != nil {
		return nil, nil, err
	}
	return t.Desired, t.Reported, nil
}

func (b mqttBackend) PatchReported(ctx context.Context, id string, patch []byte) (int64, error) {
	if err := b.sys.CheckReported(id, patch); err != nil {
		return 0, err
	}
	return b.sys.PatchReported(ctx, id, patch)
}

// AnnounceModel records the model ID an IoT Plug and Play device names in
// its MQTT user name; the model need not be registered yet.
func (b mqttBackend) AnnounceModel(ctx context.Context, id, modelID string) error {
	return b.sys.SetDeviceModel(ctx, id, modelID, false)
}

// SetConnection records the MQTT session; the twin shows "mqtt" as the
// device's protocol.
func (b mqttBackend) SetConnection(ctx context.Context, id string, connected bool) error {
	return b.sys.SetSession(ctx, id, actors.Session{Connected: connected, Protocol: "mqtt"})
}

func (b mqttBackend) PendingMessages(ctx context.Context, id string) ([]mqtt.C2DMessage, error) {
	msgs, err := b.sys.PendingMessages(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]mqtt.C2DMessage, len(msgs))
	for i, m := range msgs {
		out[i] = mqtt.C2DMessage{ID: m.ID, Payload: m.Payload, Properties: m.Properties, ExpiresAt: m.ExpiresAt}
	}
	return out, nil
}

func (b mqttBackend) MessageDelivered(ctx context.Context, id, msg string) error {
	return b.sys.MessageDelivered(ctx, id, msg)
}
