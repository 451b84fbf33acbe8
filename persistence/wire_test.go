package persistence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// dump returns the raw contents of buckets (all but meta when none is
// given): bucket → key → value.
func dump(t testing.TB, db *DB, buckets ...[]byte) map[string]map[string]string {
	t.Helper()
	if !db.readOnly {
		// Telemetry waiting in the ingest log goes to its bucket first, so
		// that copies compare whatever moment their log moved.
		if err := db.MoveIngestLog(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(buckets) == 0 {
		for _, b := range allBuckets() {
			if !bytes.Equal(b, bktMeta) {
				buckets = append(buckets, b)
			}
		}
	}
	out := map[string]map[string]string{}
	if err := db.Bolt().View(func(tx *bbolt.Tx) error {
		for _, name := range buckets {
			m := map[string]string{}
			if err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				m[string(k)] = string(v)
				return nil
			}); err != nil {
				return err
			}
			out[string(name)] = m
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// overJSON sends op's wire form through encoding/json, as a shipment would,
// and rebuilds it with FromWire.
func overJSON(t testing.TB, op Op) (WireOp, Op) {
	t.Helper()
	w, ok := op.Wire()
	if !ok {
		t.Fatalf("%v has no wire form", op)
	}
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var got WireOp
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	return got, FromWire(got)
}

// TestWireRoundTrip: for every constructor, FromWire(op.Wire()) sent
// through JSON and applied to a second DB in the same state leaves both
// files byte-identical.
func TestWireRoundTrip(t *testing.T) {
	oslo := time.FixedZone("CET", 3600)
	tree := []Op{
		PutEntity(Entity{ID: "r1", Kind: "room"}), PutEntity(Entity{ID: "gw", Kind: "gateway", Parent: "r1"}),
		PutEntity(Entity{ID: "d1", Kind: "device", Parent: "r1", ConnectedVia: "gw"}),
		PutTwin("d1", []byte(`{"version":1}`)), PutIdentity(Identity{DeviceID: "d1", PrimaryKey: "k"}),
		PutInbox(InboxMessage{ID: "m1", DeviceID: "d1", State: "pending"}),
		AppendTelemetry("d1", TelemetryRecord{TS: t0}),
		PutDoc(BucketContrib, "r1/d1", []byte(`1`)), PutDoc(BucketContrib, "d1/x", []byte(`1`)),
		PutDoc(BucketGrants, "d1/app", []byte(`{}`)),
	}
	cases := []struct {
		name    string
		seed    []Op
		op      Op
		wantT   string
		catalog bool
	}{
		{"put twin", nil, PutTwin("d1", []byte(`{"version":3,"reported":{"t":21.5}}`)), "twin.put", false},
		{"put twin nil doc", nil, PutTwin("d1", nil), "twin.put", false},
		{"put twin replaces", tree, PutTwin("d1", []byte(`{"version":2}`)), "twin.put", false},
		{"delete twin", tree, DeleteTwin("d1"), "twin.del", false},
		{"put entity", nil, PutEntity(Entity{ID: "d9", Kind: "device", Parent: "r1", ConnectedVia: "gw",
			// Values that re-encoding would change: an int beyond float64
			// precision and a string that is not valid UTF-8.
			Tags:      map[string]any{"big": int64(1<<60 + 1), "bad": "a\xffb", "nested": map[string]any{"l": []any{1, "x"}}},
			CreatedAt: time.Date(2025, 3, 1, 13, 0, 0, 123456789, oslo), UpdatedAt: t0}), "entity.put", true},
		{"put entity moves indexes", tree, PutEntity(Entity{ID: "d1", Kind: "device", Parent: "gw", ConnectedVia: "r1"}), "entity.put", true},
		{"delete entity cascades", tree, DeleteEntity("d1"), "entity.del", true},
		{"put identity", nil, PutIdentity(Identity{DeviceID: "d1", PrimaryKey: "p", SecondaryKey: "s", Status: "enabled", CreatedAt: t0}), "identity.put", true},
		{"delete identity", tree, DeleteIdentity("d1"), "identity.del", true},
		{"telemetry", nil, AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(time.Nanosecond), Points: map[string]any{"t": 21.5},
			Raw: []byte{0, 1}, ContentType: "application/json", Properties: map[string]string{"k": "v"}, MessageID: "mid-1"}), "telemetry", false},
		{"telemetry zero TS travels as the time it got", nil, AppendTelemetry("d1", TelemetryRecord{Points: map[string]any{"t": 1.0}}), "telemetry", false},
		{"put inbox", tree, PutInbox(InboxMessage{ID: "m2", DeviceID: "d1", Payload: []byte(`{"cmd":1}`), Properties: map[string]string{"p": "1"},
			EnqueuedAt: t0, ExpiresAt: t0.Add(time.Hour), State: "pending", Seq: 2}), "inbox.put", false},
		{"put inbox replaces", tree, PutInbox(InboxMessage{ID: "m1", DeviceID: "d1", State: "delivered", DeliveredAt: t0}), "inbox.put", false},
		{"delete inbox", tree, DeleteInbox("d1", "m1"), "inbox.del", false},
		{"put doc", nil, PutDoc(BucketRules, "r/1", []byte(`{"when":"t>30"}`)), "doc.put", true},
		{"put doc nil", nil, PutDoc(BucketAlerts, "a", nil), "doc.put", true},
		{"delete doc", tree, DeleteDoc(BucketGrants, "d1/app"), "doc.del", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := openTemp(t, nil), openTemp(t, nil)
			if len(c.seed) > 0 {
				commit(t, a, c.seed...)
				commit(t, b, c.seed...)
			}
			before := dump(t, a)
			w, rebuilt := overJSON(t, c.op)
			commit(t, a, c.op)
			commit(t, b, rebuilt)
			got, want := dump(t, b), dump(t, a)
			if reflect.DeepEqual(want, before) {
				t.Fatal("the op changed nothing: the case tests nothing")
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("replica differs:\n got %q\nwant %q", got, want)
			}
			if w.T != c.wantT || c.op.Catalog() != c.catalog || rebuilt.Catalog() != c.catalog {
				t.Fatalf("T = %q, Catalog = %v/%v; want %q, %v", w.T, c.op.Catalog(), rebuilt.Catalog(), c.wantT, c.catalog)
			}
			if again, ok := rebuilt.Wire(); !ok || !reflect.DeepEqual(again, w) {
				t.Fatalf("rebuilt op's wire = %+v, %v; want %+v", again, ok, w)
			}
			if rebuilt.String() != c.op.String() {
				t.Fatalf("String = %q, want %q", rebuilt.String(), c.op.String())
			}
		})
	}
}

// TestWireNone: ops that have no wire form say so and are not catalog ops.
func TestWireNone(t *testing.T) {
	cases := []struct {
		name string
		op   Op
	}{
		{"check epoch", CheckEpoch("g", 1)},
		{"claim epoch", ClaimEpoch("g", 1)},
		{"zero op", Op{}},
		{"op that could not be built", PutEntity(Entity{ID: "a\x00"})},
		{"unencodable entity", PutEntity(Entity{ID: "a", Tags: map[string]any{"c": make(chan int)}})},
		{"bad doc bucket", PutDoc("nope", "k", nil)},
		{"invalid wire op", FromWire(WireOp{T: "entity.put", K: "a", V: []byte(`{`)})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if w, ok := c.op.Wire(); ok || !reflect.DeepEqual(w, WireOp{}) {
				t.Fatalf("Wire = %+v, %v; want none", w, ok)
			}
			if c.op.Catalog() {
				t.Fatal("Catalog = true")
			}
		})
	}
}

