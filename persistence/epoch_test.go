package persistence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestEpochFencing: each case prepares a fence, then commits a guard
// together with a twin write: both are written, or (fenced) neither.
func TestEpochFencing(t *testing.T) {
	const id = "grain-7"
	cases := []struct {
		name        string
		pre         []Op
		guard       Op
		guardLast   bool // commit PutTwin before the guard
		wantFenced  bool
		want        Epoch
		errEpochs   [2]uint64 // named in the error when fenced
		wantInvalid bool
	}{
		{name: "check on a new grain", guard: CheckEpoch(id, 1), want: Epoch{Fence: 1, Wrote: 1, Seq: 1}},
		{name: "check 0 on a new grain", guard: CheckEpoch(id, 0), want: Epoch{Fence: 0, Wrote: 0, Seq: 1}},
		{name: "check at the fence", pre: []Op{CheckEpoch(id, 3)}, guard: CheckEpoch(id, 3), want: Epoch{Fence: 3, Wrote: 3, Seq: 2}},
		{name: "check below the fence", pre: []Op{CheckEpoch(id, 3)}, guard: CheckEpoch(id, 2),
			wantFenced: true, want: Epoch{Fence: 3, Wrote: 3, Seq: 1}, errEpochs: [2]uint64{2, 3}},
		{name: "check above the fence raises it", pre: []Op{CheckEpoch(id, 3)}, guard: CheckEpoch(id, 5), want: Epoch{Fence: 5, Wrote: 5, Seq: 1}},
		{name: "check of the claimed epoch", pre: []Op{CheckEpoch(id, 3), ClaimEpoch(id, 4)}, guard: CheckEpoch(id, 4), want: Epoch{Fence: 4, Wrote: 4, Seq: 1}},
		{name: "stale owner after a claim", pre: []Op{CheckEpoch(id, 3), ClaimEpoch(id, 4)}, guard: CheckEpoch(id, 3),
			wantFenced: true, want: Epoch{Fence: 4, Wrote: 3, Seq: 1}, errEpochs: [2]uint64{3, 4}},
		{name: "stale guard after the write", pre: []Op{ClaimEpoch(id, 4)}, guard: CheckEpoch(id, 3), guardLast: true,
			wantFenced: true, want: Epoch{Fence: 4, Wrote: 0, Seq: 0}, errEpochs: [2]uint64{3, 4}},
		{name: "claim on a new grain", guard: ClaimEpoch(id, 1), want: Epoch{Fence: 1, Wrote: 0, Seq: 0}},
		{name: "claim 0 on a new grain", guard: ClaimEpoch(id, 0), wantFenced: true, want: Epoch{}, errEpochs: [2]uint64{0, 0}},
		{name: "claim at the fence", pre: []Op{ClaimEpoch(id, 2)}, guard: ClaimEpoch(id, 2),
			wantFenced: true, want: Epoch{Fence: 2, Wrote: 0, Seq: 0}, errEpochs: [2]uint64{2, 2}},
		{name: "claim below the fence", pre: []Op{ClaimEpoch(id, 5)}, guard: ClaimEpoch(id, 3),
			wantFenced: true, want: Epoch{Fence: 5, Wrote: 0, Seq: 0}, errEpochs: [2]uint64{3, 5}},
		{name: "claim keeps wrote", pre: []Op{CheckEpoch(id, 3)}, guard: ClaimEpoch(id, 7), want: Epoch{Fence: 7, Wrote: 3, Seq: 1}},
		{name: "claim after a check raised the fence", pre: []Op{CheckEpoch(id, 6)}, guard: ClaimEpoch(id, 6),
			wantFenced: true, want: Epoch{Fence: 6, Wrote: 6, Seq: 1}, errEpochs: [2]uint64{6, 6}},
		{name: "check with empty id", guard: CheckEpoch("", 1), wantInvalid: true},
		{name: "claim with empty id", guard: ClaimEpoch("", 1), wantInvalid: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTemp(t, nil)
			commit(t, db, append([]Op{PutTwin(id, []byte(`{"v":"old"}`))}, c.pre...)...)
			ops := []Op{c.guard, PutTwin(id, []byte(`{"v":"new"}`))}
			if c.guardLast {
				ops[0], ops[1] = ops[1], ops[0]
			}
			err := db.Commit(context.Background(), ops...)
			switch {
			case c.wantInvalid:
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Commit = %v, want ErrInvalid", err)
				}
			case c.wantFenced:
				if !errors.Is(err, ErrFenced) {
					t.Fatalf("Commit = %v, want ErrFenced", err)
				}
				msg := err.Error()
				if !strings.Contains(msg, id) || !strings.Contains(msg, "epoch "+strconv.FormatUint(c.errEpochs[0], 10)) ||
					!strings.Contains(msg, "is "+strconv.FormatUint(c.errEpochs[1], 10)) && !strings.Contains(msg, "already "+strconv.FormatUint(c.errEpochs[1], 10)) {
					t.Fatalf("error %q does not name %s and epochs %v", msg, id, c.errEpochs)
				}
			case err != nil:
				t.Fatalf("Commit = %v", err)
			}
			doc, gerr := db.GetTwin(id)
			wantDoc := `{"v":"new"}`
			if c.wantFenced || c.wantInvalid {
				wantDoc = `{"v":"old"}`
			}
			if gerr != nil || string(doc) != wantDoc {
				t.Fatalf("twin = %s, %v; want %s", doc, gerr, wantDoc)
			}
			if got, err := db.GetEpoch(id); err != nil || got != c.want {
				t.Fatalf("GetEpoch = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

// TestEpochFencedConcurrent: in one group commit, fenced requests fail
// alone with ErrFenced and their neighbours commit. With the guard first a
// fenced request costs no retry: the whole batch is one transaction.
func TestEpochFencedConcurrent(t *testing.T) {
	const n = 12
	cases := []struct {
		name        string
		guardFirst  bool
		wantCommits int // 0: not checked
	}{
		{"guard first: refused in the batch transaction", true, 1},
		{"guard after a write: isolated by the batch retry", false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "twinmesh.db")
			setup, err := Open(path, &Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				commit(t, setup, ClaimEpoch(fmt.Sprintf("g%d", i), 10))
			}
			if err := setup.Close(); err != nil {
				t.Fatal(err)
			}
			var st batchStats
			// The batch leaves only when all n requests are in.
			db, err := Open(path, &Options{NoSync: true, MaxBatch: n, MaxWait: time.Hour, Observer: st.observe})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			stale := func(i int) bool { return i%3 == 1 }
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					g := fmt.Sprintf("g%d", i)
					epoch := uint64(10)
					if stale(i) {
						epoch = 9
					}
					ops := []Op{CheckEpoch(g, epoch), PutTwin(g, []byte(`{}`))}
					if !c.guardFirst {
						ops[0], ops[1] = ops[1], ops[0]
					}
					errs[i] = db.Commit(context.Background(), ops...)
				})
			}
			wg.Wait()
			good := 0
			for i, err := range errs {
				g := fmt.Sprintf("g%d", i)
				_, terr := db.GetTwin(g)
				ep, _ := db.GetEpoch(g)
				if stale(i) {
					if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), g) {
						t.Errorf("stale request %d: err = %v, want ErrFenced naming %s", i, err, g)
					}
					if !errors.Is(terr, ErrNotFound) || ep != (Epoch{Fence: 10, Wrote: 0, Seq: 0}) {
						t.Errorf("stale request %d wrote: twin err %v, epoch %+v", i, terr, ep)
					}
					continue
				}
				good++
				if err != nil || terr != nil || ep != (Epoch{Fence: 10, Wrote: 10, Seq: 1}) {
					t.Errorf("request %d: err = %v, twin err %v, epoch %+v", i, err, terr, ep)
				}
			}
			commits, requests, ops, _ := st.snapshot()
			if requests != good || ops != 2*good {
				t.Errorf("Observer saw %d requests, %d ops; want %d, %d", requests, ops, good, 2*good)
			}
			if c.wantCommits > 0 && commits != c.wantCommits {
				t.Errorf("%d commits, want %d", commits, c.wantCommits)
			}
		})
	}
}

