package rules

import (
	"fmt"
	"testing"
	"time"
)

func windowRule(t *testing.T, when, size, slide, agg, extra string) *Rule {
	t.Helper()
	sl := ""
	if slide != "" {
		sl = fmt.Sprintf(`,"slide":%q`, slide)
	}
	return mustParse(t, fmt.Sprintf(`{"id":"w","when":%q,"window":{"point":"temperature","size":%q%s,"agg":%q}%s,%s}`,
		when, size, sl, agg, extra, alertThen))
}

func TestTumblingWindow(t *testing.T) {
	sec := time.Second
	// Samples 10, 20, 30 (and a string, ignored) in [0s, 60s); the window
	// closes at 60s when the sample of the next window arrives.
	feed := []ev{
		{at: 0, tel: temp(10.0)},
		{at: 20 * sec, tel: temp(20.0)},
		{at: 30 * sec, tel: temp("n/a")},
		{at: 40 * sec, tel: temp(30)},
	}
	tests := []struct {
		agg  string
		want string
	}{
		{AggAvg, "raised@1m0s=20"},
		{AggMin, "raised@1m0s=10"},
		{AggMax, "raised@1m0s=30"},
		{AggSum, "raised@1m0s=60"},
		{AggCount, "raised@1m0s=4"}, // count counts every non-null sample
	}
	for _, tt := range tests {
		t.Run(tt.agg+"/closed by a sample", func(t *testing.T) {
			r := windowRule(t, "window > -1000", "1m", "", tt.agg, "")
			evs := append(append([]ev{}, feed...), ev{at: 70 * sec, tel: temp(1000.0), want: tt.want + " fired@1m0s"})
			runScenario(t, r, evs)
		})
		t.Run(tt.agg+"/closed by Tick", func(t *testing.T) {
			r := windowRule(t, "window > -1000", "1m", "", tt.agg, "")
			evs := append(append([]ev{}, feed...),
				ev{at: 59 * sec, tick: true},
				ev{at: 60 * sec, tick: true, want: tt.want + " fired@1m0s"})
			runScenario(t, r, evs)
		})
	}
}