// TestWireCopies: neither the WireOp from Wire nor the one given to
// FromWire shares memory with the op.
func TestWireCopies(t *testing.T) {
	cases := []struct {
		name  string
		build func() (op Op, scribble func())
	}{
		{"Wire's V", func() (Op, func()) {
			op := PutTwin("d1", []byte(`{"v":1}`))
			w, _ := op.Wire()
			return op, func() { w.V[0] = 'X' }
		}},
		{"FromWire's V", func() (Op, func()) {
			w := WireOp{T: "twin.put", K: "d1", V: []byte(`{"v":1}`)}
			return FromWire(w), func() { w.V[0] = 'X' }
		}},
		{"FromWire's V (entity)", func() (Op, func()) {
			w := WireOp{T: "entity.put", K: "d1", V: []byte(`{"id":"d1","kind":"device"}`)}
			return FromWire(w), func() { w.V[0] = 'X' }
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTemp(t, nil)
			op, scribble := c.build()
			want, _ := op.Wire()
			scribble()
			commit(t, db, op)
			got := dump(t, db, bktTwins, bktEntities)
			if v := got["twins"]["d1"] + got["entities"]["d1"]; v != string(want.V) || v[0] != '{' {
				t.Fatalf("stored %q, want %q", v, want.V)
			}
		})
	}
}

