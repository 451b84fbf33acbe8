package cluster

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinmesh/twinmesh/persistence"
)

// A member query reaches the handler registered under its name, with its
// body; an unknown name or a failing handler is the asking member's error
// for that member, not an answer.
func TestMemberQuery(t *testing.T) {
	db, err := persistence.Open(filepath.Join(t.TempDir(), "q.db"), &persistence.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := NewPlacement(PlacementConfig{Store: db})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, failed := p.QueryMembers(ctx, "count", json.RawMessage(`{}`)); len(failed) != 1 {
		t.Fatalf("a query nobody handles: failed %v, want this member", failed)
	}
	p.HandleQuery("count", func(_ context.Context, body json.RawMessage) (json.RawMessage, error) {
		var in struct{ Of string }
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, err
		}
		return json.Marshal(len(in.Of))
	})
	answers, failed := p.QueryMembers(ctx, "count", json.RawMessage(`{"of":"abcd"}`))
	if len(failed) != 0 || len(answers) != 1 {
		t.Fatalf("answers %v, failed %v", answers, failed)
	}
	for _, a := range answers {
		if string(a) != "4" {
			t.Errorf("answer %s, want 4", a)
		}
	}
	_, failed = p.QueryMembers(ctx, "count", json.RawMessage(`"not an object"`))
	for _, err := range failed {
		if !strings.Contains(err.Error(), "cannot unmarshal") {
			t.Errorf("a failing handler: %v", err)
		}
	}
	if len(failed) != 1 {
		t.Errorf("a failing handler: failed %v", failed)
	}
}
