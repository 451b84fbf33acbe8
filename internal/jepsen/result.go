package jepsen

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Result is what a run found.
type Result struct {
	Seed   int64
	Config Config
	Dir    string
	// Injected lists the faults as they were injected.
	Injected []string
	// Problems are harness-level troubles (a node that would not
	// restart, a fault that could not be applied).
	Problems []string
	// SelfExits lists the nodes that exited although the nemesis did not
	// stop them (the harness started them again, as systemd would).
	SelfExits []string
	// Counts of twin operations by "kind status" and of telemetry.
	Counts                  map[string]int
	Messages, Acked, Resent int
	Twins                   []TwinVerdict
	Forks                   []Fork
	Telemetry               []TelemetryVerdict
	Activations             []Activation
	Fenced                  int // "grain fenced" lines
	EpochClashes            []EpochClash
	Availability            []Availability
	Converged               bool          // membership converged after the final heal
	ConvergeTime            time.Duration // how long that took (or the time waited)
	FinalHeal               time.Time
	// Start is when the run began: report times are relative to it.
	Start time.Time
	// History is the JSON-lines file of every operation and message.
	History string
}

// windowAt names the fault window t falls in.
func (res *Result) windowAt(t time.Time) string {
	name := "setup"
	for _, a := range res.Availability {
		if !t.Before(a.Start) {
			name = a.What
		}
	}
	if !res.FinalHeal.IsZero() && !t.Before(res.FinalHeal) {
		name = "final reads"
	}
	return name
}

func (res *Result) count(ops []Op, msgs []Message) {
	res.Counts = map[string]int{}
	for _, op := range ops {
		st := op.Output.Status.String()
		if op.Output.Precondition {
			st = "412"
		}
		res.Counts[op.Input.Kind.String()+" "+st]++
	}
	for _, m := range msgs {
		res.Messages++
		if m.Acked {
			res.Acked++
		}
		if m.Attempts > 1 {
			res.Resent++
		}
	}
}

// Linearizable reports whether every twin's history checked Ok.
func (res *Result) Linearizable() bool {
	for _, t := range res.Twins {
		if t.Result != porcupine.Ok {
			return false
		}
	}
	return true
}

// Violations lists every guarantee the run saw broken, one line each;
// empty when the run passed.
func (res *Result) Violations() []string {
	var v []string
	for _, t := range res.Twins {
		switch t.Result {
		case porcupine.Illegal:
			v = append(v, fmt.Sprintf("twin %s: history of %d operations is not linearizable: %s (%s)", t.Twin, t.Ops, t.Stuck, t.Visualization))
		case porcupine.Unknown:
			if t.Stuck != "" {
				v = append(v, fmt.Sprintf("twin %s: no verdict: %s", t.Twin, t.Stuck))
			} else {
				v = append(v, fmt.Sprintf("twin %s: linearizability check timed out after %v on %d operations (%d unknown): no verdict (%s)", t.Twin, t.Took.Round(time.Second), t.Ops, t.Unknown, t.Visualization))
			}
		}
	}
	byTwin := map[string][]Fork{}
	var twins []string
	for _, f := range res.Forks {
		if byTwin[f.Twin] == nil {
			twins = append(twins, f.Twin)
		}
		byTwin[f.Twin] = append(byTwin[f.Twin], f)
	}
	sort.Strings(twins)
	for _, tw := range twins {
		fs := byTwin[tw]
		lo, hi := fs[0].Version, fs[0].Version
		for _, f := range fs {
			lo, hi = min(lo, f.Version), max(hi, f.Version)
		}
		v = append(v, fmt.Sprintf("fork: twin %s has %d versions (between %d and %d) answered with two values, first at +%.1fs during %q: %s",
			tw, len(fs), lo, hi, fs[0].At.Sub(res.Start).Seconds(), res.windowAt(fs[0].At), fs[0]))
	}
	for _, t := range res.Telemetry {
		if len(t.Lost) > 0 {
			v = append(v, fmt.Sprintf("telemetry via %s: %d acknowledged messages missing: %s", t.Node, len(t.Lost), head(t.Lost, 8)))
		}
		if len(t.Duplicated) > 0 {
			v = append(v, fmt.Sprintf("telemetry via %s: %d message IDs stored more than once: %s", t.Node, len(t.Duplicated), head(t.Duplicated, 8)))
		}
		if len(t.Unknown) > 0 {
			v = append(v, fmt.Sprintf("telemetry via %s: %d stored message IDs never sent: %s", t.Node, len(t.Unknown), head(t.Unknown, 8)))
		}
		if t.Err != "" {
			v = append(v, fmt.Sprintf("telemetry via %s: could not be read: %s", t.Node, t.Err))
		}
	}
	for _, c := range res.EpochClashes {
		v = append(v, fmt.Sprintf("fencing: entity %s epoch %d claimed by %d activations (%s)", c.Entity, c.Epoch, len(c.Nodes), strings.Join(c.Nodes, ", ")))
	}
	if !res.Converged {
		v = append(v, fmt.Sprintf("liveness: membership did not converge within %v after every fault was healed", res.ConvergeTime.Round(time.Second)))
	}
	return v
}