// TestFromWireInvalid: bad wire ops fail Commit with ErrInvalid before
// anything is queued, so the other op of the Commit is not written.
func TestFromWireInvalid(t *testing.T) {
	long := strings.Repeat("x", bbolt.MaxKeySize+1)
	half := strings.Repeat("y", bbolt.MaxKeySize/2+1)
	cases := []struct {
		name string
		w    WireOp
	}{
		{"unknown type", WireOp{T: "twin.patch", K: "d1"}},
		{"empty type", WireOp{K: "d1"}},
		{"empty key", WireOp{T: "twin.put", V: []byte(`{}`)}},
		{"key too long", WireOp{T: "twin.put", K: long}},
		{"entity v not JSON", WireOp{T: "entity.put", K: "a", V: []byte(`{"id":`)}},
		{"entity v null", WireOp{T: "entity.put", K: "a", V: []byte(`null`)}},
		{"entity v missing", WireOp{T: "entity.put", K: "a"}},
		{"entity k differs from id", WireOp{T: "entity.put", K: "a", V: []byte(`{"id":"b"}`)}},
		{"entity id with NUL", WireOp{T: "entity.put", K: "a\x00", V: []byte(`{"id":"a\u0000"}`)}},
		{"entity parent with NUL", WireOp{T: "entity.put", K: "a", V: []byte(`{"id":"a","parent":"p\u0000"}`)}},
		{"entity index key too long", WireOp{T: "entity.put", K: half, V: []byte(`{"id":"` + half + `","parent":"` + half + `"}`)}},
		{"entity wrong field type", WireOp{T: "entity.put", K: "a", V: []byte(`{"id":"a","tags":[1]}`)}},
		{"delete entity with NUL", WireOp{T: "entity.del", K: "a\x00b"}},
		{"identity k differs", WireOp{T: "identity.put", K: "d1", V: []byte(`{"id":"d2"}`)}},
		{"identity wrong field type", WireOp{T: "identity.put", K: "d1", V: []byte(`{"id":"d1","primaryKey":5}`)}},
		{"telemetry empty device", WireOp{T: "telemetry", K: "", V: []byte(`{"ts":"2025-03-01T12:00:00Z"}`)}},
		{"telemetry device with NUL", WireOp{T: "telemetry", K: "d\x00", V: []byte(`{"ts":"2025-03-01T12:00:00Z"}`)}},
		{"telemetry device too long", WireOp{T: "telemetry", K: long[:bbolt.MaxKeySize-5], V: []byte(`{"ts":"2025-03-01T12:00:00Z"}`)}},
		{"telemetry without ts", WireOp{T: "telemetry", K: "d1", V: []byte(`{"points":{"t":1}}`)}},
		{"telemetry before 1970", WireOp{T: "telemetry", K: "d1", V: []byte(`{"ts":"1969-12-31T23:59:59Z"}`)}},
		{"telemetry after 2262", WireOp{T: "telemetry", K: "d1", V: []byte(`{"ts":"2263-01-01T00:00:00Z"}`)}},
		{"telemetry v not JSON", WireOp{T: "telemetry", K: "d1", V: []byte(`ts`)}},
		{"inbox without message id", WireOp{T: "inbox.put", K: "d1", V: []byte(`{"deviceId":"d1"}`)}},
		{"inbox device differs", WireOp{T: "inbox.put", K: "d1", V: []byte(`{"deviceId":"d2","messageId":"m"}`)}},
		{"inbox delete without k2", WireOp{T: "inbox.del", K: "d1"}},
		{"inbox delete k2 with NUL", WireOp{T: "inbox.del", K: "d1", K2: "m\x00"}},
		{"doc unknown bucket", WireOp{T: "doc.put", B: "twins", K: "k", V: []byte(`1`)}},
		{"doc without bucket", WireOp{T: "doc.put", K: "k", V: []byte(`1`)}},
		{"doc delete unknown bucket", WireOp{T: "doc.del", B: "meta", K: "schema"}},
		{"doc empty key", WireOp{T: "doc.put", B: "rules", V: []byte(`1`)}},
	}
	db := openTemp(t, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := dump(t, db)
			err := db.Commit(context.Background(), PutTwin("side", []byte(`1`)), FromWire(c.w))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Commit = %v, want ErrInvalid", err)
			}
			if after := dump(t, db); !reflect.DeepEqual(after, before) {
				t.Fatal("a Commit with an invalid wire op wrote something")
			}
		})
	}
}

