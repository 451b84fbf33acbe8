package persistence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
)

const grainRecords = 25

// buildGrainSource fills db with grain d1 (entity, twin at version 7,
// three inbox messages, grainRecords telemetry records, an epoch) and
// neighbours whose IDs share its prefix.
func buildGrainSource(t *testing.T, db *DB) {
	t.Helper()
	ops := []Op{
		PutEntity(Entity{ID: "r1", Kind: "room"}),
		PutEntity(Entity{ID: "d1", Kind: "device", Parent: "r1"}),
		PutTwin("d1", []byte(`{"id":"d1","version":7,"reported":{"t":21}}`)),
		ClaimEpoch("d1", 3), CheckEpoch("d1", 3),
		PutTwin("d10", []byte(`{"version":1}`)), PutTwin("d", []byte(`{"version":1}`)),
		PutInbox(InboxMessage{ID: "m-x", DeviceID: "d10", State: "pending"}),
		AppendTelemetry("d10", TelemetryRecord{TS: t0}), AppendTelemetry("d", TelemetryRecord{TS: t0}),
	}
	for i := range 3 {
		ops = append(ops, PutInbox(InboxMessage{ID: fmt.Sprintf("m%d", i), DeviceID: "d1", Payload: []byte(`{"n":1}`),
			EnqueuedAt: t0.Add(time.Duration(i)), State: "pending", Seq: uint64(i + 1)}))
	}
	for i := range grainRecords {
		ops = append(ops, AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(time.Duration(i) * time.Second),
			MessageID: fmt.Sprintf("mid-%d", i), Points: map[string]any{"t": float64(i)}}))
	}
	commit(t, db, ops...)
}

// copyCatalog applies every CatalogSnapshot page of src to dst.
func copyCatalog(t *testing.T, src, dst *DB, limit int) (pages int, all []WireOp) {
	t.Helper()
	cursor := ""
	for {
		ops, next, err := src.CatalogSnapshot(cursor, limit)
		if err != nil {
			t.Fatalf("CatalogSnapshot(%q): %v", cursor, err)
		}
		pages++
		applyWire(t, dst, ops)
		all = append(all, ops...)
		if next == "" {
			return pages, all
		}
		// The cursor travels as JSON between nodes.
		b, _ := json.Marshal(next)
		if err := json.Unmarshal(b, &cursor); err != nil || cursor != next {
			t.Fatalf("cursor %q does not survive JSON: %q, %v", next, cursor, err)
		}
		if pages > 10000 {
			t.Fatal("CatalogSnapshot does not end")
		}
	}
}

// applyWire commits FromWire of ops on db in one Commit.
func applyWire(t *testing.T, db *DB, ws []WireOp) {
	t.Helper()
	if len(ws) == 0 {
		return
	}
	ops := make([]Op, len(ws))
	for i, w := range ws {
		ops[i] = FromWire(w)
	}
	commit(t, db, ops...)
}

func telemetryNS(t *testing.T, w WireOp) int64 {
	t.Helper()
	var r TelemetryRecord
	if err := json.Unmarshal(w.V, &r); err != nil {
		t.Fatal(err)
	}
	return r.TS.UnixNano()
}

