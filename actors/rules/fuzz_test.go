package rules

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		contractExample,
		`{"id":"a","when":"telemetry.t > 1","then":[{"alert":{"severity":"info"}}]}`,
		`{"id":"a","when":"true","clear":"false","for":"1s","rateLimit":"1m","then":[{"message":{"target":"child:x","payload":"hi","properties":{"a":"b"}}}]}`,
		`{"id":"a","when":"window > 1","window":{"point":"t","size":"1m","slide":"10s","agg":"sum"},"then":[{"command":{"target":"parent","method":"m","timeoutSeconds":5}}]}`,
		`{"id":"a","anomaly":{"point":"t","mode":"dips","confidence":99,"history":10},"then":[{"desired":{"target":"self","patch":{"x":1}}}]}`,
		`{"id":"a","when":"(","then":[]}`,
		`{"id":"a","for":5}`,
		`null`, `[]`, `{}`, ``, `{"id":"a"} x`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		r, err := Parse(doc)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// An accepted rule marshals to a document that is accepted again,
		// and runs without panicking.
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("marshal accepted rule: %v", err)
		}
		if _, err := Parse(b); err != nil {
			t.Fatalf("re-parse %s: %v", b, err)
		}
		exercise(t, r)
	})
}

// fuzzEnv is a fixed twin with values of every JSON type.
func fuzzEnv() map[string]any {
	return map[string]any{
		"telemetry": map[string]any{"t": 21.5, "temperature": 30.0, "on": true, "mode": "auto", "n": nil, "arr": []any{1.0, "x"}, "obj": map[string]any{"a": 1.0}},
		"reported":  map[string]any{"fan": "off", "speed": 3.0, "nested": map[string]any{"deep": map[string]any{"x": false}}},
		"desired":   map[string]any{"fan": "on"},
		"tags":      map[string]any{"zone": "north", "floor": 3.0},
		"rollup":    map[string]any{"temperature": map[string]any{"min": 19.0, "avg": 22.0, "max": 30.0}, "devices": 12.0},
	}
}

func exercise(t *testing.T, r *Rule) {
	s := r.NewState()
	env := fuzzEnv()
	tel := env["telemetry"].(map[string]any)
	for i := range 3 {
		now := t0.Add(time.Duration(i) * 40 * time.Second)
		if _, err := r.Step(s, Input{Now: now, Telemetry: tel, Env: env}); err != nil && !errors.Is(err, ErrEval) {
			t.Fatalf("Step: %v", err)
		}
	}
	if _, err := r.Tick(s, t0.Add(time.Hour), env); err != nil && !errors.Is(err, ErrEval) {
		t.Fatalf("Tick: %v", err)
	}
	r.NextDeadline(s)
	if _, err := json.Marshal(s); err != nil {
		t.Fatalf("marshal state: %v", err)
	}
}

func FuzzExpr(f *testing.F) {
	for _, seed := range []string{
		"telemetry.temperature > 28",
		"rollup.temperature.avg > 26 && tags.zone == 'north'",
		"window > 3 || anomaly.isAnomaly",
		"telemetry.missing.deeper[3] ?? 1 > 0",
		"!telemetry.on and reported.nested.deep.x",
		"-telemetry.n < telemetry.t % 2",
		"telemetry.mode startsWith 'a' and telemetry.arr[1] == 'x'",
		"len(telemetry.arr) / 0 > 1",
		"all(telemetry.arr, # > 0)",
		"let x = telemetry.t; x * x > 400",
		"telemetry.t ** 400 > 1",
		"$gt(1, 2)",
		"1 +", ")(", "'\\xff'", "telemetry['t'] in 1..3",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, when string) {
		doc, err := json.Marshal(map[string]any{
			"id": "fz", "when": when,
			"window":  map[string]any{"point": "t", "size": "1m", "slide": "10s", "agg": "avg"},
			"anomaly": map[string]any{"point": "t", "history": 10},
			"then":    []any{map[string]any{"alert": map[string]any{"severity": "info"}}},
		})
		if err != nil {
			return // not valid UTF-8 for a JSON string; nothing to test
		}
		r, err := Parse(doc)
		if err != nil {
			var ce *CompileError
			if !errors.Is(err, ErrInvalid) || (len(when) <= MaxExprLen && when != "" && !errors.As(err, &ce)) {
				t.Fatalf("Parse(%q): %v", when, err)
			}
			return
		}
		exercise(t, r)
	})
}

func FuzzStateUnmarshal(f *testing.F) {
	r := mustParse(f, `{"id":"r","when":"window > 1 && anomaly.score >= 0","window":{"point":"t","size":"1m","slide":"10s","agg":"max"},"anomaly":{"point":"t","history":10},`+alertThen+`}`)
	tumbling := mustParse(f, `{"id":"r","when":"window > 1","for":"10s","window":{"point":"t","size":"1m","agg":"count"},`+alertThen+`}`)
	s := r.NewState()
	for i := range 15 {
		r.Step(s, Input{Now: t0.Add(time.Duration(i) * time.Second), Telemetry: map[string]any{"t": float64(i)}})
	}
	b, _ := json.Marshal(s)
	f.Add(b)
	ts := tumbling.NewState()
	tumbling.Step(ts, Input{Now: t0, Telemetry: map[string]any{"t": 1.0}})
	b, _ = json.Marshal(ts)
	f.Add(b)
	f.Add([]byte(`{"v":1,"rule":"r","phase":"active","anomaly":{"hist":[1,2,3],"head":2}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		var s State
		if err := json.Unmarshal(doc, &s); err != nil {
			return
		}
		for _, rule := range []*Rule{r, tumbling} {
			st := s
			st.ruleID = rule.ID
			for i := range 12 {
				now := t0.Add(time.Duration(i) * 20 * time.Second)
				if _, err := rule.Step(&st, Input{Now: now, Telemetry: map[string]any{"t": float64(i)}}); err != nil && !errors.Is(err, ErrEval) {
					t.Fatal(err)
				}
			}
			rule.Tick(&st, t0.Add(time.Hour), nil)
			if _, err := json.Marshal(&st); err != nil {
				t.Fatalf("marshal: %v", err)
			}
		}
	})
}