// TestFromWireTelemetryIdempotent: a shipped telemetry record is stored
// once per timestamp, whereas AppendTelemetry keeps adding seqs.
func TestFromWireTelemetryIdempotent(t *testing.T) {
	rec := func(s int, mid string) TelemetryRecord {
		return TelemetryRecord{TS: t0.Add(time.Duration(s) * time.Second), MessageID: mid, Points: map[string]any{"s": float64(s)}}
	}
	ship := func(r TelemetryRecord) WireOp {
		w, _ := AppendTelemetry("d1", r).Wire()
		return w
	}
	cases := []struct {
		name    string
		local   []Op       // committed with the constructors first
		shipped [][]WireOp // each is one Commit of FromWire ops
		want    []string   // mids, newest first
	}{
		{"same record in two commits", nil, [][]WireOp{{ship(rec(1, "a"))}, {ship(rec(1, "a"))}}, []string{"a"}},
		{"same record twice in one commit", nil, [][]WireOp{{ship(rec(1, "a")), ship(rec(1, "a"))}}, []string{"a"}},
		{"equal timestamp keeps the first", nil, [][]WireOp{{ship(rec(1, "a"))}, {ship(rec(1, "b"))}}, []string{"a"}},
		{"distinct timestamps", nil, [][]WireOp{{ship(rec(1, "a")), ship(rec(2, "b"))}, {ship(rec(1, "a"))}}, []string{"b", "a"}},
		{"one nanosecond apart", nil, [][]WireOp{{ship(rec(1, "a")),
			ship(TelemetryRecord{TS: t0.Add(time.Second + 1), MessageID: "b"})}}, []string{"b", "a"}},
		{"record already there locally", []Op{AppendTelemetry("d1", rec(1, "local"))}, [][]WireOp{{ship(rec(1, "a"))}}, []string{"local"}},
		{"local appends keep their seq", []Op{AppendTelemetry("d1", rec(1, "x")), AppendTelemetry("d1", rec(1, "y"))}, nil, []string{"y", "x"}},
		{"shipment after local duplicates", []Op{AppendTelemetry("d1", rec(1, "x")), AppendTelemetry("d1", rec(1, "y"))},
			[][]WireOp{{ship(rec(1, "a")), ship(rec(2, "b"))}}, []string{"b", "y", "x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTemp(t, nil)
			if len(c.local) > 0 {
				commit(t, db, c.local...)
			}
			for _, ws := range c.shipped {
				var ops []Op
				for _, w := range ws {
					ops = append(ops, FromWire(w))
				}
				commit(t, db, ops...)
			}
			got, err := db.QueryTelemetry(context.Background(), "d1", TelemetryQuery{})
			if err != nil {
				t.Fatal(err)
			}
			var mids []string
			for _, r := range got {
				mids = append(mids, r.MessageID)
			}
			if !reflect.DeepEqual(mids, c.want) {
				t.Fatalf("records = %v, want %v", mids, c.want)
			}
		})
	}
}