// TestCommitBatchRefusals drives commitBatch with fenced requests mixed with
// good ones and failing ones: g good, f fenced with the guard first, l
// fenced with the guard after a write, b refused by bbolt (empty key).
func TestCommitBatchRefusals(t *testing.T) {
	// A failing request (l or b) splits the batch; each stretch between
	// failures commits once if it holds a good request (f alone writes
	// nothing and is rolled back). So wantCommits is the number of such
	// stretches.
	cases := []struct {
		batch       string
		wantCommits int
	}{
		{"g", 1},
		{"ggg", 1},
		{"gfg", 1},
		{"fgfgfgfg", 1},
		{"gggggggf", 1},
		{"fgggggggg", 1},
		{"f", 0},
		{"fff", 0},
		{"l", 0},
		{"llll", 0},
		{"fl", 0},
		{"lf", 0},
		{"b", 0},
		{"gb", 1},
		{"bg", 1},
		{"glg", 2},
		{"fbg", 1},
		{"ggggggbf", 1},
		{"flflflgg", 1},
		{"bfgffggl", 1},
		{"gfbflggg", 2},
		{"ggfglgfb", 2},
	}
	for _, c := range cases {
		t.Run(c.batch, func(t *testing.T) {
			var st batchStats
			db := openTemp(t, &Options{NoSync: true, Observer: st.observe})
			commit(t, db, ClaimEpoch("g", 5))
			setupCommits, _, _, _ := st.snapshot()
			batch := make([]*request, len(c.batch))
			for i, kind := range c.batch {
				key := fmt.Sprintf("k%d", i)
				var ops []Op
				switch kind {
				case 'f':
					ops = []Op{CheckEpoch("g", 4), PutTwin(key, []byte(`1`))}
				case 'l':
					ops = []Op{PutTwin(key, []byte(`1`)), CheckEpoch("g", 4)}
				case 'b':
					ops = []Op{PutTwin(key, []byte(`1`)), PutTwin("", []byte(`1`))}
				default:
					ops = []Op{CheckEpoch("g", 5), PutTwin(key, []byte(`1`))}
				}
				batch[i] = &request{ops: ops, done: make(chan error, 1)}
			}
			db.commitBatch(batch)
			good := 0
			for i, r := range batch {
				err := <-r.done
				_, gerr := db.GetTwin(fmt.Sprintf("k%d", i))
				switch kind := c.batch[i]; kind {
				case 'f', 'l':
					if !errors.Is(err, ErrFenced) || !errors.Is(gerr, ErrNotFound) {
						t.Errorf("request %d (%c): err = %v, stored = %v", i, kind, err, gerr == nil)
					}
				case 'b':
					if err == nil || errors.Is(err, ErrFenced) || !errors.Is(gerr, ErrNotFound) {
						t.Errorf("request %d (b): err = %v, stored = %v", i, err, gerr == nil)
					}
				default:
					good++
					if err != nil || gerr != nil {
						t.Errorf("request %d (g): err = %v, twin err = %v", i, err, gerr)
					}
				}
			}
			commits, requests, _, _ := st.snapshot()
			if requests-1 != good || commits-setupCommits != c.wantCommits {
				t.Errorf("%d requests in %d commits; want %d in %d", requests-1, commits-setupCommits, good, c.wantCommits)
			}
			if ep, _ := db.GetEpoch("g"); ep.Fence != 5 || (good > 0) != (ep.Wrote == 5) {
				t.Errorf("epoch = %+v", ep)
			}
		})
	}
}

