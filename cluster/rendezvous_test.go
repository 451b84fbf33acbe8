package cluster

import (
	"fmt"
	"slices"
	"testing"

	"github.com/twinmesh/twinmesh/persistence"
)

func TestRankDeterministicAndComplete(t *testing.T) {
	members := []string{"10.0.0.1:4000", "10.0.0.2:4000", "10.0.0.3:4000"}
	for _, key := range []string{"dev-1", "dev-2", "room-1", ""} {
		a := Rank(key, members)
		b := Rank(key, []string{members[2], members[0], members[1]})
		if !slices.Equal(a, b) {
			t.Errorf("Rank(%q) depends on input order: %v vs %v", key, a, b)
		}
		sorted := slices.Clone(a)
		slices.Sort(sorted)
		if !slices.Equal(sorted, members) {
			t.Errorf("Rank(%q) = %v is not a permutation of %v", key, a, members)
		}
	}
	if got := Rank("x", nil); len(got) != 0 {
		t.Errorf("Rank over no members = %v", got)
	}
}

// Owners spread evenly, and a joining member takes keys only from others
// (never moves a key between two old members): the property that makes
// rebalancing on join move about 1/n of the grains.
func TestRankBalanceAndMinimalMovement(t *testing.T) {
	three := []string{"127.0.0.1:41001", "127.0.0.1:41002", "127.0.0.1:41003"}
	four := append(slices.Clone(three), "127.0.0.1:41004")
	const keys = 30000
	owners := map[string]int{}
	moved, movedElsewhere := 0, 0
	for i := 0; i < keys; i++ {
		k := fmt.Sprintf("dev-%d", i)
		before := Rank(k, three)[0]
		after := Rank(k, four)[0]
		owners[before]++
		if before != after {
			moved++
			if after != four[3] {
				movedElsewhere++
			}
		}
	}
	for m, n := range owners {
		if share := float64(n) / keys; share < 0.30 || share > 0.37 {
			t.Errorf("member %s owns %.3f of the keys, want about 1/3", m, share)
		}
	}
	if share := float64(moved) / keys; share < 0.22 || share > 0.28 {
		t.Errorf("a fourth member took %.3f of the keys, want about 1/4", share)
	}
	if movedElsewhere != 0 {
		t.Errorf("%d keys moved between old members", movedElsewhere)
	}
}

func TestBetterState(t *testing.T) {
	tests := []struct {
		name string
		a, b gs
		want bool
	}{
		{"newer writer epoch wins over a higher version", gs{wrote: 9, version: 1}, gs{wrote: 5, version: 7}, true},
		{"higher version", gs{wrote: 5, version: 8}, gs{wrote: 5, version: 7}, true},
		{"newer telemetry", gs{wrote: 5, version: 7, newest: 2}, gs{wrote: 5, version: 7, newest: 1}, true},
		{"more telemetry", gs{wrote: 5, version: 7, newest: 2, count: 3}, gs{wrote: 5, version: 7, newest: 2, count: 2}, true},
		{"equal is not better", gs{wrote: 5, version: 7}, gs{wrote: 5, version: 7}, false},
		{"older epoch loses", gs{wrote: 4, version: 70}, gs{wrote: 5, version: 7}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := better(tt.a.state(), tt.b.state()); got != tt.want {
				t.Errorf("better = %v, want %v", got, tt.want)
			}
		})
	}
}

// gs is a compact persistence.GrainState for tables.
type gs struct {
	wrote   uint64
	version int64
	newest  int64
	count   int
}

func (g gs) state() persistence.GrainState {
	return persistence.GrainState{Epoch: persistence.Epoch{Fence: g.wrote, Wrote: g.wrote}, HasTwin: true,
		TwinVersion: g.version, NewestTelemetry: g.newest, Telemetry: g.count}
}
