package persistence

import (
	"bytes"
	"math"
	"testing"
)

// FuzzTelemetryKey: parsing never panics, and every key telemetryKey builds
// parses back to its parts and sorts by (device, time, seq).
func FuzzTelemetryKey(f *testing.F) {
	f.Add([]byte("dev"), int64(0), uint32(0), []byte{})
	f.Add([]byte("d"), int64(math.MaxInt64), uint32(math.MaxUint32), []byte("d\x00\x01\x02"))
	f.Add([]byte("a/b:c"), int64(1_700_000_000_000_000_000), uint32(7), telemetryKey("x", 5, 1))
	f.Fuzz(func(t *testing.T, dev []byte, ns int64, seq uint32, junk []byte) {
		parseTelemetryKey(junk) // must not panic
		if len(dev) == 0 || bytes.IndexByte(dev, 0) >= 0 || ns < 0 {
			return
		}
		k := telemetryKey(string(dev), ns, seq)
		d, n, s, ok := parseTelemetryKey(k)
		if !ok || !bytes.Equal(d, dev) || n != ns || s != seq {
			t.Fatalf("round trip of (%q, %d, %d) = (%q, %d, %d, %v)", dev, ns, seq, d, n, s, ok)
		}
		if !bytes.HasPrefix(k, rangeStart(string(dev))) || bytes.Compare(k, rangeEnd(string(dev))) >= 0 {
			t.Fatalf("key %x outside the device range", k)
		}
		if ns < math.MaxInt64 && bytes.Compare(k, telemetryKey(string(dev), ns+1, 0)) >= 0 {
			t.Fatal("a later timestamp does not sort after")
		}
		if seq < math.MaxUint32 && bytes.Compare(k, telemetryKey(string(dev), ns, seq+1)) >= 0 {
			t.Fatal("a later seq does not sort after")
		}
	})
}
