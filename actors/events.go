package actors

import (
	"encoding/json"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
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
	// Telemetry is, on a telemetry event published on this node, the
	// message the grain stored (read-only; not sent to other members).
	// Message reads it.
	Telemetry *actorspb.Telemetry `json:"-"`
}

// TelemetryMessage is a telemetry event's message as the device sent it.
type TelemetryMessage struct {
	// Body is the device's payload: its original bytes when the node kept
	// them (System.KeepTelemetryPayloads, or a payload that is not JSON
	// points), else the points encoded as a JSON object.
	Body            []byte
	ContentType     string
	ContentEncoding string
	MessageID       string
	// Properties are the message's application properties (over MQTT the
	// topic's property bag without the $-prefixed system properties).
	Properties map[string]string
}

// Message returns the device message of a telemetry event published on
// this node; ok is false for other events and for events of other members.
func (e Event) Message() (m TelemetryMessage, ok bool) {
	t := e.Telemetry
	if t == nil {
		return m, false
	}
	m = TelemetryMessage{Body: t.Payload, ContentType: t.ContentType, ContentEncoding: t.ContentEncoding,
		MessageID: t.MessageId, Properties: t.Properties}
	switch {
	case m.Body != nil:
	case len(t.Points) == 0:
		m.Body = t.Raw // not JSON points: kept as they came (possibly empty)
	default:
		// The original bytes were not kept (no route needed them when the
		// message arrived): the points are the closest thing.
		m.Body, _ = json.Marshal(entity.Points(t.Points))
	}
	return m, true
}

// EventSink receives events. It is called from inside grains, one event at a
// time per entity, so it must be safe for concurrent use and must not block
// (queue or drop, and count the drops).
type EventSink func(Event)
