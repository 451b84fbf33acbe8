package twin

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// wireIn is what UnmarshalJSON reads; absent members mean empty.
type wireIn struct {
	ID         string           `json:"id"`
	Kind       string           `json:"kind"`
	Version    int64            `json:"version"`
	Tags       map[string]any   `json:"tags"`
	Desired    map[string]any   `json:"desired"`
	Reported   map[string]any   `json:"reported"`
	Telemetry  map[string]Point `json:"telemetry"`
	Connection *Connection      `json:"connection"`
	Rollup     map[string]any   `json:"rollup"`
	Alerts     json.RawMessage  `json:"alerts"`
	Metadata   struct {
		Desired    any `json:"desired"`
		Reported   any `json:"reported"`
		Rollup     any `json:"rollup"`
		Alerts     any `json:"alerts"`
		Attributes any `json:"attributes"`
	} `json:"metadata"`
}

// MarshalJSON returns the twin document of CONTRACT section 4:
//
//	{"id","kind","version","tags","desired":{"$version":n,…},
//	 "reported":{"$version":n,…},"delta","telemetry","connection",
//	 "rollup","alerts":[…],"metadata":{"alerts":{…},"attributes":{…},
//	 "desired":{…},"reported":{…},"rollup":{…}}}
//
// Object members are in sorted order, so equal twins encode to equal bytes.
// In metadata, every node of desired and reported that has been patched
// carries "$lastUpdated" (RFC 3339) and "$lastUpdatedVersion" (the section
// $version of that patch) next to the metadata of its members. Live state
// carries its own timestamps, since it does not move "version": each
// telemetry point its "ts", the connection its "since", and rollup and
// alerts a {"$lastUpdated": RFC 3339} in metadata, as do the entity's
// attributes (see AttributesChanged); these three are left out of metadata
// while the time is unknown.
func (t *Twin) MarshalJSON() ([]byte, error) {
	// Metadata takes about 70 bytes per property; guess generously so the
	// buffer rarely grows.
	est := 1024 + t.tags.size + 4*(t.desired.size+t.reported.size) + 64*len(t.telemetry) + size(t.rollup)
	return t.appendJSON(make([]byte, 0, est)), nil
}

// appendJSON appends the twin document to b.
func (t *Twin) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, t.id)
	b = append(b, `,"kind":`...)
	b = appendString(b, t.kind)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, t.version, 10)
	b = append(b, `,"tags":`...)
	b = appendObject(b, t.tags.doc)
	b = append(b, `,"desired":`...)
	b = appendSection(b, t.desired)
	b = append(b, `,"reported":`...)
	b = appendSection(b, t.reported)
	b = append(b, `,"delta":`...)
	b = appendObject(b, delta(t.desired.doc, t.reported.doc))
	b = append(b, `,"telemetry":`...)
	b = appendPoints(b, t.telemetry)
	b = append(b, `,"connection":`...)
	b = appendConnection(b, t.conn)
	b = append(b, `,"rollup":`...)
	b = appendObject(b, t.rollup)
	b = append(b, `,"alerts":`...)
	if len(t.alerts) == 0 {
		b = append(b, "[]"...)
	} else {
		b = append(b, t.alerts...)
	}
	b = append(b, `,"metadata":{`...)
	if !t.alertsAt.IsZero() {
		b = appendStamp(b, "alerts", t.alertsAt)
		b = append(b, ',')
	}
	if !t.attrsAt.IsZero() {
		b = appendStamp(b, "attributes", t.attrsAt)
		b = append(b, ',')
	}
	b = append(b, `"desired":`...)
	b = appendMeta(b, t.desired.meta)
	b = append(b, `,"reported":`...)
	b = appendMeta(b, t.reported.meta)
	if !t.rollupAt.IsZero() {
		b = append(b, ',')
		b = appendStamp(b, "rollup", t.rollupAt)
	}
	return append(b, "}}"...)
}

