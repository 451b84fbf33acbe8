package actors

import (
	"encoding/json"
	"time"
)

// EntitySpec is the body of PUT /entities/{id}.
type EntitySpec struct {
	Kind         string         `json:"kind"`
	Parent       string         `json:"parent,omitempty"`
	ConnectedVia string         `json:"connectedVia,omitempty"`
	Tags         map[string]any `json:"tags,omitempty"`
}

// PatchBody is the body of PATCH /twins/{id}: merge patches of desired
// and/or tags.
type PatchBody struct {
	Desired json.RawMessage `json:"desired,omitempty"`
	Tags    json.RawMessage `json:"tags,omitempty"`
}

// TelemetryIn is one telemetry message from a protocol adapter, decoded
// once (DecodeTelemetry); it travels to the grain as typed points.
type TelemetryIn struct {
	TS          time.Time
	Points      map[string]any
	Raw         []byte
	ContentType string
	Properties  map[string]string
	// MessageID is the device's message ID ($.mid over MQTT); a message
	// whose ID is among the device's recent ones is not stored again.
	MessageID string
	// ContentEncoding is the device's content encoding ($.ce over MQTT).
	ContentEncoding string
	// Payload is the device's original bytes when they were decoded into
	// Points (DecodeTelemetry keeps a reference, no copy). The grain gets
	// it only while KeepTelemetryPayloads is on; it is never stored.
	Payload []byte
}
