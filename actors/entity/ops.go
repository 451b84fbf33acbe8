package entity

import (
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// OpKind says what an Op writes.
type OpKind uint8

// The kinds of storage op.
const (
	// OpPutTwin stores Doc as the twin document of Key.
	OpPutTwin OpKind = iota + 1
	// OpPutEntity stores Entity (maintaining the topology indexes).
	OpPutEntity
	// OpDeleteEntity deletes entity Key with its twin, identity, inbox,
	// telemetry and contributions.
	OpDeleteEntity
	// OpAppendTelemetry appends Telemetry to the warm store of Key.
	OpAppendTelemetry
	// OpPutDoc stores Doc under Key in document bucket Bucket.
	OpPutDoc
	// OpDeleteDoc deletes Key from document bucket Bucket.
	OpDeleteDoc
	// OpPutInbox stores Inbox in the device's inbox.
	OpPutInbox
	// OpDeleteInbox deletes message Msg from the inbox of Key.
	OpDeleteInbox
)

// Document buckets the core writes (persistence.Bucket values).
const (
	BucketContrib    = "contrib"
	BucketAlerts     = "alerts"
	BucketTombstones = "tombstones"
	// BucketGrains holds each entity's plugin record: its private state
	// and its durable timers.
	BucketGrains = "grains"
)

// Op is one storage write. The caller translates it to its store's op and
// commits all ops of a Result in one transaction, fenced by the grain's
// epoch.
type Op struct {
	Kind      OpKind
	Key       string
	Bucket    string
	Msg       string
	Doc       []byte
	Entity    record.Entity
	Telemetry record.TelemetryRecord
	Inbox     record.InboxMessage
}

// Event is a change to publish once its ops are durable. Entity and Kind
// are filled by the core.
type Event struct {
	Type           string
	Entity         string
	Kind           string
	Version        int64
	Section        string
	SectionVersion int64
	// Data is the event's JSON document, encoded once here.
	Data []byte
	TS   time.Time
	// Telemetry is, for a telemetry event, the message as the grain
	// received it (read-only): routes send its bytes and properties.
	Telemetry *actorspb.Telemetry
}

// Event types.
const (
	EventTwin       = "twin"
	EventTelemetry  = "telemetry"
	EventConnection = "connection"
	EventRollup     = "rollup"
	EventTopology   = "topology"
	EventAlert      = "alert"
	EventRule       = "rule"
	EventInbox      = "inbox"
	EventPlugin     = "plugin"
)

// Send is a notification to another entity, sent after the commit. Kind is
// the target's kind when the core knows it ("" lets the caller look it up).
type Send struct {
	To, Kind string
	// Exactly one of the following is set.
	Contrib *Contribution
	Edge    string
	Removed bool
	Gateway *bool
	Message *PluginMessage
}

// PluginMessage is a message from one entity's plugin to another entity.
type PluginMessage struct {
	From, Name string
	Payload    []byte
}

// Action is a rule action to run off the grain, after the commit.
type Action struct {
	// Key makes the action idempotent: "<rule>/<entity>/<seq>/<index>".
	Key    string
	Rule   string
	Entity string
	Parent string
	Action rules.Action
}

// Timers are the local timers the caller keeps for the grain; a zero time
// means none. They are not durable: they only move rules and rollups on
// while the grain is active.
type Timers struct {
	// RuleTick is when the rules must be ticked (a `for` elapsing, a
	// window closing); set means replace, zero with RuleTickSet means cancel.
	RuleTick    time.Time
	RuleTickSet bool
	// RollupAfter asks for a Flush message after this delay.
	RollupAfter time.Duration
}

// DurableTimer is a plugin timer as stored in the grains bucket; the
// caller's timer service fires it (TimerFire) when it is due, even after a
// restart or on another member.
type DurableTimer struct {
	Name string    `json:"name"`
	Due  time.Time `json:"due"`
}

// Notify returns the message the caller sends for s, from entity from.
func (s Send) Notify(from string) *actorspb.Notify {
	n := &actorspb.Notify{From: from}
	switch {
	case s.Contrib != nil:
		edge, _ := edgeOf(s.Edge)
		n.Body = &actorspb.Notify_Contrib{Contrib: s.Contrib.proto(edge, s.Removed)}
	case s.Gateway != nil:
		n.Body = &actorspb.Notify_Gateway{Gateway: &actorspb.GatewayState{Online: *s.Gateway}}
	case s.Message != nil:
		n.From = s.Message.From
		n.Body = &actorspb.Notify_Message{Message: &actorspb.EntityMessage{Name: s.Message.Name, Payload: s.Message.Payload}}
	}
	return n
}