// TestDeleteEntityKeepsEpoch: fences survive DeleteEntity, so a stale
// owner stays fenced after the entity is deleted and created again.
func TestDeleteEntityKeepsEpoch(t *testing.T) {
	db := openTemp(t, nil)
	commit(t, db, PutEntity(Entity{ID: "d1", Kind: "device"}), CheckEpoch("d1", 2), ClaimEpoch("d1", 3),
		PutEntity(Entity{ID: "d10", Kind: "device"}), ClaimEpoch("d10", 1))
	commit(t, db, DeleteEntity("d1"))
	cases := []struct {
		name       string
		ops        []Op
		wantFenced bool
		want       Epoch
	}{
		{"the fence is kept", nil, false, Epoch{Fence: 3, Wrote: 2, Seq: 1}},
		{"re-created, the stale owner is still fenced", []Op{CheckEpoch("d1", 2), PutEntity(Entity{ID: "d1", Kind: "device"})}, true, Epoch{Fence: 3, Wrote: 2, Seq: 1}},
		{"re-created, the new owner writes", []Op{CheckEpoch("d1", 3), PutEntity(Entity{ID: "d1", Kind: "device"})}, false, Epoch{Fence: 3, Wrote: 3, Seq: 1}},
		{"deleted again, still kept", []Op{DeleteEntity("d1")}, false, Epoch{Fence: 3, Wrote: 3, Seq: 1}},
		{"an old claim stays refused", []Op{ClaimEpoch("d1", 3)}, true, Epoch{Fence: 3, Wrote: 3, Seq: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(c.ops) > 0 {
				if err := db.Commit(context.Background(), c.ops...); errors.Is(err, ErrFenced) != c.wantFenced || (err != nil && !c.wantFenced) {
					t.Fatalf("Commit = %v, fenced want %v", err, c.wantFenced)
				}
			}
			if ep, err := db.GetEpoch("d1"); err != nil || ep != c.want {
				t.Fatalf("GetEpoch = %+v, %v; want %+v", ep, err, c.want)
			}
			if ep, _ := db.GetEpoch("d10"); ep != (Epoch{Fence: 1, Wrote: 0, Seq: 0}) {
				t.Fatalf("neighbour's epoch = %+v", ep)
			}
		})
	}
}

