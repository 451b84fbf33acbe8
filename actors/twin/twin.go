package twin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/twinmesh/twinmesh/internal/strictjson"
)

// Section names one of the three sections of a twin that merge patches
// change.
type Section string

// The patchable sections of a twin.
const (
	// Desired holds the properties the back end wants the device to have.
	// It carries a "$version" and metadata.
	Desired Section = "desired"
	// Reported holds the properties the device reports about itself. It
	// carries a "$version" and metadata.
	Reported Section = "reported"
	// Tags holds properties set by the back end for grouping and queries;
	// the device never sees them.
	Tags Section = "tags"
)

// Point is the last-known value of one telemetry point.
type Point struct {
	// Value is a float64, a bool or a string.
	Value any `json:"value"`
	// TS is when the value was measured.
	TS time.Time `json:"ts"`
}

// Connection is the connection state of a device.
type Connection struct {
	// State is "connected" or "disconnected"; a new twin is "disconnected".
	State string `json:"state"`
	// Since is when State began; the zero time is left out of the JSON.
	Since time.Time `json:"since,omitzero"`
	// Node is the cluster member holding the device's session.
	Node string `json:"node,omitempty"`
	// Protocol is how the device is connected ("mqtt", "coap", "coaps"),
	// when the adapter said so.
	Protocol string `json:"protocol,omitempty"`
}

// Change describes one accepted change, for events and persistence. When
// Noop is true nothing changed and the version was not bumped.
type Change struct {
	// Version is the twin version after the change. It is one more than
	// before for a change of desired, reported, tags or the entity's
	// attributes; for telemetry, connection, rollup and alerts (live state)
	// and for a no-op it is the unchanged current version.
	Version int64
	// Section is what changed: "desired", "reported", "tags", "attributes",
	// "telemetry", "connection", "rollup" or "alerts".
	Section string
	// SectionVersion is the $version of desired or reported after the
	// change; 0 for other sections.
	SectionVersion int64
	// Data is what changed: for a patch, the smallest merge patch that has
	// the same effect (members that changed nothing are left out); for
	// telemetry, the points that changed as {"name":{"value":…,"ts":…}};
	// for connection, rollup and alerts, the new value; for attributes,
	// nil (they are kept outside the twin). It is nil when Noop is true.
	// The caller owns it.
	Data json.RawMessage
	// Noop reports that nothing changed.
	Noop bool
}

// section is the state of one patchable section.
type section struct {
	doc  map[string]any // never nil, never mutated once stored
	ver  int64          // $version; stays 0 for tags
	meta *metaNode      // nil for tags, and until the first change
	size int            // size(doc), kept up to date so Patch need not walk doc
}

// newSection returns an empty section.
func newSection() section { return section{doc: map[string]any{}, size: len("{}")} }

// Twin is the twin document of one entity. It is a pure state machine: its
// methods do no IO, start no goroutines and read no clock. Create one with
// New. A Twin is not safe for concurrent use; the owning grain serializes
// access. Twins made by Clone share no mutable state and may be used by
// different goroutines.
type Twin struct {
	id, kind  string
	version   int64
	desired   section
	reported  section
	tags      section
	telemetry map[string]Point
	conn      Connection
	rollup    map[string]any  // never nil, never mutated once stored
	alerts    json.RawMessage // canonical JSON array, never mutated once stored
	// When rollup, alerts and the entity's attributes last changed, in UTC;
	// the zero time when unknown (never changed, or loaded from a document
	// that did not say).
	rollupAt, alertsAt, attrsAt time.Time
}

// New returns an empty twin at version 0: empty sections at $version 0, no
// telemetry, connection "disconnected", empty rollup and no alerts.
func New(id, kind string) *Twin {
	return &Twin{
		id:        id,
		kind:      kind,
		desired:   newSection(),
		reported:  newSection(),
		tags:      newSection(),
		telemetry: map[string]Point{},
		conn:      Connection{State: "disconnected"},
		rollup:    map[string]any{},
		alerts:    json.RawMessage("[]"),
	}
}

// ID returns the entity ID.
func (t *Twin) ID() string { return t.id }

