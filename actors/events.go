package actors

import (
	"encoding/json"
	"time"
)

// Event types published by grains.
const (
	EventTwin       = "twin"       // desired, reported or tags changed
	EventTelemetry  = "telemetry"  // telemetry points arrived
	EventConnection = "connection" // a device connected or disconnected
	EventRollup     = "rollup"     // an aggregate beneath an entity changed
	EventTopology   = "topology"   // an entity was created, changed or deleted
	EventIdentity   = "identity"   // a device identity was registered, enabled or disabled
	EventAlert      = "alert"      // an alert was raised, acknowledged or cleared
)

// Event is a change that happened to an entity, published after it was
// durably committed. Events of one entity are published in version order.
type Event struct {
	Type    string `json:"type"`
	Entity  string `json:"entity"`
	Kind    string `json:"kind,omitempty"`
	Version int64  `json:"version"`
	Section string `json:"section,omitempty"` // for twin events: desired, reported or tags
	// SectionVersion is the section's $version after a desired/reported change.
	SectionVersion int64           `json:"sectionVersion,omitempty"`
	Data           json.RawMessage `json:"data,omitempty"`
	TS             time.Time       `json:"ts"`
	// Remote is set on events another member published (its grain, not
	// ours): sinks that must act once per event, such as AMQP routes, skip
	// them.
	Remote bool `json:"-"`
}

// EventSink receives events. It is called from inside grains, one event at a
// time per entity, so it must be safe for concurrent use and must not block
// (queue or drop, and count the drops).
type EventSink func(Event)
