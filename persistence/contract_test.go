package persistence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestContract runs the store contract against a bbolt file. Every
// implementation of the store (there is one) must pass runContract.
func TestContract(t *testing.T) {
	runContract(t, func(t *testing.T) *DB { return openTemp(t, nil) })
}

func runContract(t *testing.T, open func(t *testing.T) *DB) {
	t.Run("twins", func(t *testing.T) { contractTwins(t, open(t)) })
	t.Run("entities and indexes", func(t *testing.T) { contractIndexes(t, open(t)) })
	t.Run("subtree order", func(t *testing.T) { contractSubtree(t, open(t)) })
	t.Run("list filters and paging", func(t *testing.T) { contractList(t, open(t)) })
	t.Run("identities", func(t *testing.T) { contractIdentities(t, open(t)) })
	t.Run("telemetry", func(t *testing.T) { contractTelemetry(t, open(t)) })
	t.Run("prune telemetry", func(t *testing.T) { contractPrune(t, open(t)) })
	t.Run("inbox", func(t *testing.T) { contractInbox(t, open(t)) })
	t.Run("docs", func(t *testing.T) { contractDocs(t, open(t)) })
	t.Run("delete entity cascade", func(t *testing.T) { contractDeleteEntity(t, open(t)) })
	t.Run("invalid ops fail before queueing", func(t *testing.T) { contractInvalid(t, open(t)) })
	t.Run("ops see earlier writes of the batch", func(t *testing.T) { contractOrder(t, open(t)) })
}

func contractTwins(t *testing.T, db *DB) {
	if _, err := db.GetTwin("d1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTwin absent: err = %v, want ErrNotFound", err)
	}
	commit(t, db, PutTwin("d1", []byte(`{"version":1}`)), PutTwin("d2", []byte(`{"version":1}`)))
	commit(t, db, PutTwin("d1", []byte(`{"version":2}`)))
	got, err := db.GetTwin("d1")
	if err != nil || string(got) != `{"version":2}` {
		t.Fatalf("GetTwin = %s, %v", got, err)
	}
	got[0] = 'X' // the caller owns the copy
	if again, _ := db.GetTwin("d1"); again[0] != '{' {
		t.Fatal("GetTwin returned memory shared with the store")
	}
	if n, err := db.CountTwins(); n != 2 || err != nil {
		t.Fatalf("CountTwins = %d, %v; want 2", n, err)
	}
	commit(t, db, DeleteTwin("d1"), DeleteTwin("never-there"))
	if _, err := db.GetTwin("d1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTwin after delete: err = %v", err)
	}
	if n, _ := db.CountTwins(); n != 1 {
		t.Fatalf("CountTwins = %d, want 1", n)
	}
}

