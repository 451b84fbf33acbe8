package persistence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"go.etcd.io/bbolt"
)

// The telemetry bucket holds, per device, entries keyed device NUL be64(ns)
// be32(seq): records of their own (binary or JSON, recordcodec.go) and
// blocks of records (blockcodec.go) under the key of their first record.
// This file reads and writes that layout record by record.

// warmRec is one warm record met by a scan. v aliases the transaction's
// memory: it is valid until the scan's callback returns.
type warmRec struct {
	ns  int64
	seq uint32
	// v is the stored form of a record of its own, or a block's body.
	v []byte
	// inBlock tells a block's body; names is then the block's name table.
	inBlock bool
	names   []string
	// err is set for an entry that could not be read (a damaged block).
	err error
}

// decode returns the record.
func (w *warmRec) decode() (TelemetryRecord, error) {
	switch {
	case w.err != nil:
		return TelemetryRecord{}, w.err
	case w.inBlock:
		return decodeBody(w.v, w.ns, w.names)
	}
	return decodeRecord(w.v, w.ns)
}

// json returns the record as JSON, the form records travel in between
// members.
func (w *warmRec) json() ([]byte, error) {
	if w.err == nil && !w.inBlock {
		return recordJSON(w.v, w.ns)
	}
	r, err := w.decode()
	if err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// before reports whether w sorts before position (ns, seq).
func (w *warmRec) before(ns int64, seq uint32) bool {
	return w.ns < ns || (w.ns == ns && w.seq < seq)
}

// isBlock reports whether a stored value is a block.
func isBlock(v []byte) bool { return len(v) > 0 && v[0] == recordBlock }

// ownKey reports whether k is a record key of the device whose range
// starts with prefix.
func ownKey(prefix, k []byte) bool {
	if len(k) != len(prefix)+telemetrySuffix-1 || !bytes.HasPrefix(k, prefix) {
		return false
	}
	_, _, _, ok := parseTelemetryKey(k)
	return ok
}

// entryRecs appends to out the records of the telemetry entry k → v if k is
// a record key of the device whose range starts with prefix; ok is false
// otherwise. A block that cannot be read gives one record with err set.
func entryRecs(out []warmRec, prefix, k, v []byte) (_ []warmRec, ok bool) {
	if !ownKey(prefix, k) {
		return out, false
	}
	_, ns, seq, _ := parseTelemetryKey(k)
	if !isBlock(v) {
		return append(out, warmRec{ns: ns, seq: seq, v: v}), true
	}
	n := len(out)
	names, _, err := walkBlock(v, ns, seq, func(r blockRec) {
		out = append(out, warmRec{ns: r.ns, seq: r.seq, v: r.body, inBlock: true})
	})
	if err != nil {
		return append(out[:n], warmRec{ns: ns, seq: seq, err: fmt.Errorf("telemetry block %x: %w", k, err)}), true
	}
	for i := n; i < len(out); i++ {
		out[i].names = names
	}
	return out, true
}

// lastEntry returns the last entry of c's bucket. bbolt's Cursor.Last
// (v1.5.0) loops forever on a bucket whose leaves were all emptied by
// deletes earlier in the same write transaction (a grain's data reset
// before its next record: the loop that skips empty pages, added by
// etcd-io/bbolt#341, never finds one); First does not, and tells that
// case apart.
func lastEntry(c *bbolt.Cursor) ([]byte, []byte) {
	if k, _ := c.First(); k == nil {
		return nil, nil
	}
	return c.Last()
}

// lastPos returns the position of the last record of entry k → v (its key's
// for a record of its own).
func lastPos(k, v []byte) (ns int64, seq uint32, err error) {
	_, ns, seq, ok := parseTelemetryKey(k)
	if !ok {
		return 0, 0, fmt.Errorf("%w: telemetry key %x", ErrCorrupt, k)
	}
	if !isBlock(v) {
		return ns, seq, nil
	}
	_, ns, seq, err = blockHead(v, ns)
	return ns, seq, err
}

// scanTelemetry calls fn with id's warm records with ns in [from, to], from
// the telemetry bucket and the ingest log, in (ns, seq) order (descending
// if desc), until fn returns false. A record in both (never written so)
// is given once, the bucket's copy.
func scanTelemetry(tx *bbolt.Tx, id string, from, to int64, desc bool, fn func(*warmRec) bool) {
	if from > to {
		return
	}
	prefix := rangeStart(id)
	staged := loggedRecs(tx, id, from, to)
	c := tx.Bucket(bktTelemetry).Cursor()
	var k, v []byte
	if desc {
		// The entry before the first key past `to`: its records before
		// `to`, or all of them, are the newest in range.
		seek := rangeEnd(id)
		if to < math.MaxInt64 {
			seek = telemetryKey(id, to+1, 0)
		}
		if k, _ = c.Seek(seek); k == nil {
			k, v = lastEntry(c)
		} else {
			k, v = c.Prev()
		}
	} else {
		// A block that starts before `from` may reach into the range.
		start := telemetryKey(id, from, 0)
		if k, _ = c.Seek(start); k == nil {
			k, v = lastEntry(c)
		} else {
			k, v = c.Prev()
		}
		if !ownKey(prefix, k) || !isBlock(v) {
			k, v = c.Seek(start)
		} else if lns, _, err := lastPos(k, v); err == nil && lns < from {
			k, v = c.Seek(start)
		}
	}
	buf := make([]warmRec, 0, blockMaxRecords) // one block's records
	bi := 0
	// cur returns the bucket's next record in range, nil when none is left.
	cur := func() *warmRec {
		for {
			for bi < len(buf) {
				w := &buf[bi]
				switch {
				case desc && w.ns > to, !desc && w.ns < from:
					bi++
				case desc && w.ns < from, !desc && w.ns > to:
					buf, k = nil, nil
					return nil
				default:
					return w
				}
			}
			if k == nil || !bytes.HasPrefix(k, prefix) {
				return nil
			}
			var ok bool
			buf, ok = entryRecs(buf[:0], prefix, k, v)
			if ok && desc {
				slices.Reverse(buf)
			}
			if !ok {
				buf = buf[:0]
			}
			bi = 0
			if desc {
				k, v = c.Prev()
			} else {
				k, v = c.Next()
			}
		}
	}
	si, step := 0, 1
	if desc {
		si, step = len(staged)-1, -1
	}
	for {
		w := cur()
		var s *warmRec
		if si >= 0 && si < len(staged) {
			s = &staged[si]
		}
		switch {
		case w == nil && s == nil:
			return
		case w != nil && s != nil && w.ns == s.ns && w.seq == s.seq:
			si += step // never both; the bucket's copy wins
			continue
		case w == nil, s != nil && (s.before(w.ns, w.seq) != desc):
			if !fn(s) {
				return
			}
			si += step
		default:
			if !fn(w) {
				return
			}
			bi++
		}
	}
}

// loggedRecs returns id's records in the ingest log of tx with ns in
// [from, to], in (ns, seq) order.
func loggedRecs(tx *bbolt.Tx, id string, from, to int64) []warmRec {
	var out []warmRec
	for _, e := range logged(tx, id) {
		if _, ns, seq, ok := parseTelemetryKey(e.k); ok && ns >= from && ns <= to {
			out = append(out, warmRec{ns: ns, seq: seq, v: e.v})
		}
	}
	return out
}

// seqAt looks for id's records at ns in the telemetry bucket b: the
// highest seq among them (found false when there is none), and whether a
// block holds records at ns or reaches past it (inBlock), in which case a
// new record at ns must go into that block, not beside it.
func seqAt(b *bbolt.Bucket, id string, ns int64) (seq uint32, found, inBlock bool, err error) {
	prefix := rangeStart(id)
	at := telemetryKey(id, ns, 0)
	at = at[:len(at)-4] // id NUL be64(ns)
	c := b.Cursor()
	k, _ := c.Seek(at)
	hit := k != nil && bytes.HasPrefix(k, at)
	var pk, pv []byte
	if k == nil {
		pk, pv = lastEntry(c)
	} else {
		pk, pv = c.Prev()
	}
	var buf []warmRec
	consider := func(k, v []byte) error {
		var ok bool
		if buf, ok = entryRecs(buf[:0], prefix, k, v); !ok {
			return nil
		}
		for _, w := range buf {
			if w.err != nil {
				return w.err
			}
			if w.ns == ns && (!found || w.seq > seq) {
				seq, found = w.seq, true
			}
		}
		return nil
	}
	// The hot path: the device's newest entry, before ns. Only its header
	// is read unless it reaches ns.
	if ownKey(prefix, pk) && isBlock(pv) {
		lns, _, err := lastPos(pk, pv)
		if err != nil {
			return 0, false, false, err
		}
		if lns >= ns {
			inBlock = true
			if err := consider(pk, pv); err != nil {
				return 0, false, false, err
			}
		}
	}
	if hit {
		for k, v := c.Seek(at); k != nil && bytes.HasPrefix(k, at); k, v = c.Next() {
			inBlock = inBlock || isBlock(v)
			if err := consider(k, v); err != nil {
				return 0, false, false, err
			}
		}
	}
	return seq, found, inBlock, nil
}

// packRecords stores recs (id's records as kept in the ingest log, in key
// order, none already stored) in the telemetry bucket b, packed into
// blocks. Records that come after every stored record of id, as they do
// unless a device's clock went back, extend its newest block while it has
// room (without reading that block's records); otherwise the entries from
// the one that holds or precedes the first new record to the device's end
// are read, merged with the new ones and packed again.
func packRecords(b *bbolt.Bucket, id string, recs []kv) error {
	prefix := rangeStart(id)
	items := make([]warmRec, 0, len(recs))
	for _, r := range recs {
		_, ns, seq, ok := parseTelemetryKey(r.k)
		if !ok {
			return fmt.Errorf("%w: telemetry key %x", ErrCorrupt, r.k)
		}
		items = append(items, warmRec{ns: ns, seq: seq, v: r.v})
	}
	c := b.Cursor()
	var k, v []byte
	if k, _ = c.Seek(rangeEnd(id)); k == nil {
		k, v = lastEntry(c)
	} else {
		k, v = c.Prev()
	}
	if ownKey(prefix, k) {
		lns, lseq, err := lastPos(k, v)
		if err != nil {
			return err
		}
		first := &items[0]
		switch {
		case first.before(lns, lseq) || (first.ns == lns && first.seq == lseq):
			old, err := takeFrom(c, prefix, first.ns, first.seq)
			if err != nil {
				return err
			}
			items = mergeRecs(old, items)
		case isBlock(v) && len(v) < blockMaxBytes:
			n, err := extendTail(b, k, v, items)
			if err != nil {
				return err
			}
			items = items[n:]
		case len(v) > 0 && v[0] == recordBinary:
			// A record of its own (stored before schema 8) starts the block.
			old, _ := entryRecs(nil, prefix, k, v)
			items = mergeRecs(old, items)
		}
	}
	return putPacked(b, id, items)
}

// extendTail appends to the block k → v, the device's newest entry, the
// leading items (which follow it) that fit, and returns how many it took.
func extendTail(b *bbolt.Bucket, k, v []byte, items []warmRec) (int, error) {
	_, firstNs, _, _ := parseTelemetryKey(k)
	count, lastNs, _, names, off, err := blockNames(v, firstNs)
	if err != nil {
		return 0, fmt.Errorf("telemetry block %x: %w", k, err)
	}
	t := nameTable{names: names}
	size := len(v) - off
	var add []blockRec
	var arena []byte
	for i := range items {
		it := &items[i]
		if count+len(add) >= blockMaxRecords || size+len(it.v) > blockMaxBytes || len(t.names) >= blockMaxNames ||
			len(it.v) == 0 || it.v[0] != recordBinary {
			break
		}
		start := len(arena)
		if arena, err = indexBody(arena, it.v[1:], nil, &t); err != nil {
			return 0, fmt.Errorf("telemetry at %d: %w", it.ns, err)
		}
		add = append(add, blockRec{ns: it.ns, seq: it.seq, body: arena[start:len(arena):len(arena)]})
		size += len(arena) - start + 4
	}
	if len(add) == 0 {
		return 0, nil
	}
	return len(add), b.Put(k, extendBlock(v, off, count, firstNs, lastNs, t.names, add))
}

// takeFrom deletes, from the bucket of cursor c, the device entries (range
// prefix) from the one that holds or precedes position (ns, seq) to the
// device's last, and returns their records, copied.
func takeFrom(c *bbolt.Cursor, prefix []byte, ns int64, seq uint32) ([]warmRec, error) {
	start := append(bytes.Clone(prefix), telemetryKey("", ns, seq)[1:]...)
	k, _ := c.Seek(start)
	from := k
	if k == nil || !bytes.Equal(k, start) {
		// The entry before may be a block that holds the position.
		var pk []byte
		if k == nil {
			pk, _ = lastEntry(c)
		} else {
			pk, _ = c.Prev()
		}
		if ownKey(prefix, pk) {
			from = pk
		}
	}
	if from == nil {
		return nil, nil
	}
	var keys [][]byte
	var out []warmRec
	for k, v := c.Seek(bytes.Clone(from)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		n := len(out)
		var ok bool
		if out, ok = entryRecs(out, prefix, k, v); !ok {
			continue
		}
		for i := n; i < len(out); i++ {
			if out[i].err != nil {
				return nil, out[i].err
			}
			out[i].v = bytes.Clone(out[i].v)
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := c.Bucket().Delete(k); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// mergeRecs merges two lists in (ns, seq) order; a position in both keeps
// a's record.
func mergeRecs(a, b []warmRec) []warmRec {
	out := make([]warmRec, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i].before(b[j].ns, b[j].seq)):
			out = append(out, a[i])
			i++
		case i < len(a) && a[i].ns == b[j].ns && a[i].seq == b[j].seq:
			out = append(out, a[i])
			i, j = i+1, j+1
		default:
			out = append(out, b[j])
			j++
		}
	}
	return out
}

// putPacked stores id's records items, in (ns, seq) order, as blocks; a
// JSON record stays a record of its own between two blocks.
func putPacked(b *bbolt.Bucket, id string, items []warmRec) error {
	b.FillPercent = telemetryFill
	var t nameTable
	var cur []blockRec
	var arena []byte
	size := 0
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		err := b.Put(telemetryKey(id, cur[0].ns, cur[0].seq), encodeBlock(t.names, cur))
		cur, size, t.names = cur[:0], 0, nil
		return err
	}
	for i := range items {
		it := &items[i]
		if !it.inBlock && (len(it.v) == 0 || it.v[0] != recordBinary) {
			if err := flush(); err != nil {
				return err
			}
			if err := b.Put(telemetryKey(id, it.ns, it.seq), it.v); err != nil {
				return err
			}
			continue
		}
		if len(cur) >= blockMaxRecords || (len(cur) > 0 && (size+len(it.v) > blockMaxBytes || len(t.names) >= blockMaxNames)) {
			if err := flush(); err != nil {
				return err
			}
		}
		start := len(arena)
		var err error
		if it.inBlock {
			arena, err = indexBody(arena, it.v, it.names, &t)
		} else {
			arena, err = indexBody(arena, it.v[1:], nil, &t)
		}
		if err != nil {
			return fmt.Errorf("telemetry %s at %d: %w", id, it.ns, err)
		}
		cur = append(cur, blockRec{ns: it.ns, seq: it.seq, body: arena[start:len(arena):len(arena)]})
		size += len(arena) - start + 4
	}
	return flush()
}
