package persistence

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

// EntityFilter selects entities in ListEntities. Zero fields match
// everything.
type EntityFilter struct {
	// Kind, if set, must equal Entity.Kind.
	Kind string
	// Under, if set, matches entities strictly below that ID in the
	// `contains` hierarchy (the entity itself is not included).
	Under string
	// Tags: every k=v must equal fmt.Sprint(entity.Tags[k]); a missing tag
	// never matches.
	Tags map[string]string
}

// Identity is a device's entry in the identity registry: its symmetric keys
// and whether it may connect. It is kept in its own bucket, apart from the
// topology.
type Identity struct {
	DeviceID     string    `json:"id"`
	PrimaryKey   string    `json:"primaryKey"`
	SecondaryKey string    `json:"secondaryKey"`
	Status       string    `json:"status"` // "enabled" | "disabled"
	CreatedAt    time.Time `json:"createdAt"`
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
	// DefaultTelemetryLimit, values above MaxTelemetryLimit are capped.
	Limit int
}

// Telemetry query limits.
const (
	DefaultTelemetryLimit = 100
	MaxTelemetryLimit     = 10000
)

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

// Bucket names a store of opaque JSON documents written with PutDoc and
// DeleteDoc and read with GetDoc and ListDocs.
type Bucket string

// The document buckets. Any other Bucket value is refused with ErrInvalid.
const (
	// BucketRules holds rule definitions.
	BucketRules Bucket = "rules"
	// BucketAlerts holds alert state.
	BucketAlerts Bucket = "alerts"
	// BucketContrib holds rollup contributions, keyed "<parent>/<child>"
	// (the actor layer also uses "<parent>/<edge>/<child>"). DeleteEntity
	// removes those of the deleted entity.
	BucketContrib Bucket = "contrib"
	// BucketGrants holds access grants, keyed "<target>/<grantee>".
	BucketGrants Bucket = "grants"
	// BucketTombstones records catalog deletions, keyed "<kind>/<key>"
	// ("entity/<id>", "rules/<id>", "grants/<target>/<grantee>") with the
	// time of the deletion, so that a node that was away when something was
	// deleted learns of it when it copies the catalog back (schema 3).
	BucketTombstones Bucket = "tombstones"
)

// valid reports whether b is one of the document buckets.
func (b Bucket) valid() bool {
	switch b {
	case BucketRules, BucketAlerts, BucketContrib, BucketGrants, BucketTombstones:
		return true
	}
	return false
}