func head(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(", … %d more", len(s)-n)
}

// Report is the run's summary: what was injected, the operation counts,
// availability per fault window and the verdict.
func (res *Result) Report() string {
	var b strings.Builder
	c := res.Config
	fmt.Fprintf(&b, "== twinmesh Jepsen run: seed %d (TWINMESH_JEPSEN_SEED=%d reproduces the schedule), %d nodes, --replicas %d\n", res.Seed, res.Seed, c.Nodes, c.Replicas)
	fmt.Fprintf(&b, "   data, logs and visualizations: %s (history: %s)\n", res.Dir, res.History)
	if c.StaleReadsAllowed {
		b.WriteString("   stale reads allowed: reads and 412s are left out of the linearizability check\n")
	}
	b.WriteString("-- injected\n")
	for _, s := range res.Injected {
		fmt.Fprintf(&b, "   %s\n", s)
	}
	b.WriteString("-- operations\n")
	var keys []string
	for k := range res.Counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "   %-16s %6d\n", k, res.Counts[k])
	}
	fmt.Fprintf(&b, "   telemetry: %d messages, %d acknowledged, %d sent more than once\n", res.Messages, res.Acked, res.Resent)
	b.WriteString("-- availability per fault window (operations called in the window and answered: 2xx, or 412 for a CAS)\n")
	for _, a := range res.Availability {
		span := fmt.Sprintf("+%.0fs", a.Start.Sub(res.Start).Seconds())
		if !a.Heal.IsZero() {
			span += fmt.Sprintf("–%.0fs", a.Heal.Sub(res.Start).Seconds())
		}
		fmt.Fprintf(&b, "   %-10s %s\n", span, a)
	}
	b.WriteString("-- checks\n")
	for _, t := range res.Twins {
		fmt.Fprintf(&b, "   linearizability %-6s %-8s %5d ops (%d unknown) from %s, checked in %v", t.Twin, t.Result, t.Ops, t.Unknown, t.Init, t.Took.Round(time.Millisecond))
		if t.Visualization != "" {
			fmt.Fprintf(&b, " → %s", t.Visualization)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "   forks (one version, two values): %d\n", len(res.Forks))
	for _, t := range res.Telemetry {
		fmt.Fprintf(&b, "   telemetry via %s: %d stored, %d acknowledged lost, %d duplicated, %d unknown\n", t.Node, t.Stored, len(t.Lost), len(t.Duplicated), len(t.Unknown))
	}
	fmt.Fprintf(&b, "   fencing: %d activations, %d fenced, %d (entity, epoch) clashes\n", len(res.Activations), res.Fenced, len(res.EpochClashes))
	if res.Converged {
		fmt.Fprintf(&b, "   membership converged %v after the workload\n", res.ConvergeTime.Round(time.Millisecond))
	}
	if len(res.SelfExits) > 0 {
		b.WriteString("-- nodes that exited on their own (started again after 1 s, as systemd would)\n")
		for _, e := range res.SelfExits {
			fmt.Fprintf(&b, "   %s\n", e)
		}
	}
	if len(res.Problems) > 0 {
		b.WriteString("-- harness problems\n")
		for _, p := range res.Problems {
			fmt.Fprintf(&b, "   %s\n", p)
		}
	}
	v := res.Violations()
	if len(v) == 0 {
		b.WriteString("== verdict: PASS\n")
		return b.String()
	}
	fmt.Fprintf(&b, "== verdict: FAIL (%d violations)\n", len(v))
	for _, s := range v {
		fmt.Fprintf(&b, "   %s\n", s)
	}
	return b.String()
}