// appendSection appends a section with "$version" as its first member.
func appendSection(b []byte, s section) []byte {
	b = append(b, `{"$version":`...)
	b = strconv.AppendInt(b, s.ver, 10)
	if len(s.doc) == 0 {
		return append(b, '}')
	}
	b = append(b, ',')
	b = appendMembers(b, s.doc)
	return append(b, '}')
}

// UnmarshalJSON replaces the state of t with the document b, as written by
// MarshalJSON; "delta" is ignored and recomputed. Absent members mean empty
// (connection: "disconnected"); an absent or empty id or kind keeps the
// current one. "version" is taken as it is: documents written when live
// state still moved it carry higher versions, and go on from there.
// Metadata that does not match the structure of its section is dropped, as
// is a "$lastUpdated" of rollup, alerts or attributes that is not an
// RFC 3339 time (the time is then unknown). Sections may not hold members
// starting with '$' other than "$version" at the top of desired and
// reported. On error t is unchanged and the error wraps ErrMalformed or
// ErrReservedKey.
func (t *Twin) UnmarshalJSON(b []byte) error {
	var w wireIn
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: twin document: %v", ErrMalformed, err)
	}
	n := New(t.id, t.kind)
	if w.ID != "" {
		n.id = w.ID
	}
	if w.Kind != "" {
		n.kind = w.Kind
	}
	n.version = w.Version
	var err error
	if n.tags, err = loadSection(Tags, w.Tags, nil); err != nil {
		return err
	}
	if n.desired, err = loadSection(Desired, w.Desired, w.Metadata.Desired); err != nil {
		return err
	}
	if n.reported, err = loadSection(Reported, w.Reported, w.Metadata.Reported); err != nil {
		return err
	}
	for k, p := range w.Telemetry {
		n.telemetry[k] = p
	}
	if w.Connection != nil {
		n.conn = *w.Connection
	}
	if w.Rollup != nil {
		n.rollup = w.Rollup
	}
	if len(w.Alerts) > 0 {
		a, ok := canonicalArray(w.Alerts)
		if !ok {
			return fmt.Errorf("%w: twin document: alerts is not an array", ErrMalformed)
		}
		n.alerts = a
	}
	n.rollupAt = loadStamp(w.Metadata.Rollup)
	n.alertsAt = loadStamp(w.Metadata.Alerts)
	n.attrsAt = loadStamp(w.Metadata.Attributes)
	*t = *n
	return nil
}

// appendStamp appends the metadata member `"name":{"$lastUpdated":"…"}`.
func appendStamp(b []byte, name string, at time.Time) []byte {
	b = appendString(b, name)
	b = append(b, `:{"$lastUpdated":`...)
	b = appendTime(b, at)
	return append(b, '}')
}

// loadStamp returns the "$lastUpdated" time of the decoded metadata object
// v, in UTC, or the zero time if there is none that is an RFC 3339 time in
// years 0000–9999.
func loadStamp(v any) time.Time {
	m, _ := v.(map[string]any)
	s, _ := m["$lastUpdated"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	at, _ = jsonTime(at)
	return at
}

// loadSection checks a decoded section and, for desired and reported, takes
// "$version" out of it and rebuilds its metadata from meta.
func loadSection(s Section, doc map[string]any, meta any) (section, error) {
	sec := section{doc: doc}
	if sec.doc == nil {
		sec.doc = map[string]any{}
	}
	if s != Tags {
		if v, ok := sec.doc["$version"]; ok {
			f, ok := v.(float64)
			if !ok || f != math.Trunc(f) || f < 0 || f >= 1<<63 {
				return section{}, fmt.Errorf("%w: twin document: %s $version is not a version number", ErrMalformed, s)
			}
			sec.ver = int64(f)
			delete(sec.doc, "$version")
		}
		sec.meta = loadMeta(meta, sec.doc)
	}
	if k := reservedKey(sec.doc); k != "" {
		return section{}, fmt.Errorf("%w: twin document: %s holds %q", ErrReservedKey, s, k)
	}
	sec.size = size(sec.doc)
	return sec, nil
}

// Interface guards.
var (
	_ json.Marshaler   = (*Twin)(nil)
	_ json.Unmarshaler = (*Twin)(nil)
)
