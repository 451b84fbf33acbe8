package rules

import (
	"fmt"
	"time"
)

// Alert severities, from worst to mildest.
const (
	SeverityCritical = "critical"
	SeverityMajor    = "major"
	SeverityMinor    = "minor"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"
)

// Alert states.
const (
	StateActive       = "active"
	StateAcknowledged = "acknowledged"
	StateCleared      = "cleared"
)

// SeverityRank orders severities: critical 5, major 4, minor 3, warning 2,
// info 1, anything else 0. A rollup's worst severity is the one of highest
// rank.
func SeverityRank(s string) int {
	switch s {
	case SeverityCritical:
		return 5
	case SeverityMajor:
		return 4
	case SeverityMinor:
		return 3
	case SeverityWarning:
		return 2
	case SeverityInfo:
		return 1
	}
	return 0
}

// AlertID returns the deterministic ID of the alert a rule raises on an
// entity: "<rule ID>/<entity ID>". Rule IDs contain no '/', so the first
// '/' separates the two.
func AlertID(ruleID, entity string) string { return ruleID + "/" + entity }

// Alert is the persisted record of one rule's alert on one entity. Its
// lifecycle is active → acknowledged → cleared, and a cleared alert that is
// raised again becomes active again with its count incremented. An Alert is
// a plain value: the grain owns it, persists it and serializes access.
type Alert struct {
	ID        string    `json:"id"`
	RuleID    string    `json:"ruleId"`
	Entity    string    `json:"entity"`
	Severity  string    `json:"severity"`
	Message   string    `json:"message,omitempty"`
	State     string    `json:"state"` // "" until first raised, then active, acknowledged or cleared
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
	Count     int       `json:"count"`
	AckedAt   time.Time `json:"ackedAt,omitzero"`
	ClearedAt time.Time `json:"clearedAt,omitzero"`
}

// NewAlert returns an alert that has not been raised yet (State "").
func NewAlert(ruleID, entity string) *Alert {
	return &Alert{ID: AlertID(ruleID, entity), RuleID: ruleID, Entity: entity}
}

// Open reports whether the alert is active or acknowledged — whether it
// counts in a twin's alerts and in rollups.
func (a *Alert) Open() bool { return a.State == StateActive || a.State == StateAcknowledged }

// Raise records an occurrence at now. A new or cleared alert becomes active
// (FirstSeen is set on the very first raise and kept afterwards; AckedAt and
// ClearedAt are reset); an open alert stays in its state. In every case
// LastSeen becomes now, Count grows by one, and severity and message are
// updated. changed reports whether the state or the severity changed — what
// rollups and a twin's alert list depend on; the record itself always
// changes and must be persisted.
func (a *Alert) Raise(now time.Time, severity, msg string) (changed bool) {
	changed = !a.Open() || a.Severity != severity
	if !a.Open() {
		if a.State == "" {
			a.FirstSeen = now
		}
		a.State = StateActive
		a.AckedAt, a.ClearedAt = time.Time{}, time.Time{}
	}
	if now.After(a.LastSeen) || a.LastSeen.IsZero() {
		a.LastSeen = now
	}
	a.Count++
	a.Severity, a.Message = severity, msg
	return changed
}

// Ack acknowledges an active alert. From any other state it returns an
// error wrapping [ErrInvalidTransition] and changes nothing.
func (a *Alert) Ack(now time.Time) error {
	if a.State != StateActive {
		st := a.State
		if st == "" {
			st = "new"
		}
		return fmt.Errorf("ack alert %s: %w: alert is %s", a.ID, ErrInvalidTransition, st)
	}
	a.State = StateAcknowledged
	a.AckedAt = now
	return nil
}

// Clear clears an open (active or acknowledged) alert and reports whether
// it did; clearing a cleared or never-raised alert is a no-op.
func (a *Alert) Clear(now time.Time) bool {
	if !a.Open() {
		return false
	}
	a.State = StateCleared
	a.ClearedAt = now
	return true
}
