package persistence

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.etcd.io/bbolt"
)

// GrainState summarises what this node holds of one grain, so that a new
// owner can pick the newest copy: Epoch.Wrote, then Epoch.Seq order the
// copies (see Epoch); the other fields break ties and tell copies apart.
type GrainState struct {
	Epoch           Epoch `json:"epoch"` // Fence, Wrote and Seq of the grain here
	HasEntity       bool  `json:"hasEntity"`
	HasTwin         bool  `json:"hasTwin"`
	TwinVersion     int64 `json:"twinVersion"`     // the "version" member of the stored twin JSON document, 0 if none
	Telemetry       int   `json:"telemetry"`       // number of warm telemetry records of the id
	NewestTelemetry int64 `json:"newestTelemetry"` // unix ns of the newest record, 0 if none
	Inbox           int   `json:"inbox"`           // number of inbox messages
	Outbox          int   `json:"outbox"`          // number of outbox entries
}

// GrainState returns what this node holds of grain id, read in one
// transaction, so that a new owner can compare the copies of its replicas.
// TwinVersion is 0 when the twin is absent, not a JSON object, or has no
// numeric "version" member (a fractional one is truncated). Counting the
// telemetry walks the id's keys: cheap, but linear in its warm history. An
// id that is empty or contains NUL is ErrInvalid.
func (db *DB) GrainState(id string) (GrainState, error) {
	var st GrainState
	if err := checkPrefixID("grain id", id); err != nil {
		return st, err
	}
	k := []byte(id)
	err := db.view(func(tx *bbolt.Tx) error {
		var err error
		if st.Epoch, err = decodeEpoch(tx.Bucket(bktEpochs).Get(k)); err != nil {
			return fmt.Errorf("grain state %s: %w", id, err)
		}
		st.HasEntity = tx.Bucket(bktEntities).Get(k) != nil
		if doc := tx.Bucket(bktTwins).Get(k); doc != nil {
			st.HasTwin = true
			st.TwinVersion = twinVersion(doc)
		}
		prefix := rangeStart(id)
		scanTelemetry(tx, id, 0, math.MaxInt64, false, func(w *warmRec) bool {
			st.Telemetry++
			st.NewestTelemetry = w.ns // in time order
			return true
		})
		c := tx.Bucket(bktInbox).Cursor()
		for ik, _ := c.Seek(prefix); ik != nil && bytes.HasPrefix(ik, prefix); ik, _ = c.Next() {
			st.Inbox++
		}
		c = tx.Bucket(bktOutbox).Cursor()
		for ok, _ := c.Seek(prefix); ok != nil && bytes.HasPrefix(ok, prefix); ok, _ = c.Next() {
			st.Outbox++
		}
		return nil
	})
	if err != nil {
		return GrainState{}, err
	}
	return st, nil
}

// twinVersion returns the "version" member of a twin document, 0 if it has
// none that is a number.
func twinVersion(doc []byte) int64 {
	var d struct {
		Version json.Number `json:"version"`
	}
	if json.Unmarshal(doc, &d) != nil || d.Version == "" {
		return 0
	}
	if n, err := d.Version.Int64(); err == nil {
		return n
	}
	if f, err := d.Version.Float64(); err == nil && f > math.MinInt64 && f < math.MaxInt64 {
		return int64(f)
	}
	return 0
}

// GrainSnapshot returns wire ops that recreate id's grain-scoped data on
// another node: when afterNS == 0 first a twin.put of the stored twin (if
// any), an inbox.put per inbox message and an outbox.put per outbox entry,
// then telemetry ops for records
// with timestamp > afterNS, oldest first, at most limit telemetry ops; next
// is the ns of the last telemetry record returned, or 0 when there are no
// more.
//
// It exists so that a new replica (or a new owner with an outdated copy)
// can be brought up to date page by page, each page read in one
// transaction, and applied with FromWire and Commit. Applying a page twice
// or overlapping pages is harmless (puts replace, telemetry ops from
// FromWire are idempotent). afterNS == 0 also includes a record at exactly
// the Unix epoch; should the page end on it with more to come, one more
// record is added, since next == 0 would read as the end. Records sharing a
// timestamp (which grains never write) are sent once, as a replica keeps one
// per timestamp anyway. limit <= 0 means DefaultTelemetryLimit; it is capped
// at MaxTelemetryLimit. ops is never nil. An invalid id or a negative
// afterNS is ErrInvalid. The entity is not part of it (it is catalog data:
// CatalogSnapshot), nor is the epoch record: a copier records how new its
// copy is only once every page landed (CopiedEpoch), as the pages are read
// at different moments.
func (db *DB) GrainSnapshot(id string, afterNS int64, limit int) (ops []WireOp, next int64, err error) {
	if err := checkPrefixID("grain id", id); err != nil {
		return nil, 0, err
	}
	if afterNS < 0 {
		return nil, 0, fmt.Errorf("%w: negative afterNS %d", ErrInvalid, afterNS)
	}
	switch {
	case limit <= 0:
		limit = DefaultTelemetryLimit
	case limit > MaxTelemetryLimit:
		limit = MaxTelemetryLimit
	}
	ops = []WireOp{}
	err = db.view(func(tx *bbolt.Tx) error {
		prefix := rangeStart(id)
		start := int64(0) // afterNS == 0: from the first record, ns 0 included
		if afterNS > 0 {
			if afterNS == math.MaxInt64 {
				return nil
			}
			start = afterNS + 1
		} else {
			if v := tx.Bucket(bktTwins).Get([]byte(id)); v != nil {
				ops = append(ops, WireOp{T: wireTwinPut, K: id, V: bytes.Clone(v)})
			}
			c := tx.Bucket(bktInbox).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				ops = append(ops, WireOp{T: wireInboxPut, K: id, V: bytes.Clone(v)})
			}
			c = tx.Bucket(bktOutbox).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				if len(k) == len(prefix)+8 {
					ops = append(ops, WireOp{T: wireOutboxPut, K: id, K2: strconv.FormatUint(binary.BigEndian.Uint64(k[len(prefix):]), 10), V: bytes.Clone(v)})
				}
			}
		}
		n, last := 0, int64(-1)
		var serr error
		scanTelemetry(tx, id, start, math.MaxInt64, false, func(w *warmRec) bool {
			ns := w.ns
			if ns == last {
				return true
			}
			if n >= limit && last != 0 {
				next = last
				return false
			}
			jv, jerr := w.json()
			if jerr != nil {
				serr = fmt.Errorf("grain snapshot %s: telemetry at %d: %w", id, ns, jerr)
				return false
			}
			ops = append(ops, WireOp{T: wireTelemetry, K: id, V: bytes.Clone(jv)})
			n, last = n+1, ns
			return true
		})
		return serr
	})
	if err != nil {
		return nil, 0, err
	}
	return ops, next, nil
}

