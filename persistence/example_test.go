package persistence_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/twinmesh/twinmesh/persistence"
)

func Example() {
	dir, err := os.MkdirTemp("", "twinmesh-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	db, err := persistence.Open(filepath.Join(dir, "twinmesh.db"), nil)
	if err != nil {
		panic(err)
	}
	defer db.Close()

	ctx := context.Background()
	ts := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	// One Commit is one atomic request; it returns once it is on disk.
	err = db.Commit(ctx,
		persistence.PutEntity(persistence.Entity{ID: "room-1", Kind: "room"}),
		persistence.PutEntity(persistence.Entity{ID: "thermo-1", Kind: "device", Parent: "room-1"}),
		persistence.PutTwin("thermo-1", []byte(`{"version":1,"reported":{"temp":21.5}}`)),
		persistence.AppendTelemetry("thermo-1", persistence.TelemetryRecord{TS: ts, Points: map[string]any{"temp": 21.5}}),
	)
	if err != nil {
		panic(err)
	}

	tree, _ := db.Subtree("room-1")
	for _, e := range tree {
		fmt.Println(e.Kind, e.ID)
	}
	doc, _ := db.GetTwin("thermo-1")
	fmt.Println(string(doc))
	recs, _ := db.QueryTelemetry(ctx, "thermo-1", persistence.TelemetryQuery{Name: "temp"})
	fmt.Println(len(recs), recs[0].Points["temp"])
	// Output:
	// room room-1
	// device thermo-1
	// {"version":1,"reported":{"temp":21.5}}
	// 1 21.5
}
