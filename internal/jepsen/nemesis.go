package jepsen

import (
	"context"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/internal/faults"
)

// FaultKind names a fault the nemesis injects.
type FaultKind string

// The faults.
const (
	// Pause stops one node with SIGSTOP for For, then SIGCONT.
	Pause FaultKind = "pause"
	// Partition cuts a minority (Nodes) from the rest (Other), both ways.
	Partition FaultKind = "partition"
	// Bridge cuts Nodes from Other both ways; the remaining node(s) reach
	// both sides (the "bridge" of Jepsen).
	Bridge FaultKind = "bridge"
	// OneWay drops what Nodes send to Other; Other's packets still reach
	// Nodes.
	OneWay FaultKind = "one-way"
	// Loss drops a share of the packets Nodes send to the other nodes.
	Loss FaultKind = "loss"
	// Slow caps the bandwidth of what Nodes send to the other nodes (and
	// delays it, on kernels with tc netem).
	Slow FaultKind = "slow"
	// Kill SIGKILLs one node, keeps it down for For and starts it again on
	// the same data folder.
	Kill FaultKind = "kill"
	// Stale SIGKILLs one node, keeps it down for For and starts it again
	// from the copy of its data folder taken early in the run.
	Stale FaultKind = "stale-restart"
)

// AllFaults lists every kind, for the long form.
var AllFaults = []FaultKind{Pause, Partition, Bridge, OneWay, Loss, Slow, Kill, Stale}

// Fault is one step of a schedule.
type Fault struct {
	Kind  FaultKind
	Nodes []int // the target(s), 1-based
	Other []int // the other side of a partition, bridge or one-way cut
	// For is how long the fault lasts before its heal.
	For time.Duration
	// Settle is the quiet time after the heal, before the next fault.
	Settle time.Duration
	// LossShare is the share of packets Loss drops.
	LossShare float64
}

func names(ns []int) string {
	var s []string
	for _, n := range ns {
		s = append(s, fmt.Sprintf("n%d", n))
	}
	return strings.Join(s, ",")
}

func (f Fault) String() string {
	switch f.Kind {
	case Partition, Bridge:
		return fmt.Sprintf("%s %s | %s for %v", f.Kind, names(f.Nodes), names(f.Other), f.For)
	case OneWay:
		return fmt.Sprintf("%s %s ↛ %s for %v", f.Kind, names(f.Nodes), names(f.Other), f.For)
	case Loss:
		return fmt.Sprintf("%s %.0f%% from %s for %v", f.Kind, f.LossShare*100, names(f.Nodes), f.For)
	case Kill, Stale:
		return fmt.Sprintf("%s %s, down %v", f.Kind, names(f.Nodes), f.For)
	}
	return fmt.Sprintf("%s %s for %v", f.Kind, names(f.Nodes), f.For)
}

// ShortSchedule is the short form's schedule on n nodes: a pause longer
// than failure detection, a minority partition of 20 s, a SIGKILL and
// restart. Targets come from rng.
func ShortSchedule(rng *rand.Rand, n int) []Fault {
	minority, rest := split(rng, n)
	return []Fault{
		{Kind: Pause, Nodes: []int{1 + rng.Intn(n)}, For: 10 * time.Second, Settle: 15 * time.Second},
		{Kind: Partition, Nodes: minority, Other: rest, For: 20 * time.Second, Settle: 15 * time.Second},
		{Kind: Kill, Nodes: []int{1 + rng.Intn(n)}, For: 5 * time.Second, Settle: 20 * time.Second},
	}
}

// split returns a random minority (⌊(n−1)/2⌋ nodes, at least one) and the
// rest.
func split(rng *rand.Rand, n int) (minority, rest []int) {
	perm := rng.Perm(n)
	k := (n - 1) / 2
	if k < 1 {
		k = 1
	}
	for i, p := range perm {
		if i < k {
			minority = append(minority, p+1)
		} else {
			rest = append(rest, p+1)
		}
	}
	sort.Ints(minority)
	sort.Ints(rest)
	return minority, rest
}