func contractIndexes(t *testing.T, db *DB) {
	put := func(id, kind, parent, via string) Op {
		return PutEntity(Entity{ID: id, Kind: kind, Parent: parent, ConnectedVia: via, CreatedAt: t0, UpdatedAt: t0})
	}
	commit(t, db,
		put("b1", "building", "", ""), put("r1", "room", "b1", ""), put("r2", "room", "b1", ""),
		put("gw1", "gateway", "r1", ""), put("gw2", "gateway", "r2", ""),
		put("d2", "device", "r1", "gw1"), put("d1", "device", "r1", "gw1"), put("d3", "device", "r2", "gw2"))

	type check struct{ children, via map[string][]string }
	verify := func(t *testing.T, want check) {
		t.Helper()
		for parent, w := range want.children {
			kids, err := db.Children(parent)
			if err != nil || !slices.Equal(ids(kids), w) {
				t.Errorf("Children(%s) = %v, %v; want %v", parent, ids(kids), err, w)
			}
		}
		for gw, w := range want.via {
			got, err := db.ConnectedVia(gw)
			if err != nil || !slices.Equal(got, w) {
				t.Errorf("ConnectedVia(%s) = %v, %v; want %v", gw, got, err, w)
			}
		}
	}
	steps := []struct {
		name string
		ops  []Op
		want check
	}{
		{"initial", nil, check{
			children: map[string][]string{"b1": {"r1", "r2"}, "r1": {"d1", "d2", "gw1"}, "r2": {"d3", "gw2"}, "d1": {}, "nope": {}},
			via:      map[string][]string{"gw1": {"d1", "d2"}, "gw2": {"d3"}, "d1": {}},
		}},
		{"re-parent and re-connect d1", []Op{put("d1", "device", "r2", "gw2")}, check{
			children: map[string][]string{"r1": {"d2", "gw1"}, "r2": {"d1", "d3", "gw2"}},
			via:      map[string][]string{"gw1": {"d2"}, "gw2": {"d1", "d3"}},
		}},
		{"detach d2 from parent and gateway", []Op{put("d2", "device", "", "")}, check{
			children: map[string][]string{"r1": {"gw1"}},
			via:      map[string][]string{"gw1": {}},
		}},
		{"same parent again is a no-op", []Op{put("d3", "device", "r2", "gw2")}, check{
			children: map[string][]string{"r2": {"d1", "d3", "gw2"}},
			via:      map[string][]string{"gw2": {"d1", "d3"}},
		}},
		{"delete d3", []Op{DeleteEntity("d3")}, check{
			children: map[string][]string{"r2": {"d1", "gw2"}},
			via:      map[string][]string{"gw2": {"d1"}},
		}},
		{"move twice in one commit", []Op{put("d1", "device", "b1", ""), put("d1", "device", "r1", "gw1")}, check{
			children: map[string][]string{"b1": {"r1", "r2"}, "r1": {"d1", "gw1"}, "r2": {"gw2"}},
			via:      map[string][]string{"gw1": {"d1"}, "gw2": {}},
		}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if len(s.ops) > 0 {
				commit(t, db, s.ops...)
			}
			verify(t, s.want)
		})
	}
	e, err := db.GetEntity("d1")
	if err != nil || e.Parent != "r1" || e.ConnectedVia != "gw1" || e.Kind != "device" || !e.CreatedAt.Equal(t0) {
		t.Fatalf("GetEntity(d1) = %+v, %v", e, err)
	}
	if _, err := db.GetEntity("d3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetEntity(deleted) err = %v", err)
	}
}

func contractSubtree(t *testing.T, db *DB) {
	// site ─┬─ bA ─┬─ f2 ── rz
	//       │      └─ f1 ─┬─ ry
	//       │             └─ rx
	//       └─ bB ── f3
	tree := [][2]string{{"site", ""}, {"bB", "site"}, {"bA", "site"}, {"f2", "bA"}, {"f1", "bA"},
		{"f3", "bB"}, {"rz", "f2"}, {"ry", "f1"}, {"rx", "f1"}}
	var ops []Op
	for _, n := range tree {
		ops = append(ops, PutEntity(Entity{ID: n[0], Kind: "k", Parent: n[1]}))
	}
	commit(t, db, ops...)
	cases := []struct {
		root string
		want []string
		err  error
	}{
		{"site", []string{"site", "bA", "bB", "f1", "f2", "f3", "rx", "ry", "rz"}, nil},
		{"bA", []string{"bA", "f1", "f2", "rx", "ry", "rz"}, nil},
		{"rx", []string{"rx"}, nil},
		{"missing", nil, ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.root, func(t *testing.T) {
			got, err := db.Subtree(c.root)
			if !errors.Is(err, c.err) || (c.err == nil && !slices.Equal(ids(got), c.want)) {
				t.Fatalf("Subtree(%s) = %v, %v; want %v, %v", c.root, ids(got), err, c.want, c.err)
			}
		})
	}
	// A cycle written by a careless caller must not hang Subtree.
	commit(t, db, PutEntity(Entity{ID: "c1", Kind: "k", Parent: "c2"}), PutEntity(Entity{ID: "c2", Kind: "k", Parent: "c1"}))
	if got, err := db.Subtree("c1"); err != nil || !slices.Equal(ids(got), []string{"c1", "c2"}) {
		t.Fatalf("Subtree(cycle) = %v, %v", ids(got), err)
	}
}

