package persistence

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"
)

// Composite keys are "<id> NUL <rest>", so an ID that is a key prefix must be
// non-empty and free of NUL bytes. The range of one ID is [id NUL, id 0x01).

// checkPrefixID validates an ID used as the prefix of composite keys.
func checkPrefixID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, what)
	}
	if strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: %s %q contains a NUL byte", ErrInvalid, what, id)
	}
	return nil
}

// checkNoNUL validates an ID stored in a composite key after the separator,
// or an optional reference (empty allowed).
func checkNoNUL(what, id string) error {
	if strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: %s %q contains a NUL byte", ErrInvalid, what, id)
	}
	return nil
}

// pairKey returns a NUL b.
func pairKey(a, b string) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

// rangeStart is the first key of id's range: id NUL.
func rangeStart(id string) []byte { return append([]byte(id), 0) }

// rangeEnd is the first key after id's range: id 0x01.
func rangeEnd(id string) []byte { return append([]byte(id), 1) }

// Telemetry timestamps must fit a non-negative int64 of unix nanoseconds.
var (
	minTelemetryTS = time.Unix(0, 0)
	maxTelemetryTS = time.Unix(0, math.MaxInt64)
)

const telemetrySuffix = 1 + 8 + 4 // NUL, be64 unix ns, be32 seq

// telemetryKey returns device NUL be64(ns) be32(seq).
func telemetryKey(device string, ns int64, seq uint32) []byte {
	k := make([]byte, 0, len(device)+telemetrySuffix)
	k = append(k, device...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, uint64(ns))
	return binary.BigEndian.AppendUint32(k, seq)
}

// parseTelemetryKey splits a telemetry key. ok is false for a key that does
// not have the layout.
func parseTelemetryKey(k []byte) (device []byte, ns int64, seq uint32, ok bool) {
	n := len(k) - telemetrySuffix
	if n < 1 || k[n] != 0 || bytes.IndexByte(k[:n], 0) >= 0 {
		return nil, 0, 0, false
	}
	u := binary.BigEndian.Uint64(k[n+1:])
	if u > math.MaxInt64 {
		return nil, 0, 0, false
	}
	return k[:n], int64(u), binary.BigEndian.Uint32(k[n+9:]), true
}
