package amqp

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/persistence"
)

// testDefs keeps definitions in a real store's catalog bucket, as the
// actor system does (without the replication to other members: two
// Services on one store stand for two members).
type testDefs struct{ db *persistence.DB }

func (d testDefs) PutDefinition(ctx context.Context, key string, doc []byte) error {
	return d.db.Commit(ctx, persistence.PutDoc(persistence.BucketAMQP, key, doc))
}

func (d testDefs) DeleteDefinition(ctx context.Context, key string) error {
	return d.db.Commit(ctx, persistence.DeleteDoc(persistence.BucketAMQP, key),
		persistence.PutTombstone(string(persistence.BucketAMQP)+"/"+key, time.Now()))
}

func (d testDefs) Definitions() (map[string][]byte, error) {
	return d.db.ListDocs(persistence.BucketAMQP, "")
}

func (d testDefs) Deleted() (map[string]bool, error) {
	docs, err := d.db.ListDocs(persistence.BucketTombstones, "amqp/")
	out := map[string]bool{}
	for k := range docs {
		out[strings.TrimPrefix(k, "amqp/")] = true
	}
	return out, err
}

// TestDefinitionsAreSharedAndMigrated: definitions an older binary kept in
// amqp.db move to the catalog at the first start; a definition PUT or
// DELETEd through one member applies on the other; a delete leaves a
// tombstone; credentials stay redacted everywhere.
func TestDefinitionsAreSharedAndMigrated(t *testing.T) {
	g := newTestGrains(t)
	defs := testDefs{g.DB}
	path := t.TempDir() + "/amqp.db"
	old, err := New(Config{Path: path}) // an older binary's file: definitions in amqp.db
	if err != nil {
		t.Fatal(err)
	}
	url := "amqp://user:secret@127.0.0.1:1"
	if err := old.PutEndpoint(Endpoint{Name: "e1", Type: "amqp", URL: url, Address: "/queue/a"}); err != nil {
		t.Fatal(err)
	}
	if err := old.PutRoute(Route{Name: "r1", Source: SourceTelemetry, Endpoint: "e1", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s1, c1, _ := newService(t, Config{Path: path, Grains: g, Definitions: defs, DefsEvery: 20 * time.Millisecond, RescanEvery: 50 * time.Millisecond})
	testutil.Eventually(t, 5*time.Second, "amqp.db's definitions in the catalog", func() bool {
		docs, _ := defs.Definitions()
		return len(docs) == 2 && docs["endpoint/e1"] != nil && docs["route/r1"] != nil
	})
	n := 0
	for _, b := range [][]byte{bucketEndpoints, bucketRoutes} {
		_ = s1.st.namedDefs(b, func(string, []byte) error { n++; return nil })
	}
	if n != 0 {
		t.Fatalf("%d definitions left in amqp.db", n)
	}

	s2, c2, _ := newService(t, Config{Grains: g, Definitions: defs, DefsEvery: 20 * time.Millisecond, RescanEvery: 50 * time.Millisecond})
	status := func(c *testutil.Client, path string) int {
		st, _, body, err := c.Do(context.Background(), "GET", path, nil)
		if err != nil || strings.Contains(string(body), "secret") {
			t.Fatalf("GET %s: %v %s", path, err, body)
		}
		return st
	}
	for _, p := range []string{"/api/v1/endpoints/e1", "/api/v1/routes/r1"} {
		if st := status(c2, p); st != 200 {
			t.Fatalf("the other member: GET %s: %d", p, st)
		}
	}
	c2.MustDo(t, "PUT", "/api/v1/routes/r2", `{"source":"lifecycle","endpoint":"e1","enabled":true}`, 200)
	c1.MustDo(t, "DELETE", "/api/v1/routes/r1", nil, 204)
	testutil.Eventually(t, 5*time.Second, "each member to apply the other's change", func() bool {
		return status(c1, "/api/v1/routes/r2") == 200 && status(c2, "/api/v1/routes/r1") == 404
	})
	if _, err := g.GetDoc(persistence.BucketTombstones, "amqp/route/r1"); err != nil {
		t.Fatalf("no tombstone for the deleted route: %v", err)
	}
	// An entry for e1 (unreachable) waits in a device's outbox; deleting
	// the endpoint drops it.
	created, _ := json.Marshal(map[string]any{"entity": map[string]string{"kind": "device"}, "created": true})
	emit(t, s2, actors.Event{Type: actors.EventTopology, Entity: "dx", Data: created, TS: time.Now()})
	if out, _ := g.Outbox("dx", 0, 0); len(out) != 1 {
		t.Fatalf("%d entries for the lifecycle route", len(out))
	}
	c2.MustDo(t, "DELETE", "/api/v1/endpoints/e1", nil, 204)
	testutil.Eventually(t, 5*time.Second, "the endpoint and its entries gone", func() bool {
		out, _ := g.Outbox("dx", 0, 0)
		return status(c1, "/api/v1/endpoints/e1") == 404 && len(out) == 0
	})
}