func contractList(t *testing.T, db *DB) {
	ents := []Entity{
		{ID: "b1", Kind: "building", Tags: map[string]any{"city": "Oslo"}},
		{ID: "r1", Kind: "room", Parent: "b1", Tags: map[string]any{"floor": 1.0, "hvac": true}},
		{ID: "r2", Kind: "room", Parent: "b1", Tags: map[string]any{"floor": 2.0}},
		{ID: "d1", Kind: "device", Parent: "r1", Tags: map[string]any{"model": "t100", "floor": 1.0}},
		{ID: "d2", Kind: "device", Parent: "r2", Tags: map[string]any{"model": "t100"}},
		{ID: "d3", Kind: "device", Parent: "r2", Tags: map[string]any{"model": "h7"}},
		{ID: "d4", Kind: "device", Tags: map[string]any{"model": "t100"}},
		{ID: "b2", Kind: "building"},
		{ID: "r3", Kind: "room", Parent: "b2"},
		{ID: "d5", Kind: "device", Parent: "r3"},
	}
	var ops []Op
	for _, e := range ents {
		ops = append(ops, PutEntity(e))
	}
	commit(t, db, ops...)
	cases := []struct {
		name string
		f    EntityFilter
		want []string
	}{
		{"all", EntityFilter{}, []string{"b1", "b2", "d1", "d2", "d3", "d4", "d5", "r1", "r2", "r3"}},
		{"kind", EntityFilter{Kind: "device"}, []string{"d1", "d2", "d3", "d4", "d5"}},
		{"under building", EntityFilter{Under: "b1"}, []string{"d1", "d2", "d3", "r1", "r2"}},
		{"under room", EntityFilter{Under: "r2"}, []string{"d2", "d3"}},
		{"under leaf", EntityFilter{Under: "d1"}, []string{}},
		{"under unknown", EntityFilter{Under: "zz"}, []string{}},
		{"kind under", EntityFilter{Kind: "device", Under: "b1"}, []string{"d1", "d2", "d3"}},
		{"tag string", EntityFilter{Tags: map[string]string{"model": "t100"}}, []string{"d1", "d2", "d4"}},
		{"tag number", EntityFilter{Tags: map[string]string{"floor": "1"}}, []string{"d1", "r1"}},
		{"tag bool", EntityFilter{Tags: map[string]string{"hvac": "true"}}, []string{"r1"}},
		{"two tags", EntityFilter{Tags: map[string]string{"model": "t100", "floor": "1"}}, []string{"d1"}},
		{"tag and under", EntityFilter{Under: "b1", Tags: map[string]string{"model": "t100"}}, []string{"d1", "d2"}},
		{"tag absent", EntityFilter{Tags: map[string]string{"nope": ""}}, []string{}},
		{"within building", EntityFilter{Within: "b1"}, []string{"b1", "d1", "d2", "d3", "r1", "r2"}},
		{"within leaf", EntityFilter{Within: "d1"}, []string{"d1"}},
		{"within unknown", EntityFilter{Within: "zz"}, []string{}},
		{"within and under", EntityFilter{Within: "b1", Under: "r2"}, []string{"d2", "d3"}},
		{"within and kind", EntityFilter{Within: "r2", Kind: "room"}, []string{"r2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, limit := range []int{1, 2, 3, 100} {
				var got []string
				after, pages := "", 0
				for {
					list, next, err := db.ListEntities(c.f, after, limit)
					if err != nil {
						t.Fatalf("ListEntities: %v", err)
					}
					if len(list) > limit {
						t.Fatalf("limit %d: page of %d", limit, len(list))
					}
					got = append(got, ids(list)...)
					if pages++; pages > 20 {
						t.Fatal("paging does not end")
					}
					if next == "" {
						break
					}
					if len(list) != limit || next != list[len(list)-1].ID {
						t.Fatalf("limit %d: next %q after a page of %v", limit, next, ids(list))
					}
					after = next
				}
				if got == nil {
					got = []string{}
				}
				if !slices.Equal(got, c.want) {
					t.Fatalf("limit %d: got %v, want %v", limit, got, c.want)
				}
				if wantPages := max(1, (len(c.want)+limit-1)/limit); pages != wantPages {
					t.Fatalf("limit %d: %d pages, want %d (next must be empty on the last full page)", limit, pages, wantPages)
				}
			}
		})
	}
	t.Run("after an ID that does not exist", func(t *testing.T) {
		list, _, err := db.ListEntities(EntityFilter{}, "c", 2)
		if err != nil || !slices.Equal(ids(list), []string{"d1", "d2"}) {
			t.Fatalf("got %v, %v", ids(list), err)
		}
	})
	t.Run("default limit", func(t *testing.T) {
		list, next, err := db.ListEntities(EntityFilter{}, "", 0)
		if err != nil || len(list) != len(ents) || next != "" {
			t.Fatalf("got %d, %q, %v", len(list), next, err)
		}
	})
}

