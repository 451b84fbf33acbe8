package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// ev is one input of a scenario, at t0+at on the virtual clock.
type ev struct {
	at   time.Duration
	tel  map[string]any // points of a telemetry message; nil: twin-only change
	env  map[string]any // sections other than telemetry, replacing earlier ones
	tick bool           // Tick instead of Step
	want string         // outcomes, space-separated "kind@offset[=value]"; "" for none
	err  error          // error wanted (errors.Is)
}

// twin keeps the latest telemetry and sections, as a grain's twin would.
type twin struct {
	tel map[string]any
	env map[string]any
}

func (tw *twin) apply(e ev) {
	if tw.tel == nil {
		tw.tel, tw.env = map[string]any{}, map[string]any{}
	}
	maps.Copy(tw.tel, e.tel)
	maps.Copy(tw.env, e.env)
}

func (tw *twin) envMap() map[string]any {
	m := maps.Clone(tw.env)
	m[EnvTelemetry] = tw.tel
	return m
}

func fmtOutcomes(outs []Outcome, withValue bool) string {
	var parts []string
	for _, o := range outs {
		p := fmt.Sprintf("%s@%s", o.Kind, o.At.Sub(t0))
		if withValue && o.Kind == Raised && o.Value != nil {
			p += fmt.Sprintf("=%v", o.Value)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

// runScenario feeds the events to a new state and checks each result.
func runScenario(t *testing.T, r *Rule, evs []ev) *State {
	t.Helper()
	s := r.NewState()
	var tw twin
	for i, e := range evs {
		tw.apply(e)
		var outs []Outcome
		var err error
		if e.tick {
			outs, err = r.Tick(s, t0.Add(e.at), tw.envMap())
		} else {
			outs, err = r.Step(s, Input{Now: t0.Add(e.at), Telemetry: e.tel, Env: tw.envMap()})
		}
		if e.err != nil {
			if !errors.Is(err, e.err) {
				t.Errorf("event %d (@%s): err = %v, want %v", i, e.at, err, e.err)
			}
		} else if err != nil {
			t.Errorf("event %d (@%s): unexpected error %v", i, e.at, err)
		}
		if got := fmtOutcomes(outs, strings.Contains(e.want, "=")); got != e.want {
			t.Errorf("event %d (@%s): outcomes %q, want %q", i, e.at, got, e.want)
		}
	}
	return s
}

func temp(v any) map[string]any { return map[string]any{"temperature": v} }

const alertThen = `"then":[{"alert":{"severity":"major","message":"too hot"}},{"command":{"target":"parent","method":"cool","payload":{}}}]`

func TestStepConditions(t *testing.T) {
	sec := time.Second
	tests := []struct {
		name string
		rule string
		evs  []ev
	}{
		{
			name: "threshold raises once and clears",
			rule: `{"id":"hot","when":"telemetry.temperature > 28",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(25.0)},
				{at: 1 * sec, tel: temp(29.0), want: "raised@1s fired@1s"},
				{at: 2 * sec, tel: temp(30.0)}, // already active: no re-raise
				{at: 3 * sec, tel: temp(27.0), want: "cleared@3s"},
				{at: 4 * sec, tel: temp(27.5)},
				{at: 5 * sec, tel: temp(31.0), want: "raised@5s fired@5s"},
			},
		},
		{
			name: "integer telemetry and twin-only changes",
			rule: `{"id":"auto","when":"telemetry.temperature > 28 && reported.mode == 'auto'",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(30)},
				{at: 1 * sec, env: map[string]any{"reported": map[string]any{"mode": "auto"}}, want: "raised@1s fired@1s"},
				{at: 2 * sec, env: map[string]any{"reported": map[string]any{"mode": "manual"}}, want: "cleared@2s"},
			},
		},
		{
			name: "missing point is false, not an error",
			rule: `{"id":"hot","when":"telemetry.temperature > 28",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: map[string]any{"humidity": 50.0}},
				{at: 1 * sec, tel: temp(nil)},
				{at: 2 * sec, tel: temp(29.0), want: "raised@2s fired@2s"},
			},
		},
		{
			name: "rollup and tags",
			rule: `{"id":"room","when":"rollup.temperature.avg > 26 && tags.zone == 'north'",` + alertThen + `}`,
			evs: []ev{
				{at: 0, env: map[string]any{"tags": map[string]any{"zone": "north"}}},
				{at: 1 * sec, env: map[string]any{"rollup": map[string]any{"temperature": map[string]any{"avg": 25.0}}}},
				{at: 2 * sec, env: map[string]any{"rollup": map[string]any{"temperature": map[string]any{"avg": 26.5}}}, want: "raised@2s fired@2s"},
			},
		},
		{
			name: "for: raised by Tick once held long enough",
			rule: `{"id":"hot","when":"telemetry.temperature > 28","for":"30s",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(29.0)},
				{at: 10 * sec, tel: temp(29.5)},
				{at: 29 * sec, tick: true},
				{at: 30 * sec, tick: true, want: "raised@30s fired@30s"},
				{at: 31 * sec, tick: true},
				{at: 40 * sec, tel: temp(20.0), want: "cleared@40s"},
			},
		},
		{
			name: "for: flapping resets the timer",
			rule: `{"id":"hot","when":"telemetry.temperature > 28","for":"30s",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(29.0)},
				{at: 20 * sec, tel: temp(27.0)},
				{at: 25 * sec, tel: temp(29.0)},
				{at: 30 * sec, tick: true},
				{at: 50 * sec, tel: temp(27.0)},
				{at: 55 * sec, tel: temp(29.0)},
				{at: 84 * sec, tick: true},
				{at: 85 * sec, tick: true, want: "raised@1m25s fired@1m25s"},
			},
		},
		{
			name: "for: elapsed between two messages without a Tick",
			rule: `{"id":"hot","when":"telemetry.temperature > 28","for":"30s",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(29.0)},
				{at: 60 * sec, tel: temp(27.0), want: "raised@30s fired@30s cleared@1m0s"},
			},
		},
		{
			name: "hysteresis: stays active until clear holds",
			rule: `{"id":"hot","when":"telemetry.temperature > 28","clear":"telemetry.temperature < 25",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(29.0), want: "raised@0s fired@0s"},
				{at: 2 * sec, tel: temp(27.0)},
				{at: 4 * sec, tel: temp(28.5)},
				{at: 6 * sec, tel: temp(24.9), want: "cleared@6s"},
				{at: 8 * sec, tel: temp(27.0)},
				{at: 10 * sec, tel: temp(29.0), want: "raised@10s fired@10s"},
			},
		},
		{
			name: "rate limit drops actions, not alerts",
			rule: `{"id":"hot","when":"telemetry.temperature > 28","rateLimit":"1m",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(29.0), want: "raised@0s fired@0s"},
				{at: 10 * sec, tel: temp(27.0), want: "cleared@10s"},
				{at: 20 * sec, tel: temp(29.0), want: "raised@20s"},
				{at: 30 * sec, tel: temp(27.0), want: "cleared@30s"},
				{at: 60 * sec, tel: temp(29.0), want: "raised@1m0s fired@1m0s"},
			},
		},
		{
			name: "default rate limit is one second",
			rule: `{"id":"hot","when":"telemetry.temperature > 28",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(29.0), want: "raised@0s fired@0s"},
				{at: 300 * time.Millisecond, tel: temp(27.0), want: "cleared@300ms"},
				{at: 600 * time.Millisecond, tel: temp(29.0), want: "raised@600ms"},
				{at: 900 * time.Millisecond, tel: temp(27.0), want: "cleared@900ms"},
				{at: 1000 * time.Millisecond, tel: temp(29.0), want: "raised@1s fired@1s"},
			},
		},
		{
			name: "evaluation error makes no transition",
			rule: `{"id":"hot","when":"telemetry.temperature > 28",` + alertThen + `}`,
			evs: []ev{
				{at: 0, tel: temp(29.0), want: "raised@0s fired@0s"},
				{at: 1 * sec, tel: temp("hot"), err: ErrEval},
				{at: 2 * sec, tel: temp(20.0), want: "cleared@2s"},
			},
		},
		{
			name: "time never goes backwards",
			rule: `{"id":"hot","when":"telemetry.temperature > 28","for":"10s",` + alertThen + `}`,
			evs: []ev{
				{at: 60 * sec, tel: temp(29.0)},
				{at: 0, tel: temp(29.0)}, // late message: counts as @60s
				{at: 69 * sec, tick: true},
				{at: 70 * sec, tick: true, want: "raised@1m10s fired@1m10s"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runScenario(t, mustParse(t, tt.rule), tt.evs)
		})
	}
}

func TestOutcomeDetails(t *testing.T) {
	r := mustParse(t, `{"id":"hot","when":"telemetry.temperature > 28",`+alertThen+`}`)
	s := r.NewState()
	outs, err := r.Step(s, Input{Now: t0, Telemetry: temp(29.5), Env: map[string]any{"telemetry": temp(29.5)}})
	if err != nil || len(outs) != 2 {
		t.Fatalf("outs %v, err %v", outs, err)
	}
	raised, fired := outs[0], outs[1]
	if raised.Kind != Raised || raised.RuleID != "hot" || raised.Severity != "major" || raised.Message != "too hot" ||
		raised.Value != 29.5 || raised.Seq != 1 || !raised.At.Equal(t0) || raised.Actions != nil {
		t.Errorf("raised = %+v", raised)
	}
	if fired.Kind != Fired || len(fired.Actions) != 1 || fired.Actions[0].Command == nil || fired.Actions[0].Command.Method != "cool" || fired.Seq != 1 {
		t.Errorf("fired = %+v", fired)
	}
	b, err := json.Marshal(raised)
	if err != nil || !strings.Contains(string(b), `"kind":"raised"`) {
		t.Errorf("marshal outcome: %s, %v", b, err)
	}
	if !s.Active() || s.Pending() || s.Seq() != 1 {
		t.Errorf("state: active %v pending %v seq %d", s.Active(), s.Pending(), s.Seq())
	}
	outs, _ = r.Step(s, Input{Now: t0.Add(time.Second), Telemetry: temp(20.0)})
	if len(outs) != 1 || outs[0].Kind != Cleared || outs[0].Seq != 1 || outs[0].Severity != "major" {
		t.Errorf("cleared = %+v", outs)
	}
}

func TestNoAlertAction(t *testing.T) {
	r := mustParse(t, `{"id":"fan","when":"telemetry.temperature > 28","then":[{"desired":{"target":"self","patch":{"fan":"on"}}}]}`)
	s := r.NewState()
	outs, _ := r.Step(s, Input{Now: t0, Telemetry: temp(29.0)})
	if got := fmtOutcomes(outs, false); got != "raised@0s fired@0s" || outs[0].Severity != "" {
		t.Errorf("outcomes %q, severity %q", got, outs[0].Severity)
	}
}

func TestDisabledAndRetire(t *testing.T) {
	r := mustParse(t, `{"id":"hot","when":"telemetry.temperature > 28",`+alertThen+`}`)
	s := r.NewState()
	if outs, _ := r.Step(s, Input{Now: t0, Telemetry: temp(29.0)}); len(outs) != 2 {
		t.Fatalf("outs %v", outs)
	}
	off := mustParse(t, `{"id":"hot","disabled":true,"when":"telemetry.temperature > 28",`+alertThen+`}`)
	if at, ok := off.NextDeadline(s); !ok || !at.Equal(t0) {
		t.Errorf("NextDeadline of disabled active rule = %v, %v; want due now", at, ok)
	}
	outs, err := off.Tick(s, t0.Add(time.Second), nil)
	if err != nil || fmtOutcomes(outs, false) != "cleared@1s" {
		t.Errorf("disable: %v, %v", fmtOutcomes(outs, false), err)
	}
	if outs, _ := off.Step(s, Input{Now: t0.Add(2 * time.Second), Telemetry: temp(35.0)}); len(outs) != 0 {
		t.Errorf("disabled rule produced %v", outs)
	}
	// Re-enabled, raised again, then retired.
	if outs, _ := r.Step(s, Input{Now: t0.Add(3 * time.Second), Telemetry: temp(35.0)}); fmtOutcomes(outs, false) != "raised@3s fired@3s" || outs[0].Seq != 2 {
		t.Errorf("re-enable: %v", outs)
	}
	if outs := r.Retire(s, t0.Add(4*time.Second)); fmtOutcomes(outs, false) != "cleared@4s" {
		t.Errorf("retire: %v", outs)
	}
	if outs := r.Retire(s, t0.Add(5*time.Second)); len(outs) != 0 {
		t.Errorf("second retire: %v", outs)
	}
}

func TestStepMisuse(t *testing.T) {
	r := mustParse(t, `{"id":"a","when":"true",`+alertThen+`}`)
	other := mustParse(t, `{"id":"b","when":"true",`+alertThen+`}`)
	if _, err := r.Step(other.NewState(), Input{Now: t0}); !errors.Is(err, ErrStateMismatch) {
		t.Errorf("foreign state: %v", err)
	}
	if _, err := r.Step(nil, Input{Now: t0}); !errors.Is(err, ErrStateMismatch) {
		t.Errorf("nil state: %v", err)
	}
	lit := &Rule{ID: "lit", When: "true"}
	if _, err := lit.Step(lit.NewState(), Input{Now: t0}); !errors.Is(err, ErrNotCompiled) {
		t.Errorf("uncompiled: %v", err)
	}
	if _, err := lit.Tick(lit.NewState(), t0, nil); !errors.Is(err, ErrNotCompiled) {
		t.Errorf("uncompiled tick: %v", err)
	}
	if _, ok := lit.NextDeadline(lit.NewState()); ok {
		t.Error("uncompiled rule has a deadline")
	}
}

func TestNextDeadline(t *testing.T) {
	r := mustParse(t, `{"id":"hot","when":"telemetry.temperature > 28","for":"30s",`+alertThen+`}`)
	s := r.NewState()
	if _, ok := r.NextDeadline(s); ok {
		t.Error("idle state has a deadline")
	}
	r.Step(s, Input{Now: t0.Add(5 * time.Second), Telemetry: temp(29.0)})
	if at, ok := r.NextDeadline(s); !ok || !at.Equal(t0.Add(35*time.Second)) {
		t.Errorf("pending deadline = %v, %v", at, ok)
	}

	w := mustParse(t, `{"id":"w","when":"window > 28","for":"2m","window":{"point":"temperature","size":"1m","agg":"avg"},`+alertThen+`}`)
	ws := w.NewState()
	w.Step(ws, Input{Now: t0.Add(5 * time.Second), Telemetry: temp(30.0)})
	if at, ok := w.NextDeadline(ws); !ok || !at.Equal(t0.Add(time.Minute)) {
		t.Errorf("window deadline = %v, %v", at, ok)
	}
	w.Tick(ws, t0.Add(time.Minute), nil) // window closes: avg 30 holds → pending until 3m
	if at, ok := w.NextDeadline(ws); !ok || !at.Equal(t0.Add(3*time.Minute)) {
		t.Errorf("pending window deadline = %v, %v", at, ok)
	}
}
