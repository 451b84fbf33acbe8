package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/expr-lang/expr/vm"
)

// phase is where a rule stands on one entity.
type phase uint8

const (
	phaseIdle    phase = iota // the condition does not hold
	phasePending              // it holds, for less than For so far
	phaseActive               // raised; waiting for the clear condition
)

var phaseNames = [...]string{"idle", "pending", "active"}

// State is the evaluation state of one rule on one entity: the alert phase,
// the rate limiter, the window and the anomaly history. The grain owns it
// (one per rule × entity), serializes access to it (a State is not safe
// for concurrent use) and persists it with MarshalJSON; it is restored with
// UnmarshalJSON. Create it with [Rule.NewState].
type State struct {
	ruleID      string
	fingerprint string
	phase       phase
	since       time.Time // pending since, or active since
	now         time.Time // latest time seen: times never go backwards
	lastFired   time.Time // last time the actions ran
	seq         uint64    // number of raises so far
	suppressed  uint64    // raises whose actions the rate limit dropped
	value       any       // value behind the last evaluation

	win  windowState
	anom anomalyState

	// Scratch, not persisted: a VM reused across evaluations and the
	// environment handed to it.
	vm  vm.VM
	env evalEnv
}

// NewState returns the initial state of the rule on a new entity.
func (r *Rule) NewState() *State {
	s := &State{ruleID: r.ID}
	if r.c != nil {
		s.fingerprint = r.c.fingerprint
	}
	return s
}

// RuleID returns the ID of the rule the state belongs to.
func (s *State) RuleID() string { return s.ruleID }

// Active reports whether the rule is raised on the entity.
func (s *State) Active() bool { return s.phase == phaseActive }

// Pending reports whether the condition holds but For has not elapsed.
func (s *State) Pending() bool { return s.phase == phasePending }

// Seq returns the number of times the rule has been raised on the entity;
// Raised and Fired outcomes carry it, so "<rule>/<entity>/<seq>" is an
// idempotency key for the actions of one raise.
func (s *State) Seq() uint64 { return s.seq }

// Suppressed returns how many raises had their actions dropped by the rate
// limit.
func (s *State) Suppressed() uint64 { return s.suppressed }

// stateVersion is the version of the JSON form.
const stateVersion = 1

type stateJSON struct {
	V           int           `json:"v"`
	Rule        string        `json:"rule"`
	Fingerprint string        `json:"fp,omitempty"`
	Phase       string        `json:"phase"`
	Since       time.Time     `json:"since,omitzero"`
	Now         time.Time     `json:"now,omitzero"`
	LastFired   time.Time     `json:"lastFired,omitzero"`
	Seq         uint64        `json:"seq,omitempty"`
	Suppressed  uint64        `json:"suppressed,omitempty"`
	Value       any           `json:"value,omitempty"`
	Window      *windowState  `json:"window,omitempty"`
	Anomaly     *anomalyState `json:"anomaly,omitempty"`
}

// MarshalJSON encodes the state for persistence. Non-finite numbers (which
// JSON cannot carry) are clamped.
func (s *State) MarshalJSON() ([]byte, error) {
	j := stateJSON{
		V: stateVersion, Rule: s.ruleID, Fingerprint: s.fingerprint,
		Phase: phaseNames[s.phase], Since: s.since, Now: s.now, LastFired: s.lastFired,
		Seq: s.seq, Suppressed: s.suppressed, Value: finiteValue(s.value),
	}
	if w := s.win; w.HasValue || w.HasLast || !w.Start.IsZero() || len(w.T) > 0 {
		w.Sum, w.Min, w.Max, w.Value = finite(w.Sum), finite(w.Min), finite(w.Max), finite(w.Value)
		w.LastV = finite(w.LastV)
		j.Window = &w
	}
	if a := s.anom; a.HasLast || len(a.Hist) > 0 {
		a.Hist = chronological(a.Hist, a.Head)
		a.Head = 0
		a.scratch = nil
		j.Anomaly = &a
	}
	return json.Marshal(j)
}

// UnmarshalJSON restores a state written by MarshalJSON.
func (s *State) UnmarshalJSON(b []byte) error {
	var j stateJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("rules: decode state: %w", err)
	}
	if j.V != stateVersion {
		return fmt.Errorf("rules: decode state: unknown version %d", j.V)
	}
	ns := State{
		ruleID: j.Rule, fingerprint: j.Fingerprint, since: j.Since, now: j.Now,
		lastFired: j.LastFired, seq: j.Seq, suppressed: j.Suppressed, value: j.Value,
	}
	found := false
	for i, name := range phaseNames {
		if name == j.Phase {
			ns.phase, found = phase(i), true
		}
	}
	if !found {
		return fmt.Errorf("rules: decode state: unknown phase %q", truncate(j.Phase, 20))
	}
	if j.Window != nil {
		if !j.Window.fits() {
			return errors.New("rules: decode state: malformed window")
		}
		ns.win = *j.Window
	}
	if j.Anomaly != nil {
		if !j.Anomaly.fits(MaxAnomalyHistory) {
			return errors.New("rules: decode state: malformed anomaly history")
		}
		ns.anom = *j.Anomaly
	}
	*s = ns
	return nil
}

// chronological returns the ring's contents oldest first.
func chronological(ring []float64, head int) []float64 {
	if head == 0 {
		return ring
	}
	out := make([]float64, 0, len(ring))
	out = append(out, ring[head:]...)
	return append(out, ring[:head]...)
}

func finite(f float64) float64 {
	switch {
	case math.IsNaN(f):
		return 0
	case math.IsInf(f, 1):
		return math.MaxFloat64
	case math.IsInf(f, -1):
		return -math.MaxFloat64
	}
	return f
}

func finiteValue(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil
		}
	}
	return v
}

// Interface guards.
var (
	_ json.Marshaler   = (*State)(nil)
	_ json.Unmarshaler = (*State)(nil)
	_ json.Marshaler   = Duration(0)
	_ json.Unmarshaler = (*Duration)(nil)
)