func contractIdentities(t *testing.T, db *DB) {
	idn := Identity{DeviceID: "d1", PrimaryKey: "p", SecondaryKey: "s", Status: "enabled", CreatedAt: t0}
	commit(t, db, PutIdentity(idn))
	got, err := db.GetIdentity("d1")
	if err != nil || !reflect.DeepEqual(got, idn) {
		t.Fatalf("GetIdentity = %+v, %v", got, err)
	}
	idn.Status = "disabled"
	commit(t, db, PutIdentity(idn))
	if got, _ := db.GetIdentity("d1"); got.Status != "disabled" {
		t.Fatalf("status = %q", got.Status)
	}
	// Identities live apart from topology: no entity, no twin.
	if _, err := db.GetEntity("d1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("identity created an entity: %v", err)
	}
	commit(t, db, DeleteIdentity("d1"))
	if _, err := db.GetIdentity("d1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetIdentity after delete: %v", err)
	}
}

func contractTelemetry(t *testing.T, db *DB) {
	ctx := context.Background()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	rec := func(s int, points map[string]any) TelemetryRecord {
		return TelemetryRecord{TS: at(s), Points: points}
	}
	commit(t, db,
		AppendTelemetry("d1", rec(1, map[string]any{"temp": 20.0})),
		AppendTelemetry("d1", rec(3, map[string]any{"temp": 21.0, "hum": 40.0})),
		AppendTelemetry("d1", rec(2, map[string]any{"hum": 41.0})),
		AppendTelemetry("d1", rec(5, map[string]any{"temp": 22.0})),
		// Neighbours whose IDs share a prefix must not leak into d1's range.
		AppendTelemetry("d", rec(4, map[string]any{"temp": 1.0})),
		AppendTelemetry("d1x", rec(4, map[string]any{"temp": 2.0})),
		AppendTelemetry("d2", TelemetryRecord{TS: at(1), Raw: []byte{0, 1, 2}, ContentType: "application/octet-stream",
			Properties: map[string]string{"k": "v"}}),
	)
	// Equal timestamps: three records at the same instant, in two commits.
	commit(t, db, AppendTelemetry("d1", rec(4, map[string]any{"temp": 30.0})), AppendTelemetry("d1", rec(4, map[string]any{"temp": 31.0})))
	commit(t, db, AppendTelemetry("d1", rec(4, map[string]any{"temp": 32.0})))

	temps := func(rs []TelemetryRecord) []string {
		var out []string
		for _, r := range rs {
			out = append(out, fmt.Sprintf("%d:%v", r.TS.Unix()-t0.Unix(), r.Points["temp"]))
		}
		return out
	}
	cases := []struct {
		name string
		dev  string
		q    TelemetryQuery
		want []string
	}{
		{"all newest first, equal TS newest first", "d1", TelemetryQuery{},
			[]string{"5:22", "4:32", "4:31", "4:30", "3:21", "2:<nil>", "1:20"}},
		{"name filter", "d1", TelemetryQuery{Name: "hum"}, []string{"3:21", "2:<nil>"}},
		{"from", "d1", TelemetryQuery{From: at(4)}, []string{"5:22", "4:32", "4:31", "4:30"}},
		{"to inclusive", "d1", TelemetryQuery{To: at(3)}, []string{"3:21", "2:<nil>", "1:20"}},
		{"from to", "d1", TelemetryQuery{From: at(2), To: at(3)}, []string{"3:21", "2:<nil>"}},
		{"limit", "d1", TelemetryQuery{Limit: 2}, []string{"5:22", "4:32"}},
		{"name and limit", "d1", TelemetryQuery{Name: "temp", Limit: 5}, []string{"5:22", "4:32", "4:31", "4:30", "3:21"}},
		{"to before from", "d1", TelemetryQuery{From: at(4), To: at(2)}, nil},
		{"to before everything", "d1", TelemetryQuery{To: at(0)}, nil},
		{"from after everything", "d1", TelemetryQuery{From: at(6)}, nil},
		{"prefix device", "d", TelemetryQuery{}, []string{"4:1"}},
		{"last device", "d1x", TelemetryQuery{}, []string{"4:2"}},
		{"unknown device", "zz", TelemetryQuery{}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := db.QueryTelemetry(ctx, c.dev, c.q)
			if err != nil || got == nil || !slices.Equal(temps(got), c.want) {
				t.Fatalf("QueryTelemetry(%s, %+v) = %v, %v; want %v", c.dev, c.q, temps(got), err, c.want)
			}
		})
	}
	t.Run("fields round trip", func(t *testing.T) {
		got, err := db.QueryTelemetry(ctx, "d2", TelemetryQuery{})
		want := TelemetryRecord{TS: at(1), Raw: []byte{0, 1, 2}, ContentType: "application/octet-stream", Properties: map[string]string{"k": "v"}}
		if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("keys are unique and ordered", func(t *testing.T) {
		var seqs []uint32
		if err := db.MoveIngestLog(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, r := range storedRecs(t, db, "d1") {
			if r.ns == at(4).UnixNano() {
				seqs = append(seqs, r.seq)
			}
		}
		if !slices.Equal(seqs, []uint32{0, 1, 2}) {
			t.Fatalf("seqs at equal TS = %v, want [0 1 2]", seqs)
		}
	})
	t.Run("limit is capped", func(t *testing.T) {
		var ops []Op
		for i := range MaxTelemetryLimit + 5 {
			ops = append(ops, AppendTelemetry("big", TelemetryRecord{TS: t0.Add(time.Duration(i))}))
		}
		commit(t, db, ops...)
		for _, c := range []struct{ limit, want int }{{0, DefaultTelemetryLimit}, {-1, DefaultTelemetryLimit}, {7, 7}, {1 << 30, MaxTelemetryLimit}} {
			got, err := db.QueryTelemetry(ctx, "big", TelemetryQuery{Limit: c.limit})
			if err != nil || len(got) != c.want {
				t.Fatalf("limit %d: %d records, %v; want %d", c.limit, len(got), err, c.want)
			}
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := db.QueryTelemetry(cctx, "d1", TelemetryQuery{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("zero TS means now", func(t *testing.T) {
		before := time.Now()
		commit(t, db, AppendTelemetry("now", TelemetryRecord{Points: map[string]any{"x": 1.0}}))
		got, err := db.QueryTelemetry(ctx, "now", TelemetryQuery{})
		if err != nil || len(got) != 1 || got[0].TS.Before(before) || got[0].TS.After(time.Now()) {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
}

func contractPrune(t *testing.T, db *DB) {
	ctx := context.Background()
	var ops []Op
	// Three devices, one of them with enough old records to need several
	// prune transactions.
	for i := range pruneBatch + 50 {
		ops = append(ops, AppendTelemetry("a", TelemetryRecord{TS: t0.Add(time.Duration(i) * time.Millisecond)}))
	}
	for i := range 10 {
		ops = append(ops, AppendTelemetry("b", TelemetryRecord{TS: t0.Add(time.Duration(i) * time.Hour)}))
		ops = append(ops, AppendTelemetry("c", TelemetryRecord{TS: t0.Add(-time.Duration(i) * time.Hour)}))
	}
	commit(t, db, ops...)
	cut := t0.Add(5*time.Hour + time.Minute)
	n, err := db.PruneTelemetry(ctx, cut)
	// a: all pruneBatch+50 (all within 11 s of t0); b: 0h..5h = 6; c: 10, all at or before t0.
	if want := pruneBatch + 50 + 6 + 10; err != nil || n != want {
		t.Fatalf("PruneTelemetry = %d, %v; want %d", n, err, want)
	}
	for dev, want := range map[string]int{"a": 0, "b": 4, "c": 0} {
		got, _ := db.QueryTelemetry(ctx, dev, TelemetryQuery{Limit: MaxTelemetryLimit})
		if len(got) != want {
			t.Errorf("%s: %d records left, want %d", dev, len(got), want)
		}
		for _, r := range got {
			if r.TS.Before(cut) {
				t.Errorf("%s: record at %v survived", dev, r.TS)
			}
		}
	}
	if n, err := db.PruneTelemetry(ctx, cut); n != 0 || err != nil {
		t.Fatalf("second prune = %d, %v", n, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := db.PruneTelemetry(cctx, time.Now()); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled prune: %v", err)
	}
}

func contractInbox(t *testing.T, db *DB) {
	msg := func(id string, seq uint64) InboxMessage {
		return InboxMessage{ID: id, DeviceID: "d1", Payload: []byte(`{"cmd":"` + id + `"}`), EnqueuedAt: t0.Add(time.Duration(seq)),
			ExpiresAt: t0.Add(time.Hour), State: "pending", Seq: seq, Properties: map[string]string{"p": id}}
	}
	// IDs deliberately out of enqueue order.
	commit(t, db, PutInbox(msg("zz", 1)), PutInbox(msg("aa", 2)), PutInbox(msg("mm", 3)),
		PutInbox(InboxMessage{ID: "other", DeviceID: "d10", State: "pending", Seq: 1}))
	got, err := db.Inbox("d1")
	if err != nil || len(got) != 3 || got[0].ID != "zz" || got[1].ID != "aa" || got[2].ID != "mm" {
		t.Fatalf("Inbox = %+v, %v", got, err)
	}
	if !reflect.DeepEqual(got[0], msg("zz", 1)) {
		t.Fatalf("round trip: %+v", got[0])
	}
	m := msg("aa", 2)
	m.State, m.DeliveredAt = "delivered", t0.Add(time.Minute)
	commit(t, db, PutInbox(m))
	one, err := db.InboxMessage("d1", "aa")
	if err != nil || one.State != "delivered" || !one.DeliveredAt.Equal(m.DeliveredAt) {
		t.Fatalf("InboxMessage = %+v, %v", one, err)
	}
	if got, _ := db.Inbox("d1"); len(got) != 3 || got[1].State != "delivered" {
		t.Fatalf("update changed order or count: %+v", got)
	}
	commit(t, db, DeleteInbox("d1", "zz"))
	if _, err := db.InboxMessage("d1", "zz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted message: %v", err)
	}
	if got, _ := db.Inbox("d1"); len(got) != 2 {
		t.Fatalf("Inbox after delete: %d", len(got))
	}
	if got, err := db.Inbox("nobody"); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty inbox = %v, %v", got, err)
	}
	if _, err := db.InboxMessage("d1", "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent message: %v", err)
	}
}

func contractDocs(t *testing.T, db *DB) {
	for _, b := range []Bucket{BucketRules, BucketAlerts, BucketContrib, BucketGrants} {
		t.Run(string(b), func(t *testing.T) {
			commit(t, db, PutDoc(b, "x/1", []byte(`1`)), PutDoc(b, "x/2", []byte(`2`)), PutDoc(b, "y/1", []byte(`3`)))
			got, err := db.GetDoc(b, "x/2")
			if err != nil || string(got) != "2" {
				t.Fatalf("GetDoc = %s, %v", got, err)
			}
			list, err := db.ListDocs(b, "x/")
			if err != nil || len(list) != 2 || string(list["x/1"]) != "1" || string(list["x/2"]) != "2" {
				t.Fatalf("ListDocs(x/) = %v, %v", list, err)
			}
			if all, _ := db.ListDocs(b, ""); len(all) != 3 {
				t.Fatalf("ListDocs('') = %d docs", len(all))
			}
			commit(t, db, DeleteDoc(b, "x/1"), DeleteDoc(b, "x/1"))
			if _, err := db.GetDoc(b, "x/1"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("GetDoc after delete: %v", err)
			}
			if list, _ := db.ListDocs(b, "x/"); len(list) != 1 {
				t.Fatalf("ListDocs after delete = %v", list)
			}
		})
	}
	// Buckets are separate.
	commit(t, db, PutDoc(BucketRules, "same", []byte(`"r"`)), PutDoc(BucketAlerts, "same", []byte(`"a"`)))
	if r, _ := db.GetDoc(BucketRules, "same"); string(r) != `"r"` {
		t.Fatalf("rules/same = %s", r)
	}
	for _, bad := range []Bucket{"twins", "", "nope"} {
		if _, err := db.GetDoc(bad, "k"); !errors.Is(err, ErrInvalid) {
			t.Errorf("GetDoc(%q): %v", bad, err)
		}
		if _, err := db.ListDocs(bad, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("ListDocs(%q): %v", bad, err)
		}
	}
}

func contractDeleteEntity(t *testing.T, db *DB) {
	ctx := context.Background()
	commit(t, db,
		PutEntity(Entity{ID: "r1", Kind: "room"}), PutEntity(Entity{ID: "gw", Kind: "gateway", Parent: "r1"}),
		PutEntity(Entity{ID: "d1", Kind: "device", Parent: "r1", ConnectedVia: "gw"}),
		PutEntity(Entity{ID: "d10", Kind: "device", Parent: "r1"}), // shares a prefix with d1
		PutTwin("d1", []byte(`{}`)), PutTwin("d10", []byte(`{}`)),
		PutIdentity(Identity{DeviceID: "d1", Status: "enabled"}), PutIdentity(Identity{DeviceID: "d10"}),
		PutInbox(InboxMessage{ID: "m", DeviceID: "d1"}), PutInbox(InboxMessage{ID: "m", DeviceID: "d10"}),
		AppendTelemetry("d1", TelemetryRecord{TS: t0}), AppendTelemetry("d10", TelemetryRecord{TS: t0}),
		PutDoc(BucketContrib, "d1/x", []byte(`1`)),           // contribution to d1
		PutDoc(BucketContrib, "r1/d1", []byte(`1`)),          // d1's contribution to its parent
		PutDoc(BucketContrib, "r1/contains/d1", []byte(`1`)), // same, with an edge segment
		PutDoc(BucketContrib, "gw/via/d1", []byte(`1`)),      // d1's contribution to its gateway
		PutDoc(BucketContrib, "r1/d10", []byte(`1`)),
		PutDoc(BucketContrib, "d10/x", []byte(`1`)),
		PutDoc(BucketGrants, "d1/app", []byte(`1`)),
	)
	commit(t, db, DeleteEntity("d1"))

	gone := []struct {
		name string
		err  error
	}{
		{"entity", func() error { _, err := db.GetEntity("d1"); return err }()},
		{"twin", func() error { _, err := db.GetTwin("d1"); return err }()},
		{"identity", func() error { _, err := db.GetIdentity("d1"); return err }()},
		{"inbox", func() error { _, err := db.InboxMessage("d1", "m"); return err }()},
	}
	for _, g := range gone {
		if !errors.Is(g.err, ErrNotFound) {
			t.Errorf("%s of deleted entity: err = %v, want ErrNotFound", g.name, g.err)
		}
	}
	if tel, _ := db.QueryTelemetry(ctx, "d1", TelemetryQuery{}); len(tel) != 0 {
		t.Errorf("telemetry survived: %v", tel)
	}
	contrib, _ := db.ListDocs(BucketContrib, "")
	if want := []string{"d10/x", "r1/d10"}; !slices.Equal(slices.Sorted(maps.Keys(contrib)), want) {
		t.Errorf("contrib left = %v, want %v", slices.Sorted(maps.Keys(contrib)), want)
	}
	if kids, _ := db.Children("r1"); !slices.Equal(ids(kids), []string{"d10", "gw"}) {
		t.Errorf("Children(r1) = %v", ids(kids))
	}
	if via, _ := db.ConnectedVia("gw"); len(via) != 0 {
		t.Errorf("ConnectedVia(gw) = %v", via)
	}
	// The neighbour with a shared prefix is untouched.
	if _, err := db.GetTwin("d10"); err != nil {
		t.Errorf("d10 twin: %v", err)
	}
	if _, err := db.InboxMessage("d10", "m"); err != nil {
		t.Errorf("d10 inbox: %v", err)
	}
	if tel, _ := db.QueryTelemetry(ctx, "d10", TelemetryQuery{}); len(tel) != 1 {
		t.Errorf("d10 telemetry: %v", tel)
	}
	// Grants are not part of the cascade.
	if _, err := db.GetDoc(BucketGrants, "d1/app"); err != nil {
		t.Errorf("grant: %v", err)
	}
	// Deleting what is already gone is fine.
	commit(t, db, DeleteEntity("d1"))
}

func contractInvalid(t *testing.T, db *DB) {
	ctx := context.Background()
	cases := []struct {
		name string
		op   Op
	}{
		{"zero op", Op{}},
		{"entity id with NUL", PutEntity(Entity{ID: "a\x00b"})},
		{"parent with NUL", PutEntity(Entity{ID: "a", Parent: "p\x00"})},
		{"unencodable tag", PutEntity(Entity{ID: "a", Tags: map[string]any{"ch": make(chan int)}})},
		{"delete entity empty", DeleteEntity("")},
		{"telemetry empty device", AppendTelemetry("", TelemetryRecord{TS: t0})},
		{"telemetry device with NUL", AppendTelemetry("d\x00", TelemetryRecord{TS: t0})},
		{"telemetry before 1970", AppendTelemetry("d", TelemetryRecord{TS: time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC)})},
		{"inbox empty message id", PutInbox(InboxMessage{DeviceID: "d"})},
		{"inbox empty device", DeleteInbox("", "m")},
		{"doc unknown bucket", PutDoc("twins", "k", nil)},
		{"delete doc unknown bucket", DeleteDoc("", "k")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := db.Commit(ctx, PutTwin("side", []byte(`1`)), c.op)
			if err == nil {
				t.Fatal("Commit succeeded")
			}
			if c.name != "unencodable tag" && !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if _, err := db.GetTwin("side"); !errors.Is(err, ErrNotFound) {
				t.Fatal("the other op of the failed Commit was written")
			}
		})
	}
	if err := db.Commit(ctx); err != nil {
		t.Fatalf("Commit() = %v", err)
	}
}

func contractOrder(t *testing.T, db *DB) {
	// Within one Commit and across the requests of a batch, later ops see
	// earlier ones: the index follows the last PutEntity.
	commit(t, db, PutEntity(Entity{ID: "x", Parent: "p1"}), PutEntity(Entity{ID: "x", Parent: "p2"}),
		DeleteEntity("x"), PutEntity(Entity{ID: "x", Parent: "p3"}))
	for p, want := range map[string]int{"p1": 0, "p2": 0, "p3": 1} {
		if kids, _ := db.Children(p); len(kids) != want {
			t.Errorf("Children(%s) = %v", p, ids(kids))
		}
	}
	// The raw index holds exactly one entry for x.
	n := 0
	_ = db.Bolt().View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bktChildren).ForEach(func(k, _ []byte) error {
			if bytes.HasSuffix(k, []byte("\x00x")) {
				n++
			}
			return nil
		})
	})
	if n != 1 {
		t.Fatalf("%d index entries for x", n)
	}
}

// TestReopen writes to every store, closes, reopens and reads it all back.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "twinmesh.db")
	db, err := Open(path, nil) // real fsync
	if err != nil {
		t.Fatal(err)
	}
	commit(t, db,
		PutTwin("d1", []byte(`{"v":1}`)),
		PutEntity(Entity{ID: "r1", Kind: "room"}),
		PutEntity(Entity{ID: "d1", Kind: "device", Parent: "r1", ConnectedVia: "gw", Tags: map[string]any{"a": "b"}, CreatedAt: t0, UpdatedAt: t0}),
		PutIdentity(Identity{DeviceID: "d1", PrimaryKey: "k", Status: "enabled", CreatedAt: t0}),
		AppendTelemetry("d1", TelemetryRecord{TS: t0, Points: map[string]any{"t": 1.0}}),
		PutInbox(InboxMessage{ID: "m1", DeviceID: "d1", State: "pending", Seq: 1, EnqueuedAt: t0}),
		PutDoc(BucketRules, "r", []byte(`{"rule":1}`)),
		PutDoc(BucketGrants, "d1/app", []byte(`{}`)),
	)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	checks := []struct {
		name string
		ok   func() bool
	}{
		{"twin", func() bool { b, err := db.GetTwin("d1"); return err == nil && string(b) == `{"v":1}` }},
		{"entity", func() bool {
			e, err := db.GetEntity("d1")
			return err == nil && e.Parent == "r1" && e.Tags["a"] == "b" && e.CreatedAt.Equal(t0)
		}},
		{"children index", func() bool { k, err := db.Children("r1"); return err == nil && len(k) == 1 }},
		{"via index", func() bool { v, err := db.ConnectedVia("gw"); return err == nil && slices.Equal(v, []string{"d1"}) }},
		{"identity", func() bool { i, err := db.GetIdentity("d1"); return err == nil && i.PrimaryKey == "k" }},
		{"telemetry", func() bool {
			r, err := db.QueryTelemetry(ctx, "d1", TelemetryQuery{})
			return err == nil && len(r) == 1 && r[0].Points["t"] == 1.0
		}},
		{"inbox", func() bool { m, err := db.Inbox("d1"); return err == nil && len(m) == 1 && m[0].ID == "m1" }},
		{"rules", func() bool { d, err := db.GetDoc(BucketRules, "r"); return err == nil && string(d) == `{"rule":1}` }},
		{"grants", func() bool { d, err := db.ListDocs(BucketGrants, "d1/"); return err == nil && len(d) == 1 }},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if !c.ok() {
				t.Fatal("lost after reopen")
			}
		})
	}
}