// Kind returns the entity kind ("device", "room", …).
func (t *Twin) Kind() string { return t.kind }

// Version returns the twin version, the document's ETag. It rises by one on
// every accepted change of desired, reported or tags (Patch) and of the
// entity's attributes (AttributesChanged), and only then: telemetry,
// connection, rollup and alerts are live state and leave it unchanged.
func (t *Twin) Version() int64 { return t.version }

// section returns the state of s, or nil for an unknown section.
func (t *Twin) section(s Section) *section {
	switch s {
	case Desired:
		return &t.desired
	case Reported:
		return &t.reported
	case Tags:
		return &t.tags
	}
	return nil
}

// SectionVersion returns the $version of desired or reported; 0 for tags and
// unknown sections.
func (t *Twin) SectionVersion(s Section) int64 {
	if sec := t.section(s); sec != nil {
		return sec.ver
	}
	return 0
}

// Section returns a deep copy of section s, without "$version"; nil for an
// unknown section.
func (t *Twin) Section(s Section) map[string]any {
	if sec := t.section(s); sec != nil {
		return copyObject(sec.doc)
	}
	return nil
}

// Telemetry returns a copy of the last-known telemetry points by name.
func (t *Twin) Telemetry() map[string]Point {
	out := make(map[string]Point, len(t.telemetry))
	for k, p := range t.telemetry {
		out[k] = Point{Value: copyValue(p.Value), TS: p.TS}
	}
	return out
}

// NumericPoints calls f with every telemetry point whose last value is a
// number, without copying the points (Telemetry copies them): the hot path
// of rollups reads them on every message.
func (t *Twin) NumericPoints(f func(name string, v float64)) {
	for k, p := range t.telemetry {
		if v, ok := p.Value.(float64); ok {
			f(k, v)
		}
	}
}

// HasAlerts reports whether the twin lists any open alert, without
// decoding the list.
func (t *Twin) HasAlerts() bool { return len(t.alerts) > len("[]") }

// Connection returns the connection state.
func (t *Twin) Connection() Connection { return t.conn }

// Rollup returns a deep copy of the rollup: aggregates of the subtree of a
// room, building or gateway.
func (t *Twin) Rollup() map[string]any { return copyObject(t.rollup) }

// RollupUpdated returns when the rollup last changed, in UTC; the zero time
// if unknown.
func (t *Twin) RollupUpdated() time.Time { return t.rollupAt }

// Alerts returns a copy of the alerts, a JSON array.
func (t *Twin) Alerts() json.RawMessage { return bytes.Clone(t.alerts) }

// AlertsUpdated returns when the alerts last changed, in UTC; the zero time
// if unknown.
func (t *Twin) AlertsUpdated() time.Time { return t.alertsAt }

// AttributesUpdated returns when the entity's attributes last changed (see
// AttributesChanged), in UTC; the zero time if unknown.
func (t *Twin) AttributesUpdated() time.Time { return t.attrsAt }

// Delta returns the desired members whose value differs from reported.
// Objects are compared member by member, recursively; a member absent from
// reported differs. The result is a deep copy.
func (t *Twin) Delta() map[string]any {
	return copyObject(delta(t.desired.doc, t.reported.doc))
}

// Clone returns an independent copy of t: changes to one are not seen by
// the other. It is cheap, since unchanged parts of the document are shared
// and never mutated.
func (t *Twin) Clone() *Twin {
	c := *t
	c.telemetry = maps.Clone(t.telemetry)
	return &c
}

