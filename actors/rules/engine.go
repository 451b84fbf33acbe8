package rules

import (
	"fmt"
	"math"
	"time"
)

// Input is one evaluation trigger: a telemetry message or a twin change.
type Input struct {
	// Now is the time of the change. Times never go backwards within a
	// State: a Now before the latest one seen is taken as the latest.
	Now time.Time
	// Telemetry holds the points of this message (plain values, not the
	// twin's {value, ts} wrapper); nil on a twin-only change. Windows and
	// anomaly detection consume samples from here only.
	Telemetry map[string]any
	// Env is the full twin the conditions see: "telemetry", "reported",
	// "desired", "tags" and "rollup", each a map[string]any (telemetry
	// already updated with this message's points). A missing key is an
	// empty map; when "telemetry" is missing, Telemetry stands in for it.
	// The maps are read during the call only, never retained or modified.
	Env map[string]any
}

// OutcomeKind says what an Outcome reports.
type OutcomeKind uint8

// Outcome kinds.
const (
	// Raised: the rule became active on the entity. The grain raises the
	// alert (Alert.Raise) when Severity is set.
	Raised OutcomeKind = iota + 1
	// Cleared: the rule stopped being active. The grain clears the alert.
	Cleared
	// Fired: run Actions (commands, messages, desired patches) now. It
	// follows a Raised unless the rate limit dropped the actions.
	Fired
)

// String returns "raised", "cleared" or "fired".
func (k OutcomeKind) String() string {
	switch k {
	case Raised:
		return "raised"
	case Cleared:
		return "cleared"
	case Fired:
		return "fired"
	}
	return fmt.Sprintf("OutcomeKind(%d)", int(k))
}

