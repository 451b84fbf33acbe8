package persistence

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Telemetry records are stored in a compact binary form (schema 6): JSON
// spent ~120 bytes and a reflective encode on a message such as
// {"temperature":21.5,"humidity":40,"seq":7} with a message ID, and its
// timestamp repeated what the key holds. Records stored before, and
// records of types the binary form does not cover, are JSON, which starts
// with '{'; both are read. Between members records still travel as JSON
// (WireOp), so members of different versions understand each other.
//
// The binary form: recordBinary, uvarint point count, then per point
// uvarint name length, name, a tag and the value; then message ID, content
// type and raw payload, each uvarint length and bytes; then a uvarint count
// of properties and their names and values, likewise. The timestamp is the
// key's.
const recordBinary = 0xB1

// Value tags of a point.
const (
	tagFloat64 = 1 // 8 bytes, little endian
	tagInt     = 2 // zigzag varint of an integral value within ±2^53
	tagTrue    = 3
	tagFalse   = 4
	tagString  = 5 // uvarint length, bytes
	tagFloat32 = 6 // 4 bytes, little endian, of a value float32 holds exactly
)

// encodeRecord returns the stored form of r: binary, or JSON when a point
// has a type the binary form does not cover.
func encodeRecord(r TelemetryRecord) ([]byte, error) {
	n := 8 + len(r.MessageID) + len(r.ContentType) + len(r.Raw)
	for k, v := range r.Points {
		n += len(k) + 11
		if s, ok := v.(string); ok {
			n += len(s)
		}
	}
	for k, v := range r.Properties {
		n += len(k) + len(v) + 4
	}
	b := make([]byte, 1, n)
	b[0] = recordBinary
	b = binary.AppendUvarint(b, uint64(len(r.Points)))
	for k, v := range r.Points {
		b = appendString(b, k)
		switch x := v.(type) {
		case float64:
			switch {
			case x == math.Trunc(x) && math.Abs(x) <= 1<<53 && !(x == 0 && math.Signbit(x)):
				b = append(b, tagInt)
				b = binary.AppendVarint(b, int64(x))
			case float64(float32(x)) == x:
				b = append(b, tagFloat32)
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(x)))
			default:
				b = append(b, tagFloat64)
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
			}
		case bool:
			if x {
				b = append(b, tagTrue)
			} else {
				b = append(b, tagFalse)
			}
		case string:
			b = append(b, tagString)
			b = appendString(b, x)
		default:
			return json.Marshal(r)
		}
	}
	b = appendString(b, r.MessageID)
	b = appendString(b, r.ContentType)
	b = appendString(b, string(r.Raw))
	b = binary.AppendUvarint(b, uint64(len(r.Properties)))
	for k, v := range r.Properties {
		b = appendString(appendString(b, k), v)
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeRecord decodes a stored record, binary or JSON; ns is the
// timestamp of its key.
func decodeRecord(v []byte, ns int64) (TelemetryRecord, error) {
	if len(v) == 0 || v[0] != recordBinary {
		var r TelemetryRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return TelemetryRecord{}, err
		}
		return r, nil
	}
	return decodeBody(v[1:], ns, nil)
}

// decodeBody decodes the binary form after its leading byte. With names
// (the body of a record in a block, see blockcodec.go) a point's name is
// a uvarint index into names instead of the string itself.
func decodeBody(b []byte, ns int64, names []string) (TelemetryRecord, error) {
	d := recordDecoder{b: b}
	r := TelemetryRecord{TS: time.Unix(0, ns).UTC()}
	if n := d.count(); n > 0 {
		r.Points = make(map[string]any, n)
		for range n {
			var k string
			if names == nil {
				k = d.str()
			} else {
				k = d.name(names)
			}
			switch d.byte() {
			case tagFloat64:
				r.Points[k] = math.Float64frombits(binary.LittleEndian.Uint64(d.bytes(8)))
			case tagFloat32:
				r.Points[k] = float64(math.Float32frombits(binary.LittleEndian.Uint32(d.bytes(4))))
			case tagInt:
				r.Points[k] = float64(d.varint())
			case tagTrue:
				r.Points[k] = true
			case tagFalse:
				r.Points[k] = false
			case tagString:
				r.Points[k] = d.str()
			default:
				d.fail("unknown value tag")
			}
		}
	}
	r.MessageID = d.str()
	r.ContentType = d.str()
	if raw := d.str(); raw != "" {
		r.Raw = []byte(raw)
	}
	if n := d.count(); n > 0 {
		r.Properties = make(map[string]string, n)
		for range n {
			k := d.str()
			r.Properties[k] = d.str()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return TelemetryRecord{}, d.err
	}
	return r, nil
}

// recordJSON returns a stored record as JSON, the form records travel in
// between members.
func recordJSON(v []byte, ns int64) ([]byte, error) {
	if len(v) == 0 || v[0] != recordBinary {
		return v, nil
	}
	r, err := decodeRecord(v, ns)
	if err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// recordDecoder reads the binary form; the first error sticks, and reads
// after it return zero values.
type recordDecoder struct {
	b   []byte
	err error
}

func (d *recordDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: telemetry record: %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *recordDecoder) bytes(n int) []byte {
	if n < 0 || n > len(d.b) {
		d.fail("truncated")
		return make([]byte, max(n, 8))
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *recordDecoder) byte() byte {
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *recordDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recordDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of entries, each at least two bytes long.
func (d *recordDecoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("count beyond the record")
		return 0
	}
	return int(n)
}

// name reads a point name given as an index into names.
func (d *recordDecoder) name(names []string) string {
	i := d.uvarint()
	if i >= uint64(len(names)) {
		d.fail("name index beyond the block's names")
		return ""
	}
	return names[i]
}

func (d *recordDecoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("string beyond the record")
		return ""
	}
	return string(d.bytes(int(n)))
}