// Patch applies the JSON merge patch patch (RFC 7396) to section s at time
// now. The patch must be a JSON object and may not name members starting
// with '$' at any level of its object tree (arrays are values and are not
// looked into).
//
// On any error the patch is refused whole and the twin is unchanged; the
// error wraps ErrMalformed, ErrReservedKey, ErrTooDeep, ErrTooLarge or
// ErrUnknownSection. A patch whose result equals the current section is a
// no-op (Change.Noop, no version bump, limits not checked). Otherwise the
// result must fit lim (zero fields mean the defaults), the twin version
// rises by one and, for desired and reported, so does the section $version
// and every metadata node on a changed path is stamped with now and the new
// $version.
func (t *Twin) Patch(s Section, patch []byte, now time.Time, lim Limits) (Change, error) {
	sec := t.section(s)
	if sec == nil {
		return Change{}, fmt.Errorf("%w %q", ErrUnknownSection, s)
	}
	if sec.doc == nil { // a zero Twin rather than one from New
		*sec = newSection()
	}
	if err := strictjson.Check(patch); err != nil {
		return Change{}, fmt.Errorf("%w: %s patch: %v", ErrMalformed, s, err)
	}
	var v any
	if err := json.Unmarshal(patch, &v); err != nil {
		return Change{}, fmt.Errorf("%w: %s patch: %v", ErrMalformed, s, err)
	}
	p, ok := v.(map[string]any)
	if !ok {
		return Change{}, fmt.Errorf("%w: %s patch is %s, not an object", ErrMalformed, s, jsonKind(v))
	}
	if k := reservedKey(p); k != "" {
		return Change{}, fmt.Errorf("%w: %s patch sets %q", ErrReservedKey, s, k)
	}
	next := mergeObject(sec.doc, p)
	diff := diffPatch(sec.doc, next, p)
	if len(diff) == 0 {
		return Change{Version: t.version, Section: string(s), SectionVersion: sec.ver, Noop: true}, nil
	}
	lim = lim.withDefaults()
	if d := depth(next); d > lim.MaxDepth {
		return Change{}, fmt.Errorf("%w: %s would be %d levels deep, the limit is %d", ErrTooDeep, s, d, lim.MaxDepth)
	}
	n := sec.size + sizeChange(sec.doc, next, p)
	if n > lim.MaxSectionBytes {
		return Change{}, fmt.Errorf("%w: %s would be %d bytes, the limit is %d", ErrTooLarge, s, n, lim.MaxSectionBytes)
	}
	data := appendObject(nil, diff)
	t.version++
	sec.doc, sec.size = next, n
	if s != Tags {
		sec.ver++
		sec.meta = stamp(sec.meta, diff, now.UTC().Format(time.RFC3339Nano), sec.ver)
	}
	return Change{Version: t.version, Section: string(s), SectionVersion: sec.ver, Data: data}, nil
}

// jsonKind names the JSON type of a decoded value, for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "an object"
}

// AttributesChanged records that the entity's own attributes (its parent,
// connectedVia, …), which the caller keeps outside the twin, changed at
// now: the twin version rises by one, so that a client holding the old
// ETag must re-read, and metadata.attributes.$lastUpdated becomes now (or
// is left out if now is outside years 0000–9999). It is never a no-op: call
// it only for an accepted change that altered an attribute. Change.Section
// is "attributes" and Change.Data is nil.
func (t *Twin) AttributesChanged(now time.Time) Change {
	t.version++
	t.attrsAt, _ = jsonTime(now)
	return Change{Version: t.version, Section: "attributes"}
}

// SetTelemetry merges points into the last-known telemetry values, each
// with timestamp ts. Values should be float64, bool or string (the caller
// filters); other integer and float types become float64, nil values and
// values JSON cannot represent (NaN, ±Inf) are ignored. A point whose value
// and ts are both unchanged changes nothing; if no point changes, or ts is
// outside years 0000–9999, the result is a no-op. Timestamps are stored in
// UTC. Telemetry is live state: it never changes the twin version.
func (t *Twin) SetTelemetry(points map[string]any, ts time.Time) Change {
	changed := t.mergeTelemetry(points, ts)
	if len(changed) == 0 {
		return Change{Version: t.version, Section: "telemetry", Noop: true}
	}
	data, err := json.Marshal(changed)
	if err != nil { // cannot happen: values are normalized
		return Change{Version: t.version, Section: "telemetry", Noop: true}
	}
	return Change{Version: t.version, Section: "telemetry", Data: data}
}

// MergeTelemetry is SetTelemetry without the change description, for
// callers that describe the message themselves (the entity core's
// telemetry event): encoding it was 3 % of a node's CPU on the ingest path.
// It reports whether any point changed.
func (t *Twin) MergeTelemetry(points map[string]any, ts time.Time) bool {
	return len(t.mergeTelemetry(points, ts)) > 0
}