// TestGrainSnapshot: paging GrainSnapshot of d1 from A into an empty B
// (which got the catalog too) covers each record once and gives B the same
// GrainState and query results; the first op of each page carries A's Wrote
// and Seq, neighbours are not included, and applying the snapshot again
// changes nothing.
func TestGrainSnapshot(t *testing.T) {
	a := openTemp(t, nil)
	buildGrainSource(t, a)
	wantState, err := a.GrainState("d1")
	if err != nil {
		t.Fatal(err)
	}
	if wantState.Telemetry != grainRecords || wantState.Inbox != 3 || wantState.TwinVersion != 7 || wantState.Epoch != (Epoch{Fence: 3, Wrote: 3, Seq: 1}) {
		t.Fatalf("source state = %+v", wantState)
	}
	cases := []struct {
		limit     int
		wantPages int
	}{
		{1, grainRecords},
		{2, 13},
		{7, 4},
		{grainRecords - 1, 2},
		{grainRecords, 1},
		{grainRecords + 1, 1},
		{0, 1},  // DefaultTelemetryLimit
		{-1, 1}, // same
		{1 << 30, 1},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("limit %d", c.limit), func(t *testing.T) {
			b := openTemp(t, nil)
			copyCatalog(t, a, b, 0)
			var all []WireOp
			seen := map[int64]int{}
			after, pages := int64(0), 0
			for {
				ops, next, err := a.GrainSnapshot("d1", after, c.limit)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				tel, prevNS := 0, after
				for i, w := range ops {
					switch {
					case w.K != "d1":
						t.Fatalf("op for %q in d1's snapshot", w.K)
					case w.T == "telemetry":
						ns := telemetryNS(t, w)
						if ns <= prevNS {
							t.Fatalf("telemetry at %d after %d: not oldest first, or not after afterNS", ns, prevNS)
						}
						prevNS = ns
						seen[ns]++
						tel++
					case after != 0:
						t.Fatalf("%s op on a page after the first", w.T)
					case w.T == "twin.put" && i != 0, w.T != "twin.put" && w.T != "inbox.put":
						t.Fatalf("op %d is %s", i, w.T)
					}
				}
				if c.limit > 0 && tel > c.limit {
					t.Fatalf("%d telemetry ops, limit %d", tel, c.limit)
				}
				if next != 0 && next != prevNS {
					t.Fatalf("next = %d, want the last record's %d", next, prevNS)
				}
				applyWire(t, b, ops)
				all = append(all, ops...)
				if next == 0 {
					break
				}
				after = next
			}
			if pages != c.wantPages || len(seen) != grainRecords {
				t.Fatalf("%d pages, %d records; want %d, %d", pages, len(seen), c.wantPages, grainRecords)
			}
			for ns, n := range seen {
				if n != 1 {
					t.Fatalf("record %d sent %d times", ns, n)
				}
			}
			// The copier records the source's Wrote and Seq once every page
			// landed; the fence is raised to Wrote, as B applied the pages
			// without a CheckEpoch of its own.
			src, _ := a.GetEpoch("d1")
			commit(t, b, CopiedEpoch("d1", src))
			got, err := b.GrainState("d1")
			if err != nil {
				t.Fatal(err)
			}
			if got.Epoch != (Epoch{Fence: 3, Wrote: 3, Seq: 1}) {
				t.Fatalf("copied epoch = %+v, want the source's wrote and seq", got.Epoch)
			}
			if got != wantState {
				t.Fatalf("replica state = %+v, want %+v", got, wantState)
			}
			checkSameGrain(t, a, b, "d1")
			for _, id := range []string{"d10", "d"} {
				if st, _ := b.GrainState(id); st.HasTwin || st.Telemetry != 0 || st.Inbox != 0 {
					t.Fatalf("neighbour %s was copied: %+v", id, st)
				}
			}
			// A retried shipment of everything: nothing changes.
			before := dump(t, b)
			applyWire(t, b, all)
			if after := dump(t, b); !reflect.DeepEqual(after, before) {
				t.Fatal("applying the snapshot twice changed the replica")
			}
		})
	}
}

