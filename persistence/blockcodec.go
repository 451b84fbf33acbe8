package persistence

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Telemetry blocks (schema 8). One bbolt entry per record cost ~40 bytes
// beside the record itself — its key (device, time, seq), bbolt's leaf
// element header — and every record repeated its point names. When the
// ingest log moves into the telemetry bucket, a device's consecutive
// records are therefore packed into blocks: one entry, keyed by the key
// of its first record, holding up to blockMaxRecords records with their
// timestamps as deltas and their point names in one table. A device's
// entries, blocks or records of their own, never overlap: every record of
// an entry sorts after every record of the entries before it, so a scan in
// key order still reads the records in order (telemetryscan.go).
//
// A block: recordBlock; uvarint record count; uvarint last ns − first ns;
// uvarint seq of the last record; uvarint count of names, each uvarint
// length and bytes; then per record uvarint ns − previous ns (0 for the
// first, whose ns is the key's), uvarint seq, uvarint body length and the
// body: the binary record form after its leading byte (recordcodec.go),
// with each point name replaced by its uvarint index in the name table.
// The header holds the last record's position so that a write can tell
// whether a block reaches its timestamp without reading the records.
const recordBlock = 0xB2

// Limits of one block. A block is rewritten whenever the log moves records
// of its device in, so it is kept well under a page: BenchmarkTelemetryAppend
// found these to keep the move's cost level with storing records one by one.
const (
	blockMaxRecords = 64
	blockMaxBytes   = 1536
	blockMaxNames   = 32
)

// blockRec is one record of a block: its position and its body, which
// aliases the block it was read from.
type blockRec struct {
	ns   int64
	seq  uint32
	body []byte
}

// blockHead reads the header of block v whose key holds firstNs: the
// number of records and the position of the last one.
func blockHead(v []byte, firstNs int64) (count int, lastNs int64, lastSeq uint32, err error) {
	d := recordDecoder{b: v}
	if d.byte() != recordBlock {
		d.fail("not a block")
	}
	n := d.uvarint()
	span := d.uvarint()
	ls := d.uvarint()
	switch {
	case d.err != nil:
		return 0, 0, 0, d.err
	case n == 0 || n > uint64(len(d.b)):
		return 0, 0, 0, fmt.Errorf("%w: telemetry block: bad record count %d", ErrCorrupt, n)
	case span > uint64(math.MaxInt64-firstNs):
		return 0, 0, 0, fmt.Errorf("%w: telemetry block: span beyond 2262", ErrCorrupt)
	case ls > math.MaxUint32:
		return 0, 0, 0, fmt.Errorf("%w: telemetry block: bad last seq", ErrCorrupt)
	}
	return int(n), firstNs + int64(span), uint32(ls), nil
}

// blockNames reads the header of block v whose key holds firstNs and its
// name table: the number of records, the last one's position, the names,
// and the offset of the first record in v.
func blockNames(v []byte, firstNs int64) (count int, lastNs int64, lastSeq uint32, names []string, off int, err error) {
	if count, lastNs, lastSeq, err = blockHead(v, firstNs); err != nil {
		return 0, 0, 0, nil, 0, err
	}
	d := recordDecoder{b: v}
	d.byte()
	d.uvarint()
	d.uvarint()
	d.uvarint()
	// Never nil, even empty: a nil table means names spelt out.
	names = make([]string, d.count())
	for i := range names {
		names[i] = d.str()
	}
	if d.err != nil {
		return 0, 0, 0, nil, 0, d.err
	}
	return count, lastNs, lastSeq, names, len(v) - len(d.b), nil
}

// extendBlock returns block v, of count records from firstNs to lastNs
// starting at offset off, with recs appended; recs follow v's last record,
// in order, and their bodies index names, v's table with any new names
// appended. v's records are copied as they are, not parsed.
func extendBlock(v []byte, off, count int, firstNs, lastNs int64, names []string, recs []blockRec) []byte {
	n := len(v) + 8
	for _, s := range names {
		n += len(s) + 1
	}
	for _, r := range recs {
		n += len(r.body) + 4
	}
	last := recs[len(recs)-1]
	b := make([]byte, 1, n)
	b[0] = recordBlock
	b = binary.AppendUvarint(b, uint64(count+len(recs)))
	b = binary.AppendUvarint(b, uint64(last.ns-firstNs))
	b = binary.AppendUvarint(b, uint64(last.seq))
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, s := range names {
		b = appendString(b, s)
	}
	b = append(b, v[off:]...)
	return appendRecs(b, lastNs, recs)
}

// appendRecs appends recs to a block's records, the first a delta from
// prev.
func appendRecs(b []byte, prev int64, recs []blockRec) []byte {
	for _, r := range recs {
		b = binary.AppendUvarint(b, uint64(r.ns-prev))
		b = binary.AppendUvarint(b, uint64(r.seq))
		b = binary.AppendUvarint(b, uint64(len(r.body)))
		b = append(b, r.body...)
		prev = r.ns
	}
	return b
}