func TestTumblingWindowBehaviour(t *testing.T) {
	sec := time.Second
	tests := []struct {
		name string
		rule *Rule
		evs  []ev
	}{
		{
			name: "evaluated only when a window closes",
			rule: windowRule(t, "window > 28", "1m", "1m", AggAvg, ""),
			evs: []ev{
				{at: 0, tel: temp(40.0)},
				{at: 30 * sec, tel: temp(40.0)},
				{at: 60 * sec, tel: temp(20.0), want: "raised@1m0s fired@1m0s"}, // [0,60) avg 40
				{at: 90 * sec, tel: temp(20.0)},
				{at: 120 * sec, tick: true, want: "cleared@2m0s"}, // [60,120) avg 20
				{at: 180 * sec, tick: true},                       // empty window: no value for avg
			},
		},
		{
			name: "windows are aligned on multiples of size",
			rule: windowRule(t, "window >= 2", "1m", "", AggCount, ""),
			evs: []ev{
				{at: 50 * sec, tel: temp(1.0)},
				{at: 59 * sec, tel: temp(1.0)},
				{at: 61 * sec, tel: temp(1.0), want: "raised@1m0s fired@1m0s"},
			},
		},
		{
			name: "count: an empty window evaluates as zero",
			rule: windowRule(t, "window < 1", "1m", "", AggCount, ""),
			evs: []ev{
				{at: 10 * sec, tel: temp(1.0)},
				{at: 60 * sec, tick: true},
				{at: 119 * sec, tick: true},
				{at: 120 * sec, tick: true, want: "raised@2m0s fired@2m0s"},
				{at: 180 * sec, tick: true},
				{at: 190 * sec, tel: temp(1.0)},
				{at: 240 * sec, tick: true, want: "cleared@4m0s"},
			},
		},
		{
			name: "sum: empty windows after a gap, without ticks",
			rule: windowRule(t, "window == 0", "1m", "", AggSum, ""),
			evs: []ev{
				{at: 10 * sec, tel: temp(5.0)},
				{at: 250 * sec, tel: temp(5.0), want: "raised@4m0s fired@4m0s"},
				{at: 300 * sec, tick: true, want: "cleared@5m0s"},
			},
		},
		{
			name: "for spans windows",
			rule: windowRule(t, "window > 28", "1m", "", AggMax, `,"for":"90s"`),
			evs: []ev{
				{at: 0, tel: temp(30.0)},
				{at: 60 * sec, tel: temp(31.0)}, // [0,60) max 30 → pending since 1m
				{at: 120 * sec, tel: temp(32.0)},
				{at: 149 * sec, tick: true},
				{at: 150 * sec, tick: true, want: "raised@2m30s fired@2m30s"},
			},
		},
		{
			name: "a redelivered sample is ignored",
			rule: windowRule(t, "window > 2", "1m", "", AggCount, ""),
			evs: []ev{
				{at: 0, tel: temp(1.0)},
				{at: 10 * sec, tel: temp(1.0)},
				{at: 10 * sec, tel: temp(1.0)},
				{at: 60 * sec, tick: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runScenario(t, tt.rule, tt.evs) })
	}
}

func TestSlidingWindow(t *testing.T) {
	sec := time.Second
	// Window (now-60s, now]: at 70s it holds the samples of 20s, 40s, 70s.
	feed := func(last string) []ev {
		return []ev{
			{at: 0, tel: temp(10.0)},
			{at: 20 * sec, tel: temp(20.0)},
			{at: 40 * sec, tel: temp(30.0)},
			{at: 70 * sec, tel: temp(40.0), want: last},
		}
	}
	tests := []struct {
		agg, when string
		evs       []ev
	}{
		{AggAvg, "window == 30", feed("raised@1m10s=30 fired@1m10s")},
		{AggMin, "window == 20", feed("raised@1m10s=20 fired@1m10s")},
		{AggMax, "window == 40", feed("raised@1m10s=40 fired@1m10s")},
		{AggSum, "window == 90", feed("raised@1m10s=90 fired@1m10s")},
		{AggCount, "window == 3", func() []ev {
			e := feed("")
			e[2].want = "raised@40s=3 fired@40s" // 0s, 20s, 40s
			e[3].want = ""                       // 20s, 40s, 70s: still 3
			return e
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.agg, func(t *testing.T) {
			runScenario(t, windowRule(t, tt.when, "1m", "10s", tt.agg, ""), tt.evs)
		})
	}
	t.Run("samples exactly size old are out", func(t *testing.T) {
		runScenario(t, windowRule(t, "window == 1", "1m", "30s", AggCount, ""), []ev{
			{at: 0, tel: temp(1.0), want: "raised@0s fired@0s"},
			{at: 30 * sec, tel: temp(1.0), want: "cleared@30s"},
			{at: 90 * sec, tel: temp(1.0), want: "raised@1m30s fired@1m30s"},
		})
	})
	t.Run("twin-only changes do not evaluate", func(t *testing.T) {
		runScenario(t, windowRule(t, "window > 0 && reported.on == true", "1m", "30s", AggAvg, ""), []ev{
			{at: 0, tel: temp(1.0)},
			{at: 1 * sec, env: map[string]any{"reported": map[string]any{"on": true}}},
			{at: 2 * sec, tel: temp(1.0), want: "raised@2s fired@2s"},
		})
	})
}

func TestSlidingWindowBounded(t *testing.T) {
	r := windowRule(t, "window > 1e9", "1h", "1m", AggCount, "")
	s := r.NewState()
	for i := range MaxWindowSamples + 5000 {
		if _, err := r.Step(s, Input{Now: t0.Add(time.Duration(i) * time.Millisecond), Telemetry: temp(float64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.win.T); n != MaxWindowSamples || s.win.Value != MaxWindowSamples {
		t.Errorf("buffer holds %d samples, count %v; want %d", n, s.win.Value, MaxWindowSamples)
	}
	if cap(s.win.T) > 4*MaxWindowSamples {
		t.Errorf("buffer capacity grew to %d", cap(s.win.T))
	}
	if got := s.win.V[0]; got != 5000 {
		t.Errorf("oldest sample %v, want 5000", got)
	}
}

func TestWindowRuleChangeResetsBuffers(t *testing.T) {
	r := windowRule(t, "window > 0", "1m", "", AggSum, "")
	s := r.NewState()
	r.Step(s, Input{Now: t0, Telemetry: temp(5.0)})
	r2 := windowRule(t, "window > 0", "5m", "", AggSum, "")
	r2.Step(s, Input{Now: t0.Add(10 * time.Second), Telemetry: temp(1.0)})
	if s.win.N != 1 || s.win.Sum != 1 {
		t.Errorf("after a change of size the window holds n=%d sum=%v; want the new sample only", s.win.N, s.win.Sum)
	}
}