// checkSameGrain compares what the reads return for id on a and b.
func checkSameGrain(t *testing.T, a, b *DB, id string) {
	t.Helper()
	ctx := context.Background()
	type result struct {
		twin  []byte
		tel   []TelemetryRecord
		inbox []InboxMessage
		ent   Entity
	}
	read := func(db *DB) (r result) {
		var err error
		if r.twin, err = db.GetTwin(id); err != nil {
			t.Fatal(err)
		}
		if r.tel, err = db.QueryTelemetry(ctx, id, TelemetryQuery{Limit: MaxTelemetryLimit}); err != nil {
			t.Fatal(err)
		}
		if r.inbox, err = db.Inbox(id); err != nil {
			t.Fatal(err)
		}
		if r.ent, err = db.GetEntity(id); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if ra, rb := read(a), read(b); !reflect.DeepEqual(ra, rb) {
		t.Fatalf("reads differ:\n source %+v\nreplica %+v", ra, rb)
	}
}

// TestGrainSnapshotEdges covers the arguments and the odd records.
func TestGrainSnapshotEdges(t *testing.T) {
	epoch := time.Unix(0, 0)
	cases := []struct {
		name      string
		data      []Op
		id        string
		after     int64
		limit     int
		wantErr   error
		wantTypes []string
		wantNext  int64
	}{
		{name: "unknown id", id: "nope", wantTypes: []string{}},
		{name: "empty id", id: "", wantErr: ErrInvalid},
		{name: "id with NUL", id: "d\x001", wantErr: ErrInvalid},
		{name: "negative afterNS", id: "d1", after: -1, wantErr: ErrInvalid},
		{name: "twin only", data: []Op{PutTwin("d1", nil)}, id: "d1", wantTypes: []string{"twin.put"}},
		{name: "after the newest record", data: []Op{PutTwin("d1", nil), AppendTelemetry("d1", TelemetryRecord{TS: t0})},
			id: "d1", after: t0.UnixNano(), wantTypes: []string{}},
		{name: "afterNS at the end of time", data: []Op{AppendTelemetry("d1", TelemetryRecord{TS: t0})},
			id: "d1", after: math.MaxInt64, wantTypes: []string{}},
		{name: "equal timestamps are sent once",
			data: []Op{AppendTelemetry("d1", TelemetryRecord{TS: t0}), AppendTelemetry("d1", TelemetryRecord{TS: t0}),
				AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(1)})},
			id: "d1", wantTypes: []string{"telemetry", "telemetry"}},
		{name: "equal timestamps do not end a full page early",
			data: []Op{AppendTelemetry("d1", TelemetryRecord{TS: t0}), AppendTelemetry("d1", TelemetryRecord{TS: t0}),
				AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(1)})},
			id: "d1", limit: 1, wantTypes: []string{"telemetry"}, wantNext: t0.UnixNano()},
		{name: "only duplicates left: no next",
			data: []Op{AppendTelemetry("d1", TelemetryRecord{TS: t0}), AppendTelemetry("d1", TelemetryRecord{TS: t0})},
			id:   "d1", limit: 1, wantTypes: []string{"telemetry"}},
		{name: "a record at the Unix epoch is included",
			data: []Op{AppendTelemetry("d1", TelemetryRecord{TS: epoch}), AppendTelemetry("d1", TelemetryRecord{TS: t0})},
			id:   "d1", limit: 5, wantTypes: []string{"telemetry", "telemetry"}},
		{name: "a page ending at the Unix epoch takes one more",
			data: []Op{AppendTelemetry("d1", TelemetryRecord{TS: epoch}), AppendTelemetry("d1", TelemetryRecord{TS: t0}),
				AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(1)})},
			id: "d1", limit: 1, wantTypes: []string{"telemetry", "telemetry"}, wantNext: t0.UnixNano()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTemp(t, nil)
			if len(c.data) > 0 {
				commit(t, db, c.data...)
			}
			ops, next, err := db.GrainSnapshot(c.id, c.after, c.limit)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			types := []string{}
			for _, w := range ops {
				types = append(types, w.T)
			}
			if err != nil || ops == nil || !slices.Equal(types, c.wantTypes) || next != c.wantNext {
				t.Fatalf("GrainSnapshot = %v, %d, %v; want %v, %d", types, next, err, c.wantTypes, c.wantNext)
			}
		})
	}
}

