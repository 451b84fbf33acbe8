package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
)

func valueDoc(id string, version, value int) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"kind":"device","version":%d,"desired":{"v":%d}}`, id, version, value))
}

// only brings the members at addrs back and takes every other member
// away, as a partition that leaves exactly addrs together would.
func (f *fakeNet) only(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.addrs {
		f.dead[a] = true
	}
	for _, a := range addrs {
		f.dead[a] = false
	}
}

// TestClaimAdoptsTheCopyItServes is the regression test of the forks the
// 30-minute Jepsen run with seed 578929958 found under bridge partitions:
// two writes, both answered 503, shared a version. Owner A stored v=960
// at version 136 on its own file only. B claimed without A and started
// from version 135. C claimed without B, took A's copy and served 960,
// after spreading it to a majority — but the copies kept A's epoch. B,
// whose member C's claim had not reached, then stored v=967 at version 136
// locally under its own epoch, newer than A's. The next claim that met B
// ranked B's copy first (the newest writer epoch) and 960, already read by
// clients, was gone. A claim now adopts the copy it serves: the copy takes
// the claim's epoch on every member it is spread to, and so outranks any
// write of an older activation.
func TestClaimAdoptsTheCopyItServes(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 5, 2)
	id := "jt0-4"
	r := f.ranked(id)
	a, b, c, d, e := r[0], r[1], r[2], r[3], r[4]
	ea, err := a.Claim(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx, id, ea, []persistence.Op{persistence.PutEntity(persistence.Entity{ID: id, Kind: "device"}),
		persistence.PutTwin(id, valueDoc(id, 135, 958))}); err != nil {
		t.Fatal(err)
	}
	// A stores 960 alone.
	f.only(a.self)
	if err := a.Commit(ctx, id, ea, []persistence.Op{persistence.PutTwin(id, valueDoc(id, 136, 960))}); err == nil {
		t.Fatal("a write no replica holds was acknowledged")
	}
	// B claims without A: it starts from version 135.
	f.only(b.self, d.self, e.self)
	eb, err := b.Claim(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// C claims without B. Before adoption it took A's copy (960) and
	// served it; now B's claim made 135 the newer copy, which C takes.
	f.only(a.self, c.self, d.self, e.self)
	if _, err := c.Claim(ctx, id); err != nil {
		t.Fatal(err)
	}
	served, err := f.dbs[c.self].GetTwin(id)
	if err != nil {
		t.Fatal(err)
	}
	// B's activation, never told, stores 967 at version 136 alone.
	f.only(b.self)
	err = b.Commit(ctx, id, eb, []persistence.Op{persistence.PutTwin(id, valueDoc(id, 136, 967))})
	if err == nil {
		t.Fatal("a write no replica holds was acknowledged")
	}
	if errors.Is(err, ErrFenced) {
		t.Fatalf("B's own file knew C's claim (%v); the scenario needs it not to", err)
	}
	// A claim by a majority that meets B must keep 960.
	f.only(b.self, d.self, e.self)
	if _, err := d.Claim(ctx, id); err != nil {
		t.Fatal(err)
	}
	doc, err := f.dbs[d.self].GetTwin(id)
	if err != nil {
		t.Fatal(err)
	}
	// What C served stands: D holds it, or a later version.
	if v, sv := versionOf(t, doc), versionOf(t, served); v < sv || (v == sv && string(doc) != string(served)) {
		t.Fatalf("C's activation served %s; after the next claim D holds %s: a served version was replaced", served, doc)
	}
}

func versionOf(t *testing.T, doc []byte) int64 {
	t.Helper()
	var d struct {
		Version int64 `json:"version"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	return d.Version
}

func TestAdoptEpoch(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 1, 1)
	db := f.dbs[f.addrs[0]]
	id := "d1"
	if err := db.Commit(ctx, persistence.CheckEpoch(id, 10), persistence.PutTwin(id, twinDoc(id, 1))); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(ctx, persistence.CheckEpoch(id, 10)); err != nil {
		t.Fatal(err)
	}
	from := persistence.Epoch{Wrote: 10, Seq: 2}
	tests := []struct {
		name  string
		epoch uint64
		from  persistence.Epoch
		want  error
	}{
		{"another copy", 20, persistence.Epoch{Wrote: 10, Seq: 1}, persistence.ErrGap},
		{"older claim", 5, from, persistence.ErrFenced},
		{"adopt", 20, from, nil},
		{"again", 20, from, persistence.ErrApplied},
		{"newer claim on the adopted copy", 30, persistence.Epoch{Wrote: 20}, nil},
	}
	for _, tt := range tests {
		err := db.Commit(ctx, persistence.AdoptEpoch(id, tt.epoch, tt.from))
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Fatalf("%s: AdoptEpoch(%d, %+v) = %v, want %v", tt.name, tt.epoch, tt.from, err, tt.want)
		}
	}
	got, err := db.GetEpoch(id)
	if err != nil {
		t.Fatal(err)
	}
	if want := (persistence.Epoch{Fence: 30, Wrote: 30}); got != want {
		t.Fatalf("epoch after adoptions = %+v, want %+v", got, want)
	}
	// The first write of the adopting epoch follows the adopted copy.
	if err := db.Commit(ctx, persistence.ApplyEpoch(id, 30, persistence.Epoch{Wrote: 30}, 1)); err != nil {
		t.Fatalf("first write after the adoption: %v", err)
	}
}

// TestCatalogCatchUp: a member that did not answer while a device was
// disabled (a cut that did not make it restart) kept the enabled identity
// for good, so the device could still authenticate there. The writer now
// remembers it and, once it answers, has it copy the catalog.
func TestCatalogCatchUp(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	a, c := f.nodes[f.addrs[0]], f.nodes[f.addrs[2]]
	idn := persistence.Identity{DeviceID: "d1", PrimaryKey: "k", SecondaryKey: "k2", Status: "enabled"}
	if err := a.CommitCatalog(ctx, []persistence.Op{persistence.PutIdentity(idn)}); err != nil {
		t.Fatal(err)
	}
	f.kill(c.self)
	idn.Status = "disabled"
	if err := a.CommitCatalog(ctx, []persistence.Op{persistence.PutIdentity(idn)}); err != nil {
		t.Fatal(err)
	}
	// Let the background copy to c fail too.
	waitFor(t, 5*time.Second, "background copy to give up", func() bool {
		a.behind.mu.Lock()
		defer a.behind.mu.Unlock()
		return a.behind.addrs[c.self]
	})
	f.mu.Lock()
	f.dead[c.self] = false
	f.mu.Unlock()
	c.down.Delete(a.self)
	a.down.Delete(c.self)
	a.catchUp(ctx)
	got, err := f.dbs[c.self].GetIdentity("d1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "disabled" {
		t.Fatalf("the member that missed the write reads the device %q after the catch-up, want disabled", got.Status)
	}
	if behind := a.behind.take(); len(behind) != 0 {
		t.Fatalf("members still behind after the catch-up: %v", behind)
	}
}