// mergeTelemetry applies points at ts and returns those that changed.
func (t *Twin) mergeTelemetry(points map[string]any, ts time.Time) map[string]Point {
	ts, ok := jsonTime(ts)
	if !ok {
		return nil
	}
	var changed map[string]Point
	for name, v := range points {
		nv, ok := normalize(v)
		if !ok || nv == nil {
			continue
		}
		name = validString(name)
		if cur, ok := t.telemetry[name]; ok && cur.TS.Equal(ts) && equal(cur.Value, nv) {
			continue
		}
		if changed == nil {
			changed = make(map[string]Point, len(points))
		}
		changed[name] = Point{Value: nv, TS: ts}
	}
	if len(changed) == 0 {
		return nil
	}
	if t.telemetry == nil { // a zero Twin rather than one from New
		t.telemetry = make(map[string]Point, len(changed))
	}
	for name, p := range changed {
		t.telemetry[name] = p
	}
	return changed
}

// SetConnection replaces the connection state; a no-op if c equals the
// current state (Since compared as an instant). Since is stored in UTC, or
// as the zero time if it is outside years 0000–9999. The connection is live
// state: it never changes the twin version.
func (t *Twin) SetConnection(c Connection) Change {
	c.State, c.Node, c.Protocol = validString(c.State), validString(c.Node), validString(c.Protocol)
	c.Since, _ = jsonTime(c.Since)
	if c.State == t.conn.State && c.Node == t.conn.Node && c.Protocol == t.conn.Protocol && c.Since.Equal(t.conn.Since) {
		return Change{Version: t.version, Section: "connection", Noop: true}
	}
	data, _ := json.Marshal(c) // jsonTime made Since encodable
	t.conn = c
	return Change{Version: t.version, Section: "connection", Data: data}
}

// SetRollup replaces the rollup with a copy of r (nil means empty) at time
// now; a no-op if it is deep-equal to the current rollup. Values are stored
// as JSON would decode them (integers become float64); members JSON cannot
// represent are dropped. The rollup is live state: it never changes the
// twin version; metadata.rollup.$lastUpdated records now instead (or is
// left out if now is outside years 0000–9999).
func (t *Twin) SetRollup(r map[string]any, now time.Time) Change {
	n, _ := normalize(r)
	m, _ := n.(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	if equal(m, t.rollup) {
		return Change{Version: t.version, Section: "rollup", Noop: true}
	}
	data, _ := json.Marshal(m) // normalized values always encode
	t.rollup = m
	t.rollupAt, _ = jsonTime(now)
	return Change{Version: t.version, Section: "rollup", Data: data}
}

// SetAlerts replaces the alerts with alerts, which must be a JSON array
// (nil, empty or null mean []), at time now. It is a no-op if the array
// equals the current one, or if alerts is not a JSON array (a caller bug:
// the twin is left unchanged). The array is stored in a canonical encoding.
// Alerts are live state: they never change the twin version;
// metadata.alerts.$lastUpdated records now instead (or is left out if now
// is outside years 0000–9999).
func (t *Twin) SetAlerts(alerts json.RawMessage, now time.Time) Change {
	canon, ok := canonicalArray(alerts)
	if !ok || bytes.Equal(canon, t.alerts) {
		return Change{Version: t.version, Section: "alerts", Noop: true}
	}
	t.alerts = canon
	t.alertsAt, _ = jsonTime(now)
	return Change{Version: t.version, Section: "alerts", Data: bytes.Clone(canon)}
}

// canonicalArray re-encodes a JSON array compactly with sorted object keys;
// empty input and null give []. It reports false when b is not a JSON array.
func canonicalArray(b []byte) (json.RawMessage, bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return json.RawMessage("[]"), true
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, false
	}
	a, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out, err := json.Marshal(a)
	return out, err == nil
}

// jsonTime returns t in UTC without its monotonic reading, and whether it
// can be encoded as RFC 3339 (years 0000–9999); if not, it returns the zero
// time.
func jsonTime(t time.Time) (time.Time, bool) {
	u := t.UTC()
	if y := u.Year(); y < 0 || y > 9999 {
		return time.Time{}, false
	}
	return u, true
}