// TestGrainSnapshotCopiesSeq copies a grain the way a claim does: the new
// owner B commits each page behind FenceEpoch of the new epoch, the first
// after ResetGrainData and EmptyCopyEpoch, the last with CopiedEpoch of the
// source's record. Until the last page B claims nothing (a copy cut off half
// way is never taken for a complete one); then it has the source's Wrote and
// Seq (its Fence stays the new epoch), so that after the first write of the
// new epoch B, the source A and a replica C that was not copied (it held
// what A held) have the same Seq.
func TestGrainSnapshotCopiesSeq(t *testing.T) {
	a, b, c := openTemp(t, nil), openTemp(t, nil), openTemp(t, nil)
	buildGrainSource(t, a) // d1 at {3, 3, 1}
	commit(t, a, CheckEpoch("d1", 3), PutTwin("d1", []byte(`{"id":"d1","version":7,"connected":true}`)))
	commit(t, b, CheckEpoch("d1", 2), PutTwin("d1", []byte(`{"id":"d1","version":7}`)))
	commit(t, b, CheckEpoch("d1", 2))
	commit(t, c, CheckEpoch("d1", 3), CheckEpoch("d1", 3)) // in step with A: {3, 3, 2}
	src := Epoch{Fence: 3, Wrote: 3, Seq: 2}
	if e, _ := a.GetEpoch("d1"); e != src {
		t.Fatalf("source epoch = %+v", e)
	}
	const claim = 9
	for _, db := range []*DB{a, b, c} {
		commit(t, db, ClaimEpoch("d1", claim))
	}
	after, pages := int64(0), 0
	for {
		ops, next, err := a.GrainSnapshot("d1", after, 4)
		if err != nil {
			t.Fatal(err)
		}
		// Through JSON, as between members.
		raw, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		var ws []WireOp
		if err := json.Unmarshal(raw, &ws); err != nil {
			t.Fatal(err)
		}
		page := []Op{FenceEpoch("d1", claim)}
		if after == 0 {
			page = append(page, ResetGrainData("d1"), EmptyCopyEpoch("d1"))
		}
		for _, w := range ws {
			page = append(page, FromWire(w))
		}
		if next == 0 {
			page = append(page, CopiedEpoch("d1", src))
		}
		commit(t, b, page...)
		pages++
		want := Epoch{Fence: claim} // a copy cut off here claims nothing
		if next == 0 {
			want = Epoch{Fence: claim, Wrote: 3, Seq: 2}
		}
		if e, _ := b.GetEpoch("d1"); e != want {
			t.Fatalf("after page %d: B's epoch = %+v, want %+v", pages, e, want)
		}
		if next == 0 {
			break
		}
		after = next
	}
	if pages < 3 {
		t.Fatalf("%d pages; the test wants several", pages)
	}
	sa, _ := a.GrainState("d1")
	sb, _ := b.GrainState("d1")
	sb.Epoch.Fence = sa.Epoch.Fence
	sb.HasEntity = sa.HasEntity // catalog data, not copied here
	if sa != sb {
		t.Fatalf("copy %+v, source %+v", sb, sa)
	}
	// The new owner's first write reaches all three.
	for _, db := range []*DB{a, b, c} {
		commit(t, db, CheckEpoch("d1", claim), AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(time.Hour)}))
		if e, _ := db.GetEpoch("d1"); e != (Epoch{Fence: claim, Wrote: claim, Seq: 1}) {
			t.Fatalf("after the first write of the new epoch: %+v", e)
		}
	}
}

