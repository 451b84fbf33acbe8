// Package record holds the plain data types of the store — entities,
// telemetry records, inbox messages — without the store. Package
// persistence aliases them; the pure entity core (actors/entity) uses them
// to describe what it wants written, so neither it nor a plugin test links
// bbolt.
package record

import "time"

// Entity is a node of the topology store: a device, gateway, room, building
// or any kind a plugin registers. Parent is the `contains` edge (parent →
// child); ConnectedVia is the `connectedVia` edge (device → gateway). Both are
// indexed, so Children and ConnectedVia do not scan.
type Entity struct {
	ID           string         `json:"id"`
	Kind         string         `json:"kind"`
	Parent       string         `json:"parent,omitempty"`
	ConnectedVia string         `json:"connectedVia,omitempty"`
	Tags         map[string]any `json:"tags,omitempty"`
	CreatedAt    time.Time      `json:"createdAt"`
	UpdatedAt    time.Time      `json:"updatedAt"`
}

// TelemetryRecord is one message of warm telemetry. Points holds decoded
// values by name; Raw keeps a payload that is not JSON. MessageID is the
// device's $.mid, kept so that the grain can recognise a retransmission.
type TelemetryRecord struct {
	TS          time.Time         `json:"ts"`
	Points      map[string]any    `json:"points,omitempty"`
	Raw         []byte            `json:"raw,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
	Properties  map[string]string `json:"properties,omitempty"`
	MessageID   string            `json:"mid,omitempty"`
}

// TelemetryQuery selects records in QueryTelemetry.
type TelemetryQuery struct {
	// Name, if set, keeps only records whose Points contain that name.
	Name string
	// From and To bound TS, both inclusive; a zero value is unbounded.
	From, To time.Time
	// Limit is the maximum number of records returned: 0 means
	// persistence.DefaultTelemetryLimit, values above persistence.MaxTelemetryLimit are capped.
	Limit int
}

// InboxMessage is a cloud-to-device message in a device's durable inbox.
type InboxMessage struct {
	ID          string            `json:"messageId"`
	DeviceID    string            `json:"deviceId"`
	Payload     []byte            `json:"payload"`
	Properties  map[string]string `json:"properties,omitempty"`
	EnqueuedAt  time.Time         `json:"enqueuedAt"`
	ExpiresAt   time.Time         `json:"expiresAt"`
	State       string            `json:"state"` // pending | delivered | expired | rejected
	DeliveredAt time.Time         `json:"deliveredAt,omitempty"`
	Seq         uint64            `json:"seq"` // enqueue order, assigned by the caller
}
