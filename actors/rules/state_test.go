package rules

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// TestStateRoundTrip interrupts a run at every step, persists and restores
// the state, and checks that the outcomes are those of the uninterrupted
// run.
func TestStateRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rule string
	}{
		{"plain for", `{"id":"r","when":"telemetry.temperature > 25","for":"25s",` + alertThen + `}`},
		{"tumbling", `{"id":"r","when":"window > 25","window":{"point":"temperature","size":"1m","agg":"avg"},` + alertThen + `}`},
		{"tumbling count", `{"id":"r","when":"window <= 6","window":{"point":"temperature","size":"1m","agg":"count"},` + alertThen + `}`},
		{"sliding", `{"id":"r","when":"window > 25","clear":"window < 20","window":{"point":"temperature","size":"1m","slide":"5s","agg":"max"},` + alertThen + `}`},
		{"anomaly", `{"id":"r","anomaly":{"point":"temperature","history":10},` + alertThen + `}`},
	}
	s := genSeries(7, seriesSpec{N: 200, Base: 22, Amp: 6, Period: 60, Sigma: 0.5, MinK: 8, MaxK: 10, MinGap: 20, MaxGap: 30})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustParse(t, tt.rule)
			run := func(persist bool) []string {
				st := r.NewState()
				var log []string
				for i, v := range s.x {
					now := t0.Add(time.Duration(i) * 7 * time.Second)
					var outs []Outcome
					var err error
					if i%5 == 4 {
						outs, err = r.Tick(st, now, nil)
					} else {
						tel := temp(v)
						outs, err = r.Step(st, Input{Now: now, Telemetry: tel, Env: map[string]any{"telemetry": tel}})
					}
					if err != nil {
						t.Fatal(err)
					}
					log = append(log, fmtOutcomes(outs, true))
					if persist {
						b, err := json.Marshal(st)
						if err != nil {
							t.Fatalf("marshal at %d: %v", i, err)
						}
						st = new(State)
						if err := json.Unmarshal(b, st); err != nil {
							t.Fatalf("unmarshal at %d: %v\n%s", i, err, b)
						}
					}
				}
				return log
			}
			want, got := run(false), run(true)
			raised := 0
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("step %d: with persistence %q, without %q", i, got[i], want[i])
				}
				raised += strings.Count(want[i], "raised")
			}
			if raised == 0 {
				t.Error("scenario raised nothing; it tests little")
			}
		})
	}
}

func TestStateMidWindowJSON(t *testing.T) {
	r := mustParse(t, `{"id":"r","when":"window > 25","window":{"point":"temperature","size":"1m","agg":"avg"},`+alertThen+`}`)
	s := r.NewState()
	r.Step(s, Input{Now: t0.Add(10 * time.Second), Telemetry: temp(30.0)})
	r.Step(s, Input{Now: t0.Add(20 * time.Second), Telemetry: temp(26.0)})
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.win.N != 2 || back.win.Sum != 56 || !back.win.Start.Equal(t0) || back.RuleID() != "r" {
		t.Errorf("restored window %+v from %s", back.win, b)
	}
	outs, err := r.Tick(&back, t0.Add(time.Minute), nil)
	if err != nil || fmtOutcomes(outs, true) != "raised@1m0s=28 fired@1m0s" {
		t.Errorf("after restore: %q, %v", fmtOutcomes(outs, true), err)
	}
}

func TestStateJSONNonFinite(t *testing.T) {
	r := mustParse(t, `{"id":"r","when":"window > 0","window":{"point":"temperature","size":"1m","agg":"sum"},`+alertThen+`}`)
	s := r.NewState()
	r.Step(s, Input{Now: t0, Telemetry: temp(math.MaxFloat64)})
	r.Step(s, Input{Now: t0.Add(time.Second), Telemetry: temp(math.MaxFloat64)}) // sum overflows to +Inf
	if _, err := json.Marshal(s); err != nil {
		t.Errorf("marshal with an infinite sum: %v", err)
	}
}

func TestStateUnmarshalInvalid(t *testing.T) {
	for _, doc := range []string{
		`[]`,
		`{"v":2,"rule":"r","phase":"idle"}`,
		`{"v":1,"rule":"r","phase":"sleeping"}`,
		`{"v":1,"rule":"r","phase":"idle","window":{"t":[1,2],"v":[1]}}`,
		`{"v":1,"rule":"r","phase":"idle","anomaly":{"hist":[1,2],"head":5}}`,
	} {
		var s State
		if err := json.Unmarshal([]byte(doc), &s); err == nil {
			t.Errorf("accepted %s", doc)
		}
	}
}

func TestStateHistoryShrinks(t *testing.T) {
	// A state restored under a rule whose history is shorter is reset, not
	// indexed out of range.
	long := mustParse(t, `{"id":"r","anomaly":{"point":"temperature","history":50},`+alertThen+`}`)
	s := long.NewState()
	for i := range 50 {
		long.Step(s, Input{Now: t0.Add(time.Duration(i) * time.Second), Telemetry: temp(float64(i % 3))})
	}
	short := mustParse(t, `{"id":"r","anomaly":{"point":"temperature","history":20},`+alertThen+`}`)
	for i := range 30 {
		if _, err := short.Step(s, Input{Now: t0.Add(time.Duration(60+i) * time.Second), Telemetry: temp(float64(i % 3))}); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.anom.Hist) != 20 {
		t.Errorf("history holds %d samples, want 20", len(s.anom.Hist))
	}
}