// between draws a duration in [lo, hi] in steps of 100 ms.
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	const step = 100 * time.Millisecond
	return lo + step*time.Duration(rng.Int63n(int64((hi-lo)/step)+1))
}

// RandomSchedule draws faults of the given kinds (all when empty) until
// their durations add up to total.
func RandomSchedule(rng *rand.Rand, n int, total time.Duration, kinds []FaultKind) []Fault {
	if len(kinds) == 0 {
		kinds = AllFaults
	}
	var out []Fault
	var sum time.Duration
	for sum < total {
		f := Fault{Kind: kinds[rng.Intn(len(kinds))], Settle: between(rng, 10*time.Second, 20*time.Second)}
		switch f.Kind {
		case Pause:
			f.Nodes = []int{1 + rng.Intn(n)}
			f.For = between(rng, 3*time.Second, 15*time.Second)
		case Partition:
			f.Nodes, f.Other = split(rng, n)
			f.For = between(rng, 10*time.Second, 30*time.Second)
		case Bridge:
			if n < 3 {
				continue
			}
			perm := rng.Perm(n)
			// perm[0] is the bridge; the others split in two halves.
			half := (n - 1) / 2
			for i, p := range perm[1:] {
				if i < half {
					f.Nodes = append(f.Nodes, p+1)
				} else {
					f.Other = append(f.Other, p+1)
				}
			}
			sort.Ints(f.Nodes)
			sort.Ints(f.Other)
			f.For = between(rng, 10*time.Second, 30*time.Second)
		case OneWay:
			x := 1 + rng.Intn(n)
			f.Nodes = []int{x}
			for i := 1; i <= n; i++ {
				if i != x {
					f.Other = append(f.Other, i)
				}
			}
			f.For = between(rng, 10*time.Second, 30*time.Second)
		case Loss:
			f.Nodes = rng.Perm(n)[:1+rng.Intn(n)]
			for i := range f.Nodes {
				f.Nodes[i]++
			}
			sort.Ints(f.Nodes)
			f.LossShare = 0.1 + 0.3*rng.Float64()
			f.For = between(rng, 10*time.Second, 30*time.Second)
		case Slow:
			f.Nodes = []int{1 + rng.Intn(n)}
			f.For = between(rng, 10*time.Second, 30*time.Second)
		case Kill, Stale:
			f.Nodes = []int{1 + rng.Intn(n)}
			f.For = between(rng, 1*time.Second, 10*time.Second)
		}
		out = append(out, f)
		sum += f.For + f.Settle
	}
	return out
}

// inject starts f. For Kill and Stale it only kills (the heal restarts).
func inject(ctx context.Context, nw *faults.Network, f Fault) error {
	switch f.Kind {
	case Pause:
		return nw.Node(f.Nodes[0]).Pause()
	case Partition, Bridge:
		return nw.Partition(ctx, f.Nodes, f.Other)
	case OneWay:
		return nw.Cut(ctx, f.Nodes, f.Other)
	case Loss:
		return nw.Degrade(ctx, f.Nodes, faults.Degradation{Loss: f.LossShare})
	case Slow:
		d := faults.Degradation{Rate: 16 << 10}
		if faults.DelaySupported() == nil {
			d.Delay, d.Jitter = 200*time.Millisecond, 50*time.Millisecond
		}
		return nw.Degrade(ctx, f.Nodes, d)
	case Kill:
		nw.Node(f.Nodes[0]).Kill()
		return nil
	case Stale:
		return nw.Node(f.Nodes[0]).RestoreSnapshot()
	}
	return fmt.Errorf("unknown fault %q", f.Kind)
}

// heal ends f.
func heal(ctx context.Context, nw *faults.Network, f Fault) error {
	switch f.Kind {
	case Pause:
		return nw.Node(f.Nodes[0]).Resume()
	case Partition, Bridge, OneWay:
		return nw.Heal(ctx)
	case Loss, Slow:
		return nw.HealDegrade(ctx)
	case Kill, Stale:
		return nw.Node(f.Nodes[0]).Restart(ctx)
	}
	return fmt.Errorf("unknown fault %q", f.Kind)
}
