package api

import (
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
)

// The REST API's own response types. Handlers convert the store's records
// into these, so that a change to how something is stored never changes
// what clients read; their JSON is the wire contract (CONTRACT section 2).

// Entity is a topology entity as GET /entities/{id} shows it.
type Entity struct {
	ID           string         `json:"id"`
	Kind         string         `json:"kind"`
	Parent       string         `json:"parent,omitempty"`
	ConnectedVia string         `json:"connectedVia,omitempty"`
	Tags         map[string]any `json:"tags,omitempty"`
	CreatedAt    time.Time      `json:"createdAt"`
	UpdatedAt    time.Time      `json:"updatedAt"`
}

func entityView(e persistence.Entity) Entity {
	return Entity{ID: e.ID, Kind: e.Kind, Parent: e.Parent, ConnectedVia: e.ConnectedVia, Tags: e.Tags,
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt}
}

func entityViews(list []persistence.Entity) []Entity {
	out := make([]Entity, len(list))
	for i, e := range list {
		out[i] = entityView(e)
	}
	return out
}

// Device is a device identity as PUT, GET and PATCH /devices/{id} show it.
type Device struct {
	ID           string `json:"id"`
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
	Status       string `json:"status"`
	ModelID      string `json:"modelId,omitempty"`
}

func deviceView(i persistence.Identity) Device {
	return Device{ID: i.DeviceID, PrimaryKey: i.PrimaryKey, SecondaryKey: i.SecondaryKey, Status: i.Status, ModelID: i.ModelID}
}

// Message is a cloud-to-device message as the API shows it: the payload as
// JSON when it is JSON, else as base64 in payloadBase64.
type Message struct {
	ID            string            `json:"messageId"`
	State         string            `json:"state"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64 string            `json:"payloadBase64,omitempty"`
	Properties    map[string]string `json:"properties,omitempty"`
	EnqueuedAt    time.Time         `json:"enqueuedAt"`
	ExpiresAt     time.Time         `json:"expiresAt"`
	DeliveredAt   *time.Time        `json:"deliveredAt,omitempty"`
}

func messageView(m persistence.InboxMessage) Message {
	o := Message{ID: m.ID, State: m.State, Properties: m.Properties, EnqueuedAt: m.EnqueuedAt, ExpiresAt: m.ExpiresAt}
	if json.Valid(m.Payload) {
		o.Payload = m.Payload
	} else {
		o.PayloadBase64 = base64.StdEncoding.EncodeToString(m.Payload)
	}
	if !m.DeliveredAt.IsZero() {
		t := m.DeliveredAt
		o.DeliveredAt = &t
	}
	return o
}

// TelemetryRecord is one message of warm telemetry as GET
// /twins/{id}/telemetry shows it: the decoded points, or the raw payload
// (base64) when it was not JSON.
type TelemetryRecord struct {
	TS          time.Time         `json:"ts"`
	Points      map[string]any    `json:"points,omitempty"`
	Raw         []byte            `json:"raw,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
	Properties  map[string]string `json:"properties,omitempty"`
	MessageID   string            `json:"mid,omitempty"`
}

func telemetryViews(recs []persistence.TelemetryRecord) []TelemetryRecord {
	out := make([]TelemetryRecord, len(recs))
	for i, r := range recs {
		out[i] = TelemetryRecord{TS: r.TS, Points: r.Points, Raw: r.Raw, ContentType: r.ContentType,
			Properties: r.Properties, MessageID: r.MessageID}
	}
	return out
}

// items is the envelope of every list: {"items":[…],"next":"cursor"}.
type items[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