// TestEpochSeq: every fenced write of a grain counts in Seq, per epoch and
// per grain; claims and refused writes leave it alone; a node that applied
// fewer of an epoch's writes has the lower Seq.
func TestEpochSeq(t *testing.T) {
	const id = "g"
	steps := []struct {
		name       string
		ops        []Op
		wantFenced bool
		want       Epoch
	}{
		{"first write", []Op{CheckEpoch(id, 5), PutTwin(id, []byte(`{"version":1}`))}, false, Epoch{Fence: 5, Wrote: 5, Seq: 1}},
		{"second write, same version", []Op{CheckEpoch(id, 5), PutTwin(id, []byte(`{"version":1,"connected":true}`))}, false, Epoch{Fence: 5, Wrote: 5, Seq: 2}},
		{"a write of other data counts too", []Op{CheckEpoch(id, 5), PutDoc(BucketGrains, id, []byte(`{}`))}, false, Epoch{Fence: 5, Wrote: 5, Seq: 3}},
		{"a guard alone counts", []Op{CheckEpoch(id, 5)}, false, Epoch{Fence: 5, Wrote: 5, Seq: 4}},
		{"unfenced writes do not count", []Op{PutTwin(id, []byte(`{}`))}, false, Epoch{Fence: 5, Wrote: 5, Seq: 4}},
		{"another grain's write does not count", []Op{CheckEpoch("g2", 5), PutTwin("g2", []byte(`{}`))}, false, Epoch{Fence: 5, Wrote: 5, Seq: 4}},
		{"a refused write does not count", []Op{CheckEpoch(id, 4), PutTwin(id, []byte(`{}`))}, true, Epoch{Fence: 5, Wrote: 5, Seq: 4}},
		{"a claim keeps wrote and seq", []Op{ClaimEpoch(id, 7)}, false, Epoch{Fence: 7, Wrote: 5, Seq: 4}},
		{"the stale owner is refused", []Op{CheckEpoch(id, 5)}, true, Epoch{Fence: 7, Wrote: 5, Seq: 4}},
		{"the first write of a new epoch starts at 1", []Op{CheckEpoch(id, 7)}, false, Epoch{Fence: 7, Wrote: 7, Seq: 1}},
		{"and counts on", []Op{CheckEpoch(id, 7)}, false, Epoch{Fence: 7, Wrote: 7, Seq: 2}},
	}
	db := openTemp(t, nil)
	for _, s := range steps {
		err := db.Commit(context.Background(), s.ops...)
		if errors.Is(err, ErrFenced) != s.wantFenced || err != nil && !s.wantFenced {
			t.Fatalf("%s: Commit = %v, fenced want %v", s.name, err, s.wantFenced)
		}
		if got, err := db.GetEpoch(id); err != nil || got != s.want {
			t.Fatalf("%s: GetEpoch = %+v, %v; want %+v", s.name, got, err, s.want)
		}
		if st, err := db.GrainState(id); err != nil || st.Epoch != s.want {
			t.Fatalf("%s: GrainState.Epoch = %+v, %v; want %+v", s.name, st.Epoch, err, s.want)
		}
	}

	// An owner and two replicas apply the writes of epoch 3; the second
	// replica misses one that left the twin's version alone.
	owner, full, missed := openTemp(t, nil), openTemp(t, nil), openTemp(t, nil)
	writes := [][]byte{[]byte(`{"version":2,"connected":false}`), []byte(`{"version":2,"connected":true}`), []byte(`{"version":2,"connected":false}`)}
	for i, doc := range writes {
		for _, db := range []*DB{owner, full, missed} {
			if db == missed && i == 1 {
				continue
			}
			commit(t, db, CheckEpoch(id, 3), PutTwin(id, doc))
		}
	}
	o, _ := owner.GrainState(id)
	f, _ := full.GrainState(id)
	m, _ := missed.GrainState(id)
	if o.TwinVersion != m.TwinVersion || o.Epoch.Wrote != m.Epoch.Wrote {
		t.Fatalf("setup: owner %+v, missed %+v", o, m)
	}
	if o.Epoch != (Epoch{Fence: 3, Wrote: 3, Seq: 3}) || f.Epoch != o.Epoch || m.Epoch != (Epoch{Fence: 3, Wrote: 3, Seq: 2}) {
		t.Fatalf("epochs: owner %+v, full replica %+v, replica that missed a write %+v", o.Epoch, f.Epoch, m.Epoch)
	}
}