// TestGrainState covers the summary fields one by one.
func TestGrainState(t *testing.T) {
	cases := []struct {
		name string
		data []Op
		want GrainState
	}{
		{"nothing", nil, GrainState{}},
		{"entity only", []Op{PutEntity(Entity{ID: "d1"})}, GrainState{HasEntity: true}},
		{"twin version", []Op{PutTwin("d1", []byte(`{"version":42,"x":{"version":9}}`))}, GrainState{HasTwin: true, TwinVersion: 42}},
		{"twin version fractional", []Op{PutTwin("d1", []byte(`{"version":4.9}`))}, GrainState{HasTwin: true, TwinVersion: 4}},
		{"twin version huge", []Op{PutTwin("d1", []byte(`{"version":1e300}`))}, GrainState{HasTwin: true}},
		{"twin version not a number", []Op{PutTwin("d1", []byte(`{"version":"seven"}`))}, GrainState{HasTwin: true}},
		{"twin without version", []Op{PutTwin("d1", []byte(`{"v":1}`))}, GrainState{HasTwin: true}},
		{"twin not JSON", []Op{PutTwin("d1", []byte(`nope`))}, GrainState{HasTwin: true}},
		{"twin not an object", []Op{PutTwin("d1", []byte(`[1,2]`))}, GrainState{HasTwin: true}},
		{"empty twin", []Op{PutTwin("d1", nil)}, GrainState{HasTwin: true}},
		{"telemetry and inbox, neighbours apart", []Op{
			AppendTelemetry("d1", TelemetryRecord{TS: t0}), AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(time.Hour)}),
			AppendTelemetry("d1", TelemetryRecord{TS: t0.Add(time.Minute)}),
			AppendTelemetry("d10", TelemetryRecord{TS: t0.Add(2 * time.Hour)}), AppendTelemetry("d", TelemetryRecord{TS: t0}),
			PutInbox(InboxMessage{ID: "a", DeviceID: "d1"}), PutInbox(InboxMessage{ID: "b", DeviceID: "d1"}),
			PutInbox(InboxMessage{ID: "a", DeviceID: "d10"}),
		}, GrainState{Telemetry: 3, NewestTelemetry: t0.Add(time.Hour).UnixNano(), Inbox: 2}},
		{"epoch", []Op{ClaimEpoch("d1", 9), CheckEpoch("d10", 11)}, GrainState{Epoch: Epoch{Fence: 9}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTemp(t, nil)
			if len(c.data) > 0 {
				commit(t, db, c.data...)
			}
			if got, err := db.GrainState("d1"); err != nil || got != c.want {
				t.Fatalf("GrainState = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
	t.Run("invalid id", func(t *testing.T) {
		db := openTemp(t, nil)
		for _, id := range []string{"", "a\x00b"} {
			if _, err := db.GrainState(id); !errors.Is(err, ErrInvalid) {
				t.Fatalf("GrainState(%q) = %v, want ErrInvalid", id, err)
			}
		}
	})
}

// buildCatalogSource fills db with a topology, identities and docs of every
// bucket, plus grain-scoped data that the catalog must leave out.
func buildCatalogSource(t *testing.T, db *DB) int {
	t.Helper()
	ops := []Op{
		PutEntity(Entity{ID: "site", Kind: "site", Tags: map[string]any{"city": "oslo"}, CreatedAt: t0}),
		PutEntity(Entity{ID: "r1", Kind: "room", Parent: "site"}),
		PutEntity(Entity{ID: "r2", Kind: "room", Parent: "site"}),
		PutEntity(Entity{ID: "gw", Kind: "gateway", Parent: "r1"}),
		PutEntity(Entity{ID: "d1", Kind: "device", Parent: "r1", ConnectedVia: "gw", Tags: map[string]any{"floor": 3}}),
		PutEntity(Entity{ID: "d2", Kind: "device", Parent: "r2", ConnectedVia: "gw"}),
		PutEntity(Entity{ID: "d3", Kind: "device", Parent: "r2", Tags: map[string]any{"floor": 3}}),
		PutIdentity(Identity{DeviceID: "d1", PrimaryKey: "p1", Status: "enabled", CreatedAt: t0}),
		PutIdentity(Identity{DeviceID: "d2", PrimaryKey: "p2", Status: "disabled"}),
		PutDoc(BucketRules, "rule/a", []byte(`{"a":1}`)), PutDoc(BucketRules, "rule/b", []byte(`{"b":1}`)),
		PutDoc(BucketRules, "\xff\xferaw", []byte(`{}`)), // a key that is not UTF-8: the cursor must survive JSON
		PutDoc(BucketAlerts, "al/1", []byte(`{"on":true}`)),
		PutDoc(BucketContrib, "r1/d1", []byte(`{"n":1}`)), PutDoc(BucketContrib, "gw/via/d1", []byte(`{"n":1}`)),
		PutDoc(BucketGrants, "d1/app", []byte(`{"r":true}`)),
		// Grain-scoped: not part of the catalog.
		PutTwin("d1", []byte(`{"version":1}`)), AppendTelemetry("d1", TelemetryRecord{TS: t0}),
		PutInbox(InboxMessage{ID: "m", DeviceID: "d1"}), ClaimEpoch("d1", 2),
	}
	commit(t, db, ops...)
	return 7 + 2 + 7 // entities, identities, docs
}

var catalogBuckets = [][]byte{bktEntities, bktChildren, bktVia, bktIdentities,
	[]byte(BucketRules), []byte(BucketAlerts), []byte(BucketContrib), []byte(BucketGrants)}

// TestCatalogSnapshot: paging the catalog of A into an empty B covers each
// entry once, in pages of at most limit, and B then answers the topology,
// identity and doc reads like A, with its indexes rebuilt.
func TestCatalogSnapshot(t *testing.T) {
	a := openTemp(t, nil)
	total := buildCatalogSource(t, a)
	cases := []struct {
		limit     int
		wantPages int
	}{
		{1, total},
		{2, (total + 1) / 2},
		{5, (total + 4) / 5},
		{total - 1, 2},
		{total, 1},
		{total + 1, 1},
		{0, 1}, // DefaultListLimit
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("limit %d", c.limit), func(t *testing.T) {
			b := openTemp(t, nil)
			pages, all := copyCatalog(t, a, b, c.limit)
			if pages != c.wantPages || len(all) != total {
				t.Fatalf("%d pages, %d ops; want %d, %d", pages, len(all), c.wantPages, total)
			}
			seen := map[string]bool{}
			for _, w := range all {
				id := w.T + " " + w.B + " " + w.K
				if seen[id] {
					t.Fatalf("%s sent twice", id)
				}
				seen[id] = true
				if w.T != "entity.put" && w.T != "identity.put" && w.T != "doc.put" {
					t.Fatalf("catalog op %s", w.T)
				}
				if !FromWire(w).Catalog() {
					t.Fatalf("%s is not a catalog op", id)
				}
			}
			// Same order as the stores: entities, identities, docs.
			if all[0].T != "entity.put" || all[0].K != "d1" || all[len(all)-1].B != string(BucketGrants) {
				t.Fatalf("order: first %+v, last %+v", all[0], all[len(all)-1])
			}
			if got, want := dump(t, b, catalogBuckets...), dump(t, a, catalogBuckets...); !reflect.DeepEqual(got, want) {
				t.Fatalf("catalog buckets differ:\n got %q\nwant %q", got, want)
			}
			if st, _ := b.GrainState("d1"); st != (GrainState{HasEntity: true}) {
				t.Fatalf("grain-scoped data or epoch came with the catalog: %+v", st)
			}
			checkSameCatalog(t, a, b)
		})
	}
	t.Run("invalid cursors", func(t *testing.T) {
		for _, cur := range []string{"x", "entities", "entities:", "bogus:ZDE", "entities:!!", "twins:ZDE", ":ZDE"} {
			if _, _, err := a.CatalogSnapshot(cur, 1); !errors.Is(err, ErrInvalid) {
				t.Errorf("CatalogSnapshot(%q) = %v, want ErrInvalid", cur, err)
			}
		}
	})
	t.Run("empty catalog", func(t *testing.T) {
		ops, next, err := openTemp(t, nil).CatalogSnapshot("", 10)
		if err != nil || ops == nil || len(ops) != 0 || next != "" {
			t.Fatalf("= %v, %q, %v", ops, next, err)
		}
	})
}

// checkSameCatalog compares the topology, identity and doc reads of a and b.
func checkSameCatalog(t *testing.T, a, b *DB) {
	t.Helper()
	reads := []struct {
		name string
		read func(db *DB) (any, error)
	}{
		{"ListEntities", func(db *DB) (any, error) { l, _, err := db.ListEntities(EntityFilter{}, "", 1000); return l, err }},
		{"ListEntities under site", func(db *DB) (any, error) {
			l, _, err := db.ListEntities(EntityFilter{Under: "site"}, "", 1000)
			return ids(l), err
		}},
		{"ListEntities by kind and tag", func(db *DB) (any, error) {
			l, _, err := db.ListEntities(EntityFilter{Kind: "device", Tags: map[string]string{"floor": "3"}}, "", 1000)
			return ids(l), err
		}},
		{"Subtree", func(db *DB) (any, error) { l, err := db.Subtree("site"); return ids(l), err }},
		{"Children r1", func(db *DB) (any, error) { l, err := db.Children("r1"); return ids(l), err }},
		{"Children r2", func(db *DB) (any, error) { l, err := db.Children("r2"); return ids(l), err }},
		{"Children site", func(db *DB) (any, error) { l, err := db.Children("site"); return ids(l), err }},
		{"ConnectedVia gw", func(db *DB) (any, error) { return db.ConnectedVia("gw") }},
		{"identity d1", func(db *DB) (any, error) { return db.GetIdentity("d1") }},
		{"identity d2", func(db *DB) (any, error) { return db.GetIdentity("d2") }},
		{"rules", func(db *DB) (any, error) { return db.ListDocs(BucketRules, "") }},
		{"alerts", func(db *DB) (any, error) { return db.ListDocs(BucketAlerts, "") }},
		{"contrib", func(db *DB) (any, error) { return db.ListDocs(BucketContrib, "") }},
		{"grants", func(db *DB) (any, error) { return db.ListDocs(BucketGrants, "") }},
	}
	for _, r := range reads {
		ra, errA := r.read(a)
		rb, errB := r.read(b)
		if errA != nil || errB != nil || !reflect.DeepEqual(ra, rb) {
			t.Errorf("%s: source %v (%v), replica %v (%v)", r.name, ra, errA, rb, errB)
		}
	}
	if kids, _ := b.Children("r2"); !slices.Equal(ids(kids), []string{"d2", "d3"}) {
		t.Errorf("replica Children(r2) = %v", ids(kids))
	}
	if via, _ := b.ConnectedVia("gw"); !slices.Equal(via, []string{"d1", "d2"}) {
		t.Errorf("replica ConnectedVia(gw) = %v", via)
	}
}
