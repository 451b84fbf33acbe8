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

// A contribution addressed by a stale kind reaches a grain of the wrong
// kind, which passes it on to the grain of the stored kind: the parent's
// rollup still follows its children.
func TestStaleKindCacheNotify(t *testing.T) {
	s := startInternal(t, "t-kinds-notify")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := s.PutEntity(ctx, "p1", EntitySpec{Kind: "room"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutEntity(ctx, "c1", EntitySpec{Kind: "device", Parent: "p1"}); err != nil {
		t.Fatal(err)
	}
	// The parent's grain is active: only a notification updates its rollup.
	if _, _, err := s.GetTwin(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	s.kinds.Add("p1", "building") // what a member that missed a change holds
	if err := s.Telemetry(ctx, "c1", TelemetryIn{Points: map[string]any{"t": 41.5}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		doc, _, err := s.GetTwin(ctx, "p1")
		if err != nil {
			t.Fatal(err)
		}
		var tw struct {
			Rollup struct {
				T struct {
					Max float64 `json:"max"`
				} `json:"t"`
			} `json:"rollup"`
		}
		if err := json.Unmarshal(doc, &tw); err != nil {
			t.Fatal(err)
		}
		if tw.Rollup.T.Max == 41.5 {
			if k, _ := s.kinds.Get("p1"); k != "room" {
				t.Fatalf("cache not corrected: %q", k)
			}
			return
		}
		last = doc
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the parent's rollup missed the contribution sent with a stale kind: %s", last)
}
