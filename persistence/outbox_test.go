package persistence

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// outboxOf reads device's whole outbox or fails the test.
func outboxOf(t *testing.T, db *DB, device string) []OutboxEntry {
	t.Helper()
	es, err := db.Outbox(device, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestOutboxOps writes, reads, ships and removes outbox entries: order by
// Seq per device, paging with after and limit, the last Seq, the scan, the
// wire form applied on another store (the grain's replica), what a grain
// snapshot copies and a reset removes, and what DeleteEntity keeps.
func TestOutboxOps(t *testing.T) {
	a, b := openTemp(t, nil), openTemp(t, nil)
	entries := []OutboxEntry{
		{Device: "d1", Seq: 30, Endpoint: "e1", Data: []byte(`{"n":3}`)},
		{Device: "d1", Seq: 10, Endpoint: "e1", Data: []byte(`{"n":1}`)},
		{Device: "d1", Seq: 20, Endpoint: "e2", Data: []byte{}},
		{Device: "d10", Seq: 5, Endpoint: "e1", Data: []byte("x\x00y")},
		{Device: "d", Seq: 7, Endpoint: "e1", Data: []byte("z")},
	}
	var ops []Op
	for _, e := range entries {
		ops = append(ops, PutOutbox(e))
	}
	commit(t, a, ops...)
	var shipped []Op
	for _, op := range ops {
		w, ok := op.Wire()
		if !ok || op.Catalog() {
			t.Fatalf("outbox op %+v: wire %v catalog %v", w, ok, op.Catalog())
		}
		shipped = append(shipped, FromWire(w))
	}
	commit(t, b, shipped...)
	for _, db := range []*DB{a, b} {
		got := outboxOf(t, db, "d1")
		if len(got) != 3 || got[0].Seq != 10 || got[1].Seq != 20 || got[2].Seq != 30 || got[1].Endpoint != "e2" || string(got[2].Data) != `{"n":3}` {
			t.Fatalf("d1's outbox: %+v", got)
		}
		if got := outboxOf(t, db, "d10"); len(got) != 1 || string(got[0].Data) != "x\x00y" {
			t.Fatalf("d10's outbox: %+v", got)
		}
	}
	if page, _ := a.Outbox("d1", 10, 1); len(page) != 1 || page[0].Seq != 20 {
		t.Fatalf("page after 10: %+v", page)
	}
	if page, _ := a.Outbox("d1", ^uint64(0), 0); len(page) != 0 {
		t.Fatalf("page after the last seq: %+v", page)
	}
	for dev, want := range map[string]uint64{"d1": 30, "d10": 5, "d": 7, "d2": 0, "": 0} {
		if got, err := a.OutboxLastSeq(dev); err != nil || got != want {
			t.Fatalf("last seq of %q: %d %v, want %d", dev, got, err, want)
		}
	}
	var scanned []string
	if err := a.ScanOutbox(func(device []byte, seq uint64, endpoint []byte, size int) bool {
		scanned = append(scanned, string(device)+"/"+string(endpoint))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"d/e1", "d1/e1", "d1/e2", "d1/e1", "d10/e1"}; !reflect.DeepEqual(scanned, want) {
		t.Fatalf("scan %v, want %v", scanned, want)
	}

	st, err := a.GrainState("d1")
	if err != nil || st.Outbox != 3 {
		t.Fatalf("grain state %+v %v", st, err)
	}
	snap, _, err := a.GrainSnapshot("d1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := openTemp(t, nil)
	for _, w := range snap {
		commit(t, c, FromWire(w))
	}
	if got := outboxOf(t, c, "d1"); !reflect.DeepEqual(got, outboxOf(t, a, "d1")) {
		t.Fatalf("snapshot copy %+v", got)
	}
	commit(t, c, ResetGrainData("d1"))
	if got := outboxOf(t, c, "d1"); len(got) != 0 {
		t.Fatalf("after a reset: %+v", got)
	}
	commit(t, a, DeleteEntity("d1"), DeleteOutbox("d1", 20), DeleteOutbox("d1", 99))
	if got := outboxOf(t, a, "d1"); len(got) != 2 || got[0].Seq != 10 || got[1].Seq != 30 {
		t.Fatalf("after DeleteEntity and a delete: %+v", got)
	}
}

// TestOutboxOpsRefuseBadInput: invalid entries and wire ops fail the
// commit with ErrInvalid and write nothing.
func TestOutboxOpsRefuseBadInput(t *testing.T) {
	db := openTemp(t, nil)
	cases := []struct {
		name string
		op   Op
	}{
		{"empty device", PutOutbox(OutboxEntry{Seq: 1, Endpoint: "e"})},
		{"NUL in device", PutOutbox(OutboxEntry{Device: "a\x00b", Seq: 1, Endpoint: "e"})},
		{"seq 0", PutOutbox(OutboxEntry{Device: "d", Endpoint: "e"})},
		{"empty endpoint", PutOutbox(OutboxEntry{Device: "d", Seq: 1})},
		{"NUL in endpoint", PutOutbox(OutboxEntry{Device: "d", Seq: 1, Endpoint: "e\x00"})},
		{"device too long", PutOutbox(OutboxEntry{Device: strings.Repeat("d", 40000), Seq: 1, Endpoint: "e"})},
		{"delete, empty device", DeleteOutbox("", 1)},
		{"wire, bad seq", FromWire(WireOp{T: wireOutboxPut, K: "d", K2: "x", V: []byte("e\x00v")})},
		{"wire, no endpoint", FromWire(WireOp{T: wireOutboxPut, K: "d", K2: "1", V: []byte("v")})},
		{"wire, seq 0", FromWire(WireOp{T: wireOutboxPut, K: "d", K2: "0", V: []byte("e\x00v")})},
		{"wire delete, no seq", FromWire(WireOp{T: wireOutboxDel, K: "d"})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := db.Commit(context.Background(), c.op); !errors.Is(err, ErrInvalid) {
				t.Fatalf("commit: %v, want ErrInvalid", err)
			}
		})
	}
	n := 0
	_ = db.ScanOutbox(func([]byte, uint64, []byte, int) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d entries written", n)
	}
}
