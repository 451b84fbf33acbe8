package jepsen

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Window is one fault, from its injection to the next fault (or the end).
type Window struct {
	What  string    // e.g. "pause n2 10s"
	Start time.Time // injected
	Heal  time.Time // healed (zero for the baseline window)
	End   time.Time // next fault, or the end of the workload
}

// Round is one poll of every node's GET /api/v1/cluster.
type Round struct {
	At    time.Time
	Alive map[string][]string // node → the members it sees alive; nil when it did not answer
}

// full reports whether every node answered and saw all of names alive.
func (r Round) full(names []string) bool {
	for _, n := range names {
		alive, ok := r.Alive[n]
		if !ok || alive == nil {
			return false
		}
		set := map[string]bool{}
		for _, a := range alive {
			set[a] = true
		}
		if len(set) != len(names) {
			return false
		}
		for _, m := range names {
			if !set[m] {
				return false
			}
		}
	}
	return true
}

// Availability is what clients saw during and after one fault.
type Availability struct {
	Window
	// During counts the twin operations called between Start and Heal, and
	// how many were answered (2xx, or 412 for a CAS).
	During, DuringOK int
	// After counts the same between Heal and End.
	After, AfterOK int
	// Telemetry counts messages first sent between Start and Heal and how
	// many were acknowledged.
	Telemetry, TelemetryAcked int
	// Recovered is, per node, how long after Heal the first operation sent
	// to it (after Heal) was answered; a node missing did not recover
	// before End.
	Recovered map[string]time.Duration
	// Converged is how long after Heal every node first saw every node
	// alive (possibly after End: a later fault, such as a restart, may be
	// what brought it back); -1 when that never happened while the
	// membership was polled.
	Converged time.Duration
}

func share(ok, n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%% of %d", 100*float64(ok)/float64(n), n)
}

func (a Availability) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-40s during %-14s", a.What, share(a.DuringOK, a.During))
	if a.Heal.IsZero() {
		return b.String()
	}
	fmt.Fprintf(&b, " after heal %-14s telemetry acked %-12s", share(a.AfterOK, a.After), share(a.TelemetryAcked, a.Telemetry))
	var worst time.Duration
	var missing []string
	for _, d := range a.Recovered {
		if d > worst {
			worst = d
		}
	}
	for n, d := range a.Recovered {
		if d < 0 {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		fmt.Fprintf(&b, " recovered: never on %s", strings.Join(missing, ","))
	} else {
		fmt.Fprintf(&b, " recovered +%.1fs", worst.Seconds())
	}
	switch {
	case a.Converged < 0:
		b.WriteString(", membership never converged")
	case a.Heal.Add(a.Converged).After(a.End):
		fmt.Fprintf(&b, ", membership +%.1fs (NOT within the window: after the next fault began)", a.Converged.Seconds())
	default:
		fmt.Fprintf(&b, ", membership +%.1fs", a.Converged.Seconds())
	}
	return b.String()
}

func answered(op Op) bool { return op.Output.Status == OK || op.Output.Precondition }

// Availabilities computes, for each window, what share of operations and
// telemetry succeeded and how long recovery took after the heal.
func Availabilities(windows []Window, ops []Op, msgs []Message, rounds []Round, nodes []string) []Availability {
	var out []Availability
	for _, w := range windows {
		a := Availability{Window: w, Converged: -1, Recovered: map[string]time.Duration{}}
		healOr := w.Heal
		if healOr.IsZero() {
			healOr = w.End
		}
		first := map[string]time.Time{}
		for _, op := range ops {
			switch {
			case !op.Call.Before(w.Start) && op.Call.Before(healOr):
				a.During++
				if answered(op) {
					a.DuringOK++
				}
			case !w.Heal.IsZero() && !op.Call.Before(w.Heal) && op.Call.Before(w.End):
				a.After++
				if answered(op) {
					a.AfterOK++
					if f, ok := first[op.Node]; !ok || op.Return.Before(f) {
						first[op.Node] = op.Return
					}
				}
			}
		}
		for _, m := range msgs {
			if !m.Sent.Before(w.Start) && m.Sent.Before(healOr) {
				a.Telemetry++
				if m.Acked {
					a.TelemetryAcked++
				}
			}
		}
		if !w.Heal.IsZero() {
			for _, n := range nodes {
				if f, ok := first[n]; ok {
					a.Recovered[n] = f.Sub(w.Heal)
				} else {
					a.Recovered[n] = -1
				}
			}
			for _, r := range rounds {
				if !r.At.Before(w.Heal) && r.full(nodes) {
					a.Converged = r.At.Sub(w.Heal)
					break
				}
			}
		}
		out = append(out, a)
	}
	return out
}