// catalogSections are the buckets of the catalog, in CatalogSnapshot order.
var catalogSections = []struct {
	name   string // in cursors
	bucket []byte
	t      string // wire type of its ops
}{
	{"entities", bktEntities, wireEntityPut},
	{"identities", bktIdentities, wireIdentityPut},
	{string(BucketRules), []byte(BucketRules), wireDocPut},
	{string(BucketAlerts), []byte(BucketAlerts), wireDocPut},
	{string(BucketContrib), []byte(BucketContrib), wireDocPut},
	{string(BucketGrants), []byte(BucketGrants), wireDocPut},
	{string(BucketTombstones), []byte(BucketTombstones), wireDocPut},
	{string(BucketGrains), []byte(BucketGrains), wireDocPut},
	{string(BucketMembers), []byte(BucketMembers), wireDocPut},
	{string(BucketTokens), []byte(BucketTokens), wireDocPut},
	{string(BucketModels), []byte(BucketModels), wireDocPut},
	{string(BucketJobs), []byte(BucketJobs), wireDocPut},
	{string(BucketAMQP), []byte(BucketAMQP), wireDocPut},
}

// CatalogSnapshot returns the catalog (every entity, identity and document
// of every doc bucket) as entity.put / identity.put / doc.put wire ops, in a
// stable order, at most limit per page; cursor "" starts, next "" means
// done.
//
// It exists so that a node joining the cluster can copy the cluster-wide
// data from a member, page by page, each page read in one transaction, and
// apply it with FromWire and Commit (which rebuilds the indexes). The order
// is entities, identities, then the doc buckets (rules, alerts, contrib,
// grants, tombstones, grains, members, tokens), each in key order. The cursor is opaque and safe in JSON and URLs
// (section name and base64url of the last key); one not made by
// CatalogSnapshot is ErrInvalid. Entries written between pages show up if
// they sort after the cursor. limit <= 0 means DefaultListLimit. ops is never
// nil.
func (db *DB) CatalogSnapshot(cursor string, limit int) (ops []WireOp, next string, err error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	sec, after, err := parseCatalogCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	ops = []WireOp{}
	err = db.view(func(tx *bbolt.Tx) error {
		for si := sec; si < len(catalogSections); si++ {
			s := catalogSections[si]
			c := tx.Bucket(s.bucket).Cursor()
			k, v := c.First()
			if si == sec && after != nil {
				k, v = c.Seek(after)
				if k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil; k, v = c.Next() {
				if len(ops) == limit {
					last := ops[len(ops)-1]
					next = catalogCursor(last)
					return nil
				}
				w := WireOp{T: s.t, K: string(k), V: bytes.Clone(v)}
				if s.t == wireDocPut {
					w.B = s.name
				}
				ops = append(ops, w)
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return ops, next, nil
}

// catalogCursor returns the cursor that resumes after w.
func catalogCursor(w WireOp) string {
	name := w.B
	switch w.T {
	case wireEntityPut:
		name = "entities"
	case wireIdentityPut:
		name = "identities"
	}
	return name + ":" + base64.RawURLEncoding.EncodeToString([]byte(w.K))
}

// parseCatalogCursor returns the section index and the key to resume after
// (nil: from the section's start).
func parseCatalogCursor(cursor string) (section int, after []byte, err error) {
	if cursor == "" {
		return 0, nil, nil
	}
	name, enc, ok := strings.Cut(cursor, ":")
	if ok {
		for i, s := range catalogSections {
			if s.name != name {
				continue
			}
			if after, err = base64.RawURLEncoding.DecodeString(enc); err == nil && len(after) > 0 {
				return i, after, nil
			}
			break
		}
	}
	return 0, nil, fmt.Errorf("%w: catalog cursor %q", ErrInvalid, cursor)
}
