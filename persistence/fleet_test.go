package persistence

import (
	"reflect"
	"testing"
)

// TestFleetReads: ScanTwins pages entities with their twins and
// identities; ListIdentities pages identities by status and subtree.
func TestFleetReads(t *testing.T) {
	db := openTemp(t, nil)
	commit(t, db,
		PutEntity(Entity{ID: "b1", Kind: "building"}),
		PutEntity(Entity{ID: "r1", Kind: "room", Parent: "b1"}),
		PutEntity(Entity{ID: "d1", Kind: "device", Parent: "r1"}),
		PutEntity(Entity{ID: "d2", Kind: "device", Parent: "b1", Tags: map[string]any{"site": "x"}}),
		PutEntity(Entity{ID: "d3", Kind: "device"}),
		PutTwin("d1", []byte(`{"id":"d1"}`)),
		PutTwin("d2", []byte(`{"id":"d2"}`)),
		PutIdentity(Identity{DeviceID: "d1", Status: "enabled", CreatedAt: t0}),
		PutIdentity(Identity{DeviceID: "d2", Status: "disabled", CreatedAt: t0}),
		PutIdentity(Identity{DeviceID: "d3", Status: "enabled", CreatedAt: t0}),
	)

	rows, next, err := db.ScanTwins(EntityFilter{Kind: "device"}, "", 2)
	if err != nil || len(rows) != 2 || next != "d2" {
		t.Fatalf("first page: %d rows, next %q, %v", len(rows), next, err)
	}
	if string(rows[0].Twin) != `{"id":"d1"}` || rows[0].Identity == nil || rows[0].Identity.Status != "enabled" {
		t.Fatalf("row d1 %+v", rows[0])
	}
	rows, next, err = db.ScanTwins(EntityFilter{Kind: "device"}, next, 2)
	if err != nil || len(rows) != 1 || next != "" || rows[0].Entity.ID != "d3" || rows[0].Twin != nil {
		t.Fatalf("second page: %+v, next %q, %v", rows, next, err)
	}
	if rows, _, err := db.ScanTwins(EntityFilter{Tags: map[string]string{"site": "x"}}, "", 10); err != nil || len(rows) != 1 || rows[0].Entity.ID != "d2" {
		t.Fatalf("tag filter: %+v %v", rows, err)
	}
	if rows, _, err := db.ScanTwins(EntityFilter{}, "", 10); err != nil || rows[0].Identity != nil || rows[0].Entity.ID != "b1" {
		t.Fatalf("a building: %+v %v", rows, err)
	}

	for _, tc := range []struct {
		name  string
		f     IdentityFilter
		limit int
		want  []string
	}{
		{"all", IdentityFilter{}, 10, []string{"d1", "d2", "d3"}},
		{"paged", IdentityFilter{}, 1, []string{"d1", "d2", "d3"}},
		{"enabled", IdentityFilter{Status: "enabled"}, 1, []string{"d1", "d3"}},
		{"under b1", IdentityFilter{Under: "b1"}, 10, []string{"d1", "d2"}},
		{"under r1", IdentityFilter{Under: "r1"}, 10, []string{"d1"}},
		{"within d2", IdentityFilter{Within: "d2"}, 10, []string{"d2"}},
		{"under b1 disabled", IdentityFilter{Under: "b1", Status: "disabled"}, 10, []string{"d2"}},
		{"under nothing", IdentityFilter{Under: "nowhere"}, 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			after := ""
			for {
				page, next, err := db.ListIdentities(tc.f, after, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				for _, i := range page {
					got = append(got, i.DeviceID)
				}
				if next == "" {
					break
				}
				after = next
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