// TestEpochOldRecord: an epoch record stored before Seq existed reads as
// Seq 0 and counts on from there; what is written is the binary form
// (schema 4: older binaries refuse the file rather than misread it).
func TestEpochOldRecord(t *testing.T) {
	db := openTemp(t, nil)
	put := func(k, v string) {
		t.Helper()
		if err := db.Bolt().Update(func(tx *bbolt.Tx) error { return tx.Bucket(bktEpochs).Put([]byte(k), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	get := func(k string) string {
		t.Helper()
		var v []byte
		if err := db.Bolt().View(func(tx *bbolt.Tx) error { v = bytes.Clone(tx.Bucket(bktEpochs).Get([]byte(k))); return nil }); err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	put("old", `{"fence":6,"wrote":5}`)
	if e, err := db.GetEpoch("old"); err != nil || e != (Epoch{Fence: 6, Wrote: 5, Seq: 0}) {
		t.Fatalf("GetEpoch of an old record = %+v, %v", e, err)
	}
	if st, err := db.GrainState("old"); err != nil || st.Epoch != (Epoch{Fence: 6, Wrote: 5, Seq: 0}) {
		t.Fatalf("GrainState of an old record = %+v, %v", st, err)
	}
	commit(t, db, ClaimEpoch("old", 7))
	if got := get("old"); got != string(encodeEpoch(Epoch{Fence: 7, Wrote: 5})) {
		t.Fatalf("stored after a claim: %x", got)
	}
	commit(t, db, CheckEpoch("old", 7))
	commit(t, db, CheckEpoch("old", 7))
	if e, _ := db.GetEpoch("old"); e != (Epoch{Fence: 7, Wrote: 7, Seq: 2}) {
		t.Fatalf("after two writes: %+v", e)
	}
	if got := get("old"); got != string(encodeEpoch(Epoch{Fence: 7, Wrote: 7, Seq: 2})) {
		t.Fatalf("stored: %s", got)
	}
	put("same-epoch", `{"fence":5,"wrote":5}`)
	commit(t, db, CheckEpoch("same-epoch", 5))
	if e, _ := db.GetEpoch("same-epoch"); e != (Epoch{Fence: 5, Wrote: 5, Seq: 1}) {
		t.Fatalf("first write after the upgrade: %+v", e)
	}
	// What members send each other: a GrainState of an older member.
	var st GrainState
	if err := json.Unmarshal([]byte(`{"epoch":{"fence":6,"wrote":5},"hasTwin":true,"twinVersion":3}`), &st); err != nil ||
		st != (GrainState{Epoch: Epoch{Fence: 6, Wrote: 5, Seq: 0}, HasTwin: true, TwinVersion: 3}) {
		t.Fatalf("older GrainState JSON = %+v, %v", st, err)
	}
}
