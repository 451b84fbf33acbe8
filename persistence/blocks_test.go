package persistence

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// layoutStep is one write applied to both layouts in TestBlockLayout.
type layoutStep struct {
	op  string // "append", "wire" (a replica's copy: FromWire), "move", "prune", "reset"
	dev string
	rec TelemetryRecord
	cut time.Time // prune
}

// appends returns n append steps for dev, at start, start+every, ….
func appends(dev string, start time.Time, every time.Duration, n int, rec func(i int) TelemetryRecord) []layoutStep {
	out := make([]layoutStep, n)
	for i := range out {
		r := rec(i)
		r.TS = start.Add(time.Duration(i) * every)
		out[i] = layoutStep{op: "append", dev: dev, rec: r}
	}
	return out
}

func plainRec(i int) TelemetryRecord {
	return TelemetryRecord{MessageID: fmt.Sprintf("m-%d", i), Points: map[string]any{"temperature": 21.5 + float64(i%10), "humidity": 40.0, "seq": float64(i)}}
}

// interleave merges step lists round-robin, as devices write side by side.
func interleave(lists ...[]layoutStep) []layoutStep {
	var out []layoutStep
	for i := 0; ; i++ {
		added := false
		for _, l := range lists {
			if i < len(l) {
				out = append(out, l[i])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

// every inserts a step after each n steps of list.
func every(n int, s layoutStep, list []layoutStep) []layoutStep {
	var out []layoutStep
	for i, st := range list {
		out = append(out, st)
		if (i+1)%n == 0 {
			out = append(out, s)
		}
	}
	return out
}

func cat(lists ...[]layoutStep) []layoutStep {
	var out []layoutStep
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

var move = layoutStep{op: "move"}

// TestBlockLayout writes the same telemetry into a store that keeps every
// record on its own (the layout before schema 8, Options.noIngestLog) and
// into one that packs them into blocks through the ingest log, and checks
// that every read answers the same: queries by range, name and limit
// (newest first), the grain state, snapshot pages, and what retention
// deletes.
func TestBlockLayout(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := time.Second
	cases := []struct {
		name  string
		steps []layoutStep
		devs  []string
	}{
		{"in order, moves between", every(37, move, interleave(
			appends("d1", base, sec, 400, plainRec),
			appends("d2", base.Add(sec/2), 3*sec, 150, plainRec))), []string{"d1", "d2"}},
		{"equal timestamps across a move", cat(
			appends("d1", base, 0, 3, plainRec), []layoutStep{move},
			appends("d1", base, 0, 2, plainRec), appends("d1", base.Add(sec), 0, 2, plainRec), []layoutStep{move},
			appends("d1", base, 0, 1, plainRec)), []string{"d1"}},
		{"clock went back into blocks", cat(
			appends("d1", base.Add(100*sec), sec, 100, plainRec), []layoutStep{move},
			appends("d1", base.Add(50*sec), sec, 100, plainRec), []layoutStep{move},
			appends("d1", base.Add(120*sec+sec/2), 0, 1, plainRec),
			appends("d1", base.Add(10*sec), 7*sec, 40, plainRec), []layoutStep{move}), []string{"d1"}},
		{"JSON records between binary ones", every(13, move, appends("d1", base, sec, 120, func(i int) TelemetryRecord {
			r := plainRec(i)
			if i%5 == 2 {
				r.Points["nested"] = map[string]any{"a": 1.0} // no binary form
			}
			return r
		})), []string{"d1"}},
		{"no points, raw payloads and properties", every(20, move, appends("d1", base, sec, 90, func(i int) TelemetryRecord {
			if i%2 == 0 {
				return TelemetryRecord{Raw: []byte{0, byte(i), 2}, ContentType: "application/octet-stream", Properties: map[string]string{"k": fmt.Sprint(i)}}
			}
			return TelemetryRecord{Points: map[string]any{"on": i%3 == 0, "mode": "eco", "big": 1e300, "neg": -7.0}}
		})), []string{"d1"}},
		{"more names than a block holds", every(50, move, appends("d1", base, sec, 200, func(i int) TelemetryRecord {
			return TelemetryRecord{Points: map[string]any{fmt.Sprintf("p%d", i): float64(i), "t": 1.5}}
		})), []string{"d1"}},
		{"replica copies, repeated and out of order", cat(
			appends("d1", base, sec, 50, plainRec), []layoutStep{move},
			wire(appends("d1", base.Add(25*sec), sec, 50, plainRec)), []layoutStep{move},
			wire(appends("d1", base.Add(sec/3), sec, 30, plainRec)), []layoutStep{move}), []string{"d1"}},
		{"retention cuts through blocks", cat(
			every(30, move, interleave(appends("d1", base, sec, 300, plainRec), appends("d2", base, 2*sec, 150, plainRec))),
			[]layoutStep{{op: "prune", cut: base.Add(95*sec + sec/2)}},
			appends("d1", base.Add(90*sec+sec/4), sec, 20, plainRec), []layoutStep{move},
			[]layoutStep{{op: "prune", cut: base.Add(200 * sec)}, {op: "prune", cut: base.Add(200 * sec)}},
			[]layoutStep{{op: "prune", cut: base.Add(time.Hour)}},
			appends("d1", base.Add(2*time.Hour), sec, 10, plainRec)), []string{"d1", "d2"}},
		{"grain data reset", cat(
			every(40, move, appends("d1", base, sec, 100, plainRec)), appends("d1", base.Add(200*sec), sec, 5, plainRec),
			[]layoutStep{{op: "reset", dev: "d1"}}, appends("d1", base.Add(50*sec), sec, 70, plainRec), []layoutStep{move}), []string{"d1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			single := openTemp(t, &Options{NoSync: true, noIngestLog: true})
			blocks := openTemp(t, &Options{NoSync: true, logIdle: time.Hour})
			runLayoutSteps(t, single, blocks, c.steps)
			if err := blocks.MoveIngestLog(t.Context()); err != nil {
				t.Fatal(err)
			}
			compareLayouts(t, single, blocks, c.devs)
		})
	}
	t.Run("blocks are used", func(t *testing.T) {
		db := openTemp(t, &Options{NoSync: true, logIdle: time.Hour})
		runLayoutSteps(t, openTemp(t, &Options{NoSync: true, noIngestLog: true}), db,
			every(25, move, appends("d1", base, sec, 1000, plainRec)))
		if err := db.MoveIngestLog(t.Context()); err != nil {
			t.Fatal(err)
		}
		var keys int
		_ = db.Bolt().View(func(tx *bbolt.Tx) error { keys = tx.Bucket(bktTelemetry).Stats().KeyN; return nil })
		if min := 1000 / blockMaxRecords; keys < min || keys > 3*min {
			t.Fatalf("1,000 records in %d entries, want between %d and %d", keys, min, 3*min)
		}
	})
}

// wire turns append steps into a replica's copies of them.
func wire(steps []layoutStep) []layoutStep {
	for i := range steps {
		steps[i].op = "wire"
	}
	return steps
}

// runLayoutSteps applies steps to both stores; consecutive writes share a
// commit, as a node's do.
func runLayoutSteps(t testing.TB, single, blocks *DB, steps []layoutStep) {
	t.Helper()
	ctx := t.Context()
	var ops []Op
	flush := func() {
		if len(ops) > 0 {
			commit(t, single, ops...)
			commit(t, blocks, ops...)
			ops = ops[:0]
		}
	}
	for _, s := range steps {
		switch s.op {
		case "append":
			ops = append(ops, AppendTelemetry(s.dev, s.rec))
		case "wire":
			_, op := overJSON(t, AppendTelemetry(s.dev, s.rec))
			ops = append(ops, op)
		case "reset":
			ops = append(ops, ResetGrainData(s.dev))
		case "move":
			flush()
			if err := blocks.MoveIngestLog(ctx); err != nil {
				t.Fatal(err)
			}
		case "prune":
			flush()
			n1, err1 := single.PruneTelemetry(ctx, s.cut)
			n2, err2 := blocks.PruneTelemetry(ctx, s.cut)
			if err1 != nil || err2 != nil || n1 != n2 {
				t.Fatalf("prune before %v: records of their own %d, %v; blocks %d, %v", s.cut, n1, err1, n2, err2)
			}
		}
		if len(ops) == 100 {
			flush()
		}
	}
	flush()
}

// compareLayouts checks that the reads of devs answer the same in both.
func compareLayouts(t testing.TB, single, blocks *DB, devs []string) {
	t.Helper()
	ctx := context.Background()
	for _, dev := range devs {
		all := storedRecs(t, single, dev)
		if got := storedRecs(t, blocks, dev); !reflect.DeepEqual(got, all) {
			t.Fatalf("%s: blocks hold %d records, records of their own %d; first difference %s", dev, len(got), len(all), firstDiff(got, all))
		}
		qs := []TelemetryQuery{{}, {Limit: MaxTelemetryLimit}, {Name: "temperature", Limit: 7}, {Name: "nested"}, {Name: "p150"}}
		for _, i := range []int{0, 1, len(all) / 3, len(all) / 2, len(all) - 1} {
			if i < 0 || i >= len(all) {
				continue
			}
			at := time.Unix(0, all[i].ns)
			qs = append(qs, TelemetryQuery{From: at}, TelemetryQuery{To: at, Limit: 5}, TelemetryQuery{From: at, To: at.Add(20 * time.Second), Limit: 1000},
				TelemetryQuery{From: at.Add(-time.Nanosecond), To: at.Add(time.Nanosecond)}, TelemetryQuery{To: at.Add(-time.Nanosecond)})
		}
		for _, q := range qs {
			want, err1 := single.QueryTelemetry(ctx, dev, q)
			got, err2 := blocks.QueryTelemetry(ctx, dev, q)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %+v: blocks %d records, %v; records of their own %d, %v", dev, q, len(got), err2, len(want), err1)
			}
		}
		st1, err1 := single.GrainState(dev)
		st2, err2 := blocks.GrainState(dev)
		if err1 != nil || err2 != nil || st1 != st2 {
			t.Fatalf("%s: GrainState %+v, %v; want %+v, %v", dev, st2, err2, st1, err1)
		}
		if p1, p2 := snapshotPages(t, single, dev), snapshotPages(t, blocks, dev); !reflect.DeepEqual(p1, p2) {
			t.Fatalf("%s: snapshot pages differ: %d and %d", dev, len(p2), len(p1))
		}
	}
}

// snapshotPages reads every GrainSnapshot page of id, 7 records a page.
func snapshotPages(t testing.TB, db *DB, id string) [][]WireOp {
	t.Helper()
	var pages [][]WireOp
	for after := int64(0); ; {
		ops, next, err := db.GrainSnapshot(id, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, ops)
		if next == 0 {
			return pages
		}
		after = next
	}
}

func firstDiff(a, b []storedRec) string {
	for i := range min(len(a), len(b)) {
		if !reflect.DeepEqual(a[i], b[i]) {
			return fmt.Sprintf("at %d: %+v and %+v", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// TestBlockMigration: a schema 7 file, whose records are each their own
// entry, opens at schema 8, reads as before, and packs what comes next
// starting from each device's newest binary record; a binary that knows
// only schema 7 refuses the file then.
func TestBlockMigration(t *testing.T) {
	path := t.TempDir() + "/twinmesh.db"
	db, err := Open(path, &Options{NoSync: true, noIngestLog: true})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ops []Op
	for i := range 50 {
		r := plainRec(i)
		r.TS = base.Add(time.Duration(i) * time.Second)
		ops = append(ops, AppendTelemetry("d1", r))
	}
	commit(t, db, ops...)
	if err := db.Bolt().Update(setSchema("7")); err != nil {
		t.Fatal(err)
	}
	before := storedRecs(t, db, "d1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(path, &Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	if got := storedRecs(t, db, "d1"); !reflect.DeepEqual(got, before) {
		t.Fatalf("after migration: %s", firstDiff(got, before))
	}
	r := plainRec(50)
	r.TS = base.Add(50 * time.Second)
	commit(t, db, AppendTelemetry("d1", r))
	if err := db.MoveIngestLog(t.Context()); err != nil {
		t.Fatal(err)
	}
	var keys int
	_ = db.Bolt().View(func(tx *bbolt.Tx) error {
		if v, _ := readSchema(tx); v != SchemaVersion {
			t.Errorf("schema %d after open, want %d", v, SchemaVersion)
		}
		keys = tx.Bucket(bktTelemetry).Stats().KeyN
		return nil
	})
	if got := storedRecs(t, db, "d1"); len(got) != 51 || keys != 50 {
		t.Fatalf("%d records in %d entries, want 51 in 50 (the newest old record and the new one in a block)", len(got), keys)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	bdb, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	err = bdb.Update(func(tx *bbolt.Tx) error { _, _, err := migrate(tx, migrations()[:7]); return err })
	if err == nil || !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("a schema 7 binary on the file: %v, want ErrSchemaTooNew", err)
	}
}

// FuzzBlockCodec: parseBlock never panics on any input, and what it
// accepts encodes back to a block that parses to the same records, whose
// bodies decode (or fail) alike under both.
func FuzzBlockCodec(f *testing.F) {
	body := func(r TelemetryRecord, t *nameTable) []byte {
		v, err := encodeRecord(r)
		if err != nil {
			f.Fatal(err)
		}
		b, err := indexBody(nil, v[1:], nil, t)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	var t nameTable
	recs := []blockRec{
		{ns: 5, seq: 0, body: body(plainRec(1), &t)},
		{ns: 5, seq: 1, body: body(TelemetryRecord{Raw: []byte("x"), Properties: map[string]string{"a": "b"}}, &t)},
		{ns: 900, seq: 0, body: body(TelemetryRecord{Points: map[string]any{"s": "text", "b": true, "f": 0.1}}, &t)},
	}
	f.Add(encodeBlock(t.names, recs), int64(5), uint32(0))
	f.Add(encodeBlock(nil, []blockRec{{ns: 0, body: []byte{0, 0, 0, 0, 0}}}), int64(0), uint32(0))
	f.Add([]byte{recordBlock, 1, 0, 0, 0, 0, 0, 0}, int64(math.MaxInt64), uint32(7))
	f.Fuzz(func(t *testing.T, v []byte, ns int64, seq uint32) {
		if ns < 0 {
			return
		}
		_, _, _, _ = blockHead(v, ns)
		names, recs, err := parseBlock(v, ns, seq)
		if err != nil {
			return
		}
		if len(recs) == 0 || recs[0].ns != ns || recs[0].seq != seq {
			t.Fatalf("parsed %d records, first not at the key's position", len(recs))
		}
		again := encodeBlock(names, recs)
		n2, r2, err := parseBlock(again, ns, seq)
		if err != nil || !reflect.DeepEqual(n2, names) || len(r2) != len(recs) {
			t.Fatalf("re-encoded block: %v", err)
		}
		if len(recs) > 1 {
			// Extending the block of its first records with the rest
			// gives the same block.
			k := 1 + int(seq)%(len(recs)-1)
			head := encodeBlock(names, recs[:k])
			count, lastNs, _, n3, off, err := blockNames(head, ns)
			if err != nil || count != k || lastNs != recs[k-1].ns || !reflect.DeepEqual(n3, names) {
				t.Fatalf("head of %d records: %d, %d, %v", k, count, lastNs, err)
			}
			if ext := extendBlock(head, off, count, ns, lastNs, names, recs[k:]); string(ext) != string(again) {
				t.Fatalf("extended block differs from the block of all records")
			}
		}
		for i := range recs {
			if r2[i].ns != recs[i].ns || r2[i].seq != recs[i].seq || string(r2[i].body) != string(recs[i].body) {
				t.Fatalf("record %d differs after re-encoding", i)
			}
			a, errA := decodeBody(recs[i].body, recs[i].ns, names)
			var tb nameTable
			moved, errM := indexBody(nil, recs[i].body, names, &tb)
			if (errA == nil) != (errM == nil) && errA == nil {
				t.Fatalf("record %d decodes but does not re-index: %v", i, errM)
			}
			if errA == nil {
				b, err := decodeBody(moved, recs[i].ns, tb.names)
				// Printed, since a NaN value is not DeepEqual to itself.
				if err != nil || fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", b) {
					t.Fatalf("record %d re-indexed decodes to %+v, %v; want %+v", i, b, err, a)
				}
			}
		}
	})
}

// FuzzBlockLayout: any sequence of appends (timestamps going back and
// forth), replica copies, moves of the ingest log and prunes leaves the
// two layouts answering alike (see TestBlockLayout). Each three bytes are
// one step: what, a device, a time offset.
func FuzzBlockLayout(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 0, 1, 0, 1, 1, 6, 0, 0, 0, 0, 0x80, 7, 0, 0xf0, 0, 0, 3})
	f.Add([]byte{0, 0, 5, 0, 0, 5, 5, 0, 5, 6, 0, 0, 0, 0, 4, 1, 0, 5, 6, 0, 0, 2, 1, 0})
	f.Add(bytesOf(0, 0, 1, 200))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 3*600 {
			return
		}
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		clock := base.Add(time.Hour)
		var steps []layoutStep
		for i := 0; i+2 < len(b); i += 3 {
			dev := []string{"d1", "d2"}[b[i+1]%2]
			at := clock.Add(time.Duration(int8(b[i+2])) * time.Second)
			switch b[i] % 8 {
			case 5:
				r := plainRec(i)
				r.TS = at
				steps = append(steps, layoutStep{op: "wire", dev: dev, rec: r})
			case 6:
				steps = append(steps, move)
			case 7:
				steps = append(steps, layoutStep{op: "prune", cut: at})
			default:
				r := plainRec(i)
				r.TS = at
				steps = append(steps, layoutStep{op: "append", dev: dev, rec: r})
				clock = clock.Add(time.Second)
			}
		}
		single := openTemp(t, &Options{NoSync: true, noIngestLog: true})
		blocks := openTemp(t, &Options{NoSync: true, logIdle: time.Hour})
		runLayoutSteps(t, single, blocks, steps)
		compareLayouts(t, single, blocks, []string{"d1", "d2"})
	})
}

// bytesOf returns n steps of the form (op, dev, offset).
func bytesOf(op, dev, offset byte, n int) []byte {
	var b []byte
	for range n {
		b = append(b, op, dev, offset)
	}
	return b
}
