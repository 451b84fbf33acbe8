package persistence

import (
	"time"

	"github.com/twinmesh/twinmesh/persistence/record"
)

// Entity is record.Entity: the type lives in package record so that the pure
// entity core can name it without importing bbolt.
type Entity = record.Entity

// EntityFilter selects entities in ListEntities. Zero fields match
// everything.
type EntityFilter struct {
	// Kind, if set, must equal Entity.Kind.
	Kind string
	// Under, if set, matches entities strictly below that ID in the
	// `contains` hierarchy (the entity itself is not included).
	Under string
	// Within, if set, matches that entity and the entities below it (an
	// access token's scope, CONTRACT section 13). It applies on top of
	// Under.
	Within string
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
	// ModelID is the DTMI of the device's DTDL model (CONTRACT section
	// 12), "" for a device without one.
	ModelID string `json:"modelId,omitempty"`
}

// TelemetryRecord is record.TelemetryRecord: the type lives in package record so that the pure
// entity core can name it without importing bbolt.
type TelemetryRecord = record.TelemetryRecord

// TelemetryQuery is record.TelemetryQuery: the type lives in package record so that the pure
// entity core can name it without importing bbolt.
type TelemetryQuery = record.TelemetryQuery

// Telemetry query limits.
const (
	DefaultTelemetryLimit = 100
	MaxTelemetryLimit     = 10000
)

// InboxMessage is record.InboxMessage: the type lives in package record so that the pure
// entity core can name it without importing bbolt.
type InboxMessage = record.InboxMessage

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
	// BucketGrains holds each entity's plugin record, keyed by entity ID:
	// the kind's private state and its durable timers, which the node's
	// timer service scans to fire them after a restart.
	BucketGrains Bucket = "grains"
	// BucketMembers holds the names of the nodes that make up the cluster,
	// keyed by node name: every node that hosted grains and was seen alive,
	// until an operator forgets it. The cluster's majorities count them, so
	// that a node that restarted, or that lost sight of the others, never
	// takes the few members it sees for the whole cluster.
	BucketMembers Bucket = "members"
	// BucketTokens holds the access tokens of the REST and WebSocket API
	// (CONTRACT section 13), keyed by token ID: the SHA-256 of the secret,
	// never the secret, with the role, scope and expiry. A revoked token
	// stays, marked, until it expires: a member that was away when it was
	// revoked takes the revoked copy, and cannot bring the token back.
	BucketTokens Bucket = "tokens"
	// BucketModels holds the DTDL interfaces of device models (CONTRACT
	// section 12), keyed by DTMI, as the documents clients stored.
	BucketModels Bucket = "models"
	// BucketJobs holds fleet jobs (CONTRACT section 9): each job's
	// definition and progress, and one outcome per device it selected, so
	// that the member that takes a job over resumes it where it was left.
	BucketJobs Bucket = "jobs"
	// BucketAMQP holds the AMQP endpoints, routes and ingresses (CONTRACT
	// section 8), keyed "endpoint/<name>", "route/<name>",
	// "ingress/<name>": cluster-wide, so a definition PUT on one member
	// works on all (schema 9).
	BucketAMQP Bucket = "amqp"
)

// valid reports whether b is one of the document buckets.
func (b Bucket) valid() bool {
	switch b {
	case BucketRules, BucketAlerts, BucketContrib, BucketGrants, BucketTombstones, BucketGrains, BucketMembers,
		BucketTokens, BucketModels, BucketJobs, BucketAMQP:
		return true
	}
	return false
}
