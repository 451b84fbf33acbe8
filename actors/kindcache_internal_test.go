package actors

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	_ "github.com/twinmesh/twinmesh/actors/kinds"
)

// TestStaleKindCache: the kind cache is a hint. An entity deleted and
// created again as another kind behind this node's back (on another member)
// leaves a stale entry; telemetry must still reach the grain of the right
// kind, and telemetry for an entity gone must still be NotFound, quickly.
func TestStaleKindCache(t *testing.T) {
	s := startInternal(t, "t-kinds")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tel := func(v float64) error {
		return s.Telemetry(ctx, "x1", TelemetryIn{Points: map[string]any{"t": v}})
	}
	if _, _, err := s.PutEntity(ctx, "x1", EntitySpec{Kind: "device"}); err != nil {
		t.Fatal(err)
	}
	if err := tel(1); err != nil {
		t.Fatal(err)
	}
	if k, ok := s.kinds.Get("x1"); !ok || k != "device" {
		t.Fatalf("cache after telemetry: %q %v", k, ok)
	}
	if _, err := s.DeleteEntity(ctx, "x1", false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutEntity(ctx, "x1", EntitySpec{Kind: "gateway"}); err != nil {
		t.Fatal(err)
	}
	s.kinds.Add("x1", "device") // what a member that missed the change holds

	start := time.Now()
	if err := tel(2); err != nil {
		t.Fatalf("telemetry with a stale kind: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("telemetry with a stale kind took %v", d)
	}
	doc, _, err := s.GetTwin(ctx, "x1")
	if err != nil {
		t.Fatal(err)
	}
	var tw struct {
		Kind      string `json:"kind"`
		Telemetry map[string]struct {
			Value float64 `json:"value"`
		} `json:"telemetry"`
	}
	if err := json.Unmarshal(doc, &tw); err != nil {
		t.Fatal(err)
	}
	if tw.Kind != "gateway" || tw.Telemetry["t"].Value != 2 {
		t.Fatalf("twin after telemetry with a stale kind: %s", doc)
	}
	if k, _ := s.kinds.Get("x1"); k != "gateway" {
		t.Fatalf("cache not corrected: %q", k)
	}

	if _, err := s.DeleteEntity(ctx, "x1", false); err != nil {
		t.Fatal(err)
	}
	s.kinds.Add("x1", "gateway")
	start = time.Now()
	if err := tel(3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("telemetry for a deleted entity with a cached kind: %v, want NotFound", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("NotFound took %v", d)
	}
}