// MarshalText writes the kind's name, so events carry "raised" etc.
func (k OutcomeKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Outcome is one thing that happened during Step or Tick. The grain turns
// each into IO (alert update, action, event), in order.
type Outcome struct {
	Kind   OutcomeKind `json:"kind"`
	RuleID string      `json:"ruleId"`
	// Seq numbers the raises of the rule on the entity (1, 2, ...); a
	// Cleared carries the Seq of the raise it ends. "<rule>/<entity>/<seq>"
	// is an idempotency key for the actions of a raise.
	Seq uint64 `json:"seq"`
	// Actions to run (Fired only): the rule's non-alert actions, in order.
	// The slice is shared with the rule and must not be modified.
	Actions []Action `json:"actions,omitempty"`
	// Severity and Message of the rule's alert action; empty when the rule
	// has none (then no alert is raised or cleared).
	Severity string    `json:"severity,omitempty"`
	Message  string    `json:"message,omitempty"`
	At       time.Time `json:"at"`
	// Value is what the condition was judged on: the sample that was
	// scored (anomaly), else the window aggregate (window), else the value
	// of the first telemetry point the condition names (nil if none).
	Value any `json:"value,omitempty"`
}

// prepare checks that the rule and state go together and resets the
// state's buffers when the rule's window or anomaly configuration changed.
func (r *Rule) prepare(s *State) (*compiled, error) {
	c := r.c
	if c == nil {
		return nil, fmt.Errorf("rule %q: %w", r.ID, ErrNotCompiled)
	}
	if s == nil {
		return nil, fmt.Errorf("rule %s: %w: nil state", r.ID, ErrStateMismatch)
	}
	if s.ruleID != r.ID {
		return nil, fmt.Errorf("rule %s: %w: state is for %q", r.ID, ErrStateMismatch, s.ruleID)
	}
	if s.fingerprint != c.fingerprint || !s.anom.fits(c.history) {
		s.fingerprint = c.fingerprint
		s.win = windowState{}
		s.anom = anomalyState{}
	}
	return c, nil
}

// advance moves the state's clock forward to t and returns the state's
// time (t, or the latest time seen when t is earlier).
func (s *State) advance(t time.Time) time.Time {
	if t.After(s.now) {
		s.now = t
	}
	return s.now
}

// Step evaluates the rule for one input and returns what happened, in
// order. A non-nil error wraps [ErrEval] (the condition failed at run time;
// no transition was made on it), [ErrNotCompiled] or [ErrStateMismatch];
// with ErrEval the outcomes are still valid and must be acted on.
//
// A rule without window or anomaly is evaluated on every Step. A rule with
// a tumbling window is evaluated when a window closes, with a sliding
// window at each sample of its point, with anomaly detection at each sample
// of its point; a Step without such an event only lets time progress
// (closing due windows and raising pending conditions, as Tick does).
func (r *Rule) Step(s *State, in Input) ([]Outcome, error) {
	c, err := r.prepare(s)
	if err != nil {
		return nil, err
	}
	now := s.advance(in.Now)
	if r.Disabled {
		return r.retire(c, s, now, nil), nil
	}
	var out []Outcome
	var errs error
	evaluate := c.win == nil && c.anom == nil
	var value any
	hasValue := false

	// Time passes first: windows that ended close, a For that elapsed
	// raises — the same outcomes whether or not Tick ran in between.
	if c.win != nil && c.tumbling {
		out, errs = r.closeWindows(c, s, now, in.Env, in.Telemetry, out)
	}
	out = r.progress(c, s, now, out)

	if w := c.win; w != nil {
		if v, ok := sampleValue(w.Agg, in.Telemetry[w.Point]); ok && !s.win.dup(in.Now, v) {
			if c.tumbling {
				s.win.addTumbling(c.winSize, now, v)
			} else {
				s.win.addSliding(w.Agg, c.winSize, now, v)
				evaluate, value, hasValue = true, s.win.Value, true
			}
		}
	}
	if a := c.anom; a != nil {
		if x, ok := toFloat(in.Telemetry[a.Point]); ok && !math.IsNaN(x) && !math.IsInf(x, 0) {
			if _, fresh := s.anom.observe(c, in.Now, x); fresh {
				evaluate, value, hasValue = true, x, true
			}
		}
	}
	if evaluate && (c.win == nil || s.win.HasValue) {
		if !hasValue {
			value = firstPoint(c, in.Env, in.Telemetry)
		}
		var err error
		out, err = r.evaluate(c, s, now, in.Env, in.Telemetry, value, out)
		if err != nil {
			errs = err
		}
	}
	return out, errs
}

// Tick lets time pass without new data: tumbling windows that ended by now
// close and are evaluated, and a condition pending for For is raised. The
// grain calls it when [Rule.NextDeadline] is due. env is the current twin,
// as Input.Env (nil is an empty twin); it is read only when a window
// closes. Errors are as for Step.
func (r *Rule) Tick(s *State, now time.Time, env map[string]any) ([]Outcome, error) {
	c, err := r.prepare(s)
	if err != nil {
		return nil, err
	}
	now = s.advance(now)
	if r.Disabled {
		return r.retire(c, s, now, nil), nil
	}
	var out []Outcome
	var errs error
	if c.win != nil && c.tumbling {
		out, errs = r.closeWindows(c, s, now, env, nil, out)
	}
	return r.progress(c, s, now, out), errs
}

// NextDeadline returns when Tick next has something to do — a For
// elapsing, a tumbling window closing — and false when nothing will happen
// without new input. A deadline in the past means "tick now".
func (r *Rule) NextDeadline(s *State) (time.Time, bool) {
	c := r.c
	if c == nil || s == nil || s.ruleID != r.ID {
		return time.Time{}, false
	}
	if r.Disabled {
		return s.now, s.phase != phaseIdle
	}
	var at time.Time
	ok := false
	if s.phase == phasePending {
		at, ok = s.since.Add(c.forDur), true
	}
	if c.win != nil && c.tumbling && s.fingerprint == c.fingerprint {
		if d, wok := s.win.tumblingDeadline(c.win.Agg, c.winSize); wok && (!ok || d.Before(at)) {
			at, ok = d, true
		}
	}
	return at, ok
}

// Retire ends the rule on the entity — the rule was deleted, or the entity
// left its scope: an active rule is Cleared (at now) and the state returns
// to idle with empty window and history. The raise count and the rate
// limiter are kept.
func (r *Rule) Retire(s *State, now time.Time) []Outcome {
	if s == nil {
		return nil
	}
	now = s.advance(now)
	return r.retire(r.c, s, now, nil)
}

func (r *Rule) retire(c *compiled, s *State, now time.Time, out []Outcome) []Outcome {
	if s.phase == phaseActive {
		out = append(out, r.outcome(c, s, Cleared, now))
	}
	s.phase, s.since, s.value = phaseIdle, time.Time{}, nil
	s.win, s.anom = windowState{}, anomalyState{}
	return out
}

// closeWindows closes the tumbling windows due at now and evaluates the
// condition on each, at its end.
func (r *Rule) closeWindows(c *compiled, s *State, now time.Time, env, tel map[string]any, out []Outcome) ([]Outcome, error) {
	var buf [2]closed
	var errs error
	for _, w := range s.win.closeTumbling(c.win.Agg, c.winSize, now, buf[:0]) {
		out = r.progress(c, s, w.end, out) // a For that elapsed before this window closed
		s.win.Value = w.value
		var err error
		out, err = r.evaluate(c, s, w.end, env, tel, w.value, out)
		if err != nil {
			errs = err
		}
	}
	return out, errs
}

// evaluate runs the condition that matters in the current phase (When, or
// Clear while active) at time at, and makes the transition.
func (r *Rule) evaluate(c *compiled, s *State, at time.Time, env, tel map[string]any, value any, out []Outcome) ([]Outcome, error) {
	p := c.when
	if s.phase == phaseActive && c.clear != nil {
		p = c.clear
	}
	s.env.fill(env, tel)
	s.env.Window = s.win.Value
	s.env.Anomaly = s.anom.Last
	holds, err := p.eval(&s.vm, &s.env)
	s.env.reset()
	if err != nil {
		return out, fmt.Errorf("rule %s: %s: %w: %w", r.ID, p.field, ErrEval, err)
	}
	s.value = value
	switch s.phase {
	case phaseIdle:
		if holds {
			s.phase, s.since = phasePending, at
			out = r.progress(c, s, at, out)
		}
	case phasePending:
		if !holds {
			s.phase, s.since = phaseIdle, time.Time{}
		}
	case phaseActive:
		if holds == (c.clear != nil) {
			out = append(out, r.outcome(c, s, Cleared, at))
			s.phase, s.since = phaseIdle, time.Time{}
		}
	}
	return out, nil
}

// progress raises a pending condition whose For has elapsed by now. The
// raise is dated when For elapsed, not when it was noticed.
func (r *Rule) progress(c *compiled, s *State, now time.Time, out []Outcome) []Outcome {
	if s.phase != phasePending {
		return out
	}
	due := s.since.Add(c.forDur)
	if now.Before(due) {
		return out
	}
	s.phase, s.since = phaseActive, due
	s.seq++
	out = append(out, r.outcome(c, s, Raised, due))
	if len(c.effects) > 0 {
		if s.lastFired.IsZero() || due.Sub(s.lastFired) >= c.rateLimit {
			s.lastFired = due
			o := r.outcome(c, s, Fired, due)
			o.Actions = c.effects
			out = append(out, o)
		} else {
			s.suppressed++
		}
	}
	return out
}

func (r *Rule) outcome(c *compiled, s *State, kind OutcomeKind, at time.Time) Outcome {
	o := Outcome{Kind: kind, RuleID: r.ID, Seq: s.seq, At: at, Value: s.value}
	if c != nil && c.alert != nil {
		o.Severity, o.Message = c.alert.Severity, c.alert.Message
	}
	return o
}

// firstPoint returns the value of the first telemetry point the condition
// names.
func firstPoint(c *compiled, env, tel map[string]any) any {
	if len(c.points) == 0 {
		return nil
	}
	t := asMap(env[EnvTelemetry])
	if t == nil {
		t = tel
	}
	return t[c.points[0]]
}