// parseBlock splits block v, stored under the key of (firstNs, firstSeq),
// into its names and records, checking that the records are in strictly
// increasing (ns, seq) order from the key's position to the header's last
// one. The bodies alias v; they are checked when decoded.
func parseBlock(v []byte, firstNs int64, firstSeq uint32) (names []string, recs []blockRec, err error) {
	names, n, err := walkBlock(v, firstNs, firstSeq, func(r blockRec) { recs = append(recs, r) })
	if err != nil {
		return nil, nil, err
	}
	return names, recs[:n:n], nil
}

// walkBlock checks block v as parseBlock does and calls add with each of
// its records in order, returning the names and the number of records.
// On an error add may have been called with some of them.
func walkBlock(v []byte, firstNs int64, firstSeq uint32, add func(blockRec)) (names []string, n int, err error) {
	n, lastNs, lastSeq, names, off, err := blockNames(v, firstNs)
	if err != nil {
		return nil, 0, err
	}
	d := recordDecoder{b: v[off:]}
	ns, seq := firstNs, firstSeq
	for i := range n {
		dns, s, size := d.uvarint(), d.uvarint(), d.uvarint()
		if d.err != nil {
			break
		}
		switch {
		case s > math.MaxUint32 || dns > uint64(math.MaxInt64-ns):
			d.fail("bad record position")
		case i == 0 && (dns != 0 || uint32(s) != firstSeq):
			d.fail("first record is not the key's")
		case i > 0 && dns == 0 && uint32(s) <= seq:
			d.fail("records out of order")
		case size > uint64(len(d.b)):
			d.fail("record beyond the block")
		}
		if d.err != nil {
			break
		}
		ns, seq = ns+int64(dns), uint32(s)
		add(blockRec{ns: ns, seq: seq, body: d.bytes(int(size))})
	}
	switch {
	case d.err != nil:
		return nil, 0, d.err
	case len(d.b) != 0:
		return nil, 0, fmt.Errorf("%w: telemetry block: trailing bytes", ErrCorrupt)
	case ns != lastNs || seq != lastSeq:
		return nil, 0, fmt.Errorf("%w: telemetry block: last record is not the header's", ErrCorrupt)
	}
	return names, n, nil
}

// encodeBlock returns the block of recs (at least one, in strictly
// increasing (ns, seq) order) whose bodies index names. Its key is that
// of recs[0].
func encodeBlock(names []string, recs []blockRec) []byte {
	n := 16
	for _, s := range names {
		n += len(s) + 1
	}
	for _, r := range recs {
		n += len(r.body) + 4
	}
	first, last := recs[0], recs[len(recs)-1]
	b := make([]byte, 1, n)
	b[0] = recordBlock
	b = binary.AppendUvarint(b, uint64(len(recs)))
	b = binary.AppendUvarint(b, uint64(last.ns-first.ns))
	b = binary.AppendUvarint(b, uint64(last.seq))
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, s := range names {
		b = appendString(b, s)
	}
	return appendRecs(b, first.ns, recs)
}

// nameTable is the name table of a block being built. Blocks hold a few
// names, so a linear search beats a map.
type nameTable struct{ names []string }

func (t *nameTable) id(name string) int {
	for i, s := range t.names {
		if s == name {
			return i
		}
	}
	t.names = append(t.names, name)
	return len(t.names) - 1
}

// indexBody appends to dst the body of the binary record src (after its
// leading byte), with point names as indexes into t, which it extends.
// srcNames is nil when src spells its names out (a record of its own), or
// the table src's indexes refer to (a body of another block). Values and
// the fields after the points are copied as they are.
func indexBody(dst, src []byte, srcNames []string, t *nameTable) ([]byte, error) {
	d := recordDecoder{b: src}
	n := d.count()
	dst = binary.AppendUvarint(dst, uint64(n))
	for range n {
		var name string
		if srcNames == nil {
			name = d.str()
		} else {
			name = d.name(srcNames)
		}
		tag := d.byte()
		dst = binary.AppendUvarint(dst, uint64(t.id(name)))
		dst = append(dst, tag)
		before := d.b
		switch tag {
		case tagFloat64:
			d.bytes(8)
		case tagFloat32:
			d.bytes(4)
		case tagInt:
			d.varint()
		case tagTrue, tagFalse:
		case tagString:
			d.str()
		default:
			d.fail("unknown value tag")
		}
		if d.err != nil {
			return nil, d.err
		}
		dst = append(dst, before[:len(before)-len(d.b)]...)
	}
	if d.err != nil {
		return nil, d.err
	}
	return append(dst, d.b...), nil
}