// TestTelemetryMessageID: the device's $.mid is stored and returned,
// through the local and the wire path, and travels between members as
// "mid" in the record's JSON.
func TestTelemetryMessageID(t *testing.T) {
	cases := []struct {
		name    string
		mid     string
		viaWire bool
		rawHas  string // substring of the JSON members exchange
	}{
		{"local", "m-17", false, `"mid":"m-17"`},
		{"via wire", "m-18", true, `"mid":"m-18"`},
		{"none is omitted", "", false, `"ts":`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTemp(t, nil)
			op := AppendTelemetry("d1", TelemetryRecord{TS: t0, MessageID: c.mid, Points: map[string]any{"t": 1.0}})
			if c.viaWire {
				_, op = overJSON(t, op)
			}
			commit(t, db, op)
			got, err := db.QueryTelemetry(context.Background(), "d1", TelemetryQuery{})
			if err != nil || len(got) != 1 || got[0].MessageID != c.mid {
				t.Fatalf("QueryTelemetry = %+v, %v; want mid %q", got, err, c.mid)
			}
			if err := db.MoveIngestLog(context.Background()); err != nil {
				t.Fatal(err)
			}
			if stored := storedRecs(t, db, "d1"); len(stored) != 1 || stored[0].ns != t0.UnixNano() || stored[0].rec.MessageID != c.mid {
				t.Fatalf("stored %+v, want one record at %v with mid %q", stored, t0, c.mid)
			}
			w, _ := op.Wire()
			if raw := string(w.V); !strings.Contains(raw, c.rawHas) || (c.mid == "" && strings.Contains(raw, "mid")) {
				t.Fatalf("wire form %s, want it to contain %s", raw, c.rawHas)
			}
		})
	}
}

// FuzzFromWire: any JSON decoded into a WireOp, rebuilt and committed,
// never panics and either commits (then the op has a wire form) or fails
// with ErrInvalid.
func FuzzFromWire(f *testing.F) {
	seeds := []Op{
		PutTwin("d1", []byte(`{"version":1}`)), DeleteTwin("d1"),
		PutEntity(Entity{ID: "d1", Kind: "device", Parent: "r1", ConnectedVia: "gw", Tags: map[string]any{"a": 1}}), DeleteEntity("d1"),
		PutIdentity(Identity{DeviceID: "d1", PrimaryKey: "k"}), DeleteIdentity("d1"),
		AppendTelemetry("d1", TelemetryRecord{TS: t0, MessageID: "m", Points: map[string]any{"t": 1.5}}),
		PutInbox(InboxMessage{ID: "m", DeviceID: "d1", Payload: []byte("x")}), DeleteInbox("d1", "m"),
		PutDoc(BucketRules, "r", []byte(`{}`)), DeleteDoc(BucketGrants, "g"),
	}
	for _, op := range seeds {
		w, _ := op.Wire()
		b, _ := json.Marshal(w)
		f.Add(b)
	}
	for _, s := range []string{`{}`, `null`, `[]`, `{"t":"telemetry","k":"d","v":"bnVsbA=="}`, `{"t":"doc.put","b":"alerts","k":"\u0000"}`,
		`{"t":"entity.put","k":"","v":"e30="}`, `{"t":"inbox.del","k":"d","k2":"m"}`} {
		f.Add([]byte(s))
	}
	db := openTemp(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		var w WireOp
		if json.Unmarshal(data, &w) != nil {
			return
		}
		op := FromWire(w)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := db.Commit(ctx, op)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Commit(FromWire(%+v)) = %v, want nil or ErrInvalid", w, err)
		}
		if _, ok := op.Wire(); err == nil && !ok {
			t.Fatalf("committed op %v has no wire form", op)
		}
		wantCatalog := strings.HasPrefix(w.T, "entity.") || strings.HasPrefix(w.T, "identity.") || strings.HasPrefix(w.T, "doc.")
		if err == nil && op.Catalog() != wantCatalog {
			t.Fatalf("Catalog = %v for %q", op.Catalog(), w.T)
		}
	})
}
