package rules

import (
	"fmt"
	"testing"
	"time"
)

// benchRules returns n rules of the given mix:
//   - "threshold": telemetry.temperature > k && reported.mode == 'auto'
//   - "mixed": a third as above, a third with a 1-minute sliding avg window,
//     a third with anomaly detection over 120 samples.
func benchRules(b *testing.B, mix string, n int) []*Rule {
	rs := make([]*Rule, n)
	for i := range rs {
		k := 20 + i%10
		doc := fmt.Sprintf(`{"id":"r%d","when":"telemetry.temperature > %d && reported.mode == 'auto'",%s}`, i, k, alertThen)
		if mix == "mixed" {
			switch i % 3 {
			case 1:
				doc = fmt.Sprintf(`{"id":"r%d","when":"window > %d","window":{"point":"temperature","size":"1m","slide":"10s","agg":"avg"},%s}`, i, k, alertThen)
			case 2:
				doc = fmt.Sprintf(`{"id":"r%d","anomaly":{"point":"temperature","history":120},%s}`, i, alertThen)
			}
		}
		rs[i] = mustParse(b, doc)
	}
	return rs
}

// BenchmarkStep measures the rule evaluation cost of one telemetry message
// on one entity with 0, 10 and 100 rules in scope: ns/op is per message.
// The temperature cycles through 20..29 each second, so each threshold
// rule raises and clears once every 10 messages.
func BenchmarkStep(b *testing.B) {
	for _, mix := range []string{"threshold", "mixed"} {
		for _, n := range []int{0, 10, 100} {
			b.Run(fmt.Sprintf("%s/rules=%d", mix, n), func(b *testing.B) {
				rs := benchRules(b, mix, n)
				states := make([]*State, n)
				for i, r := range rs {
					states[i] = r.NewState()
				}
				tel := map[string]any{"temperature": 20.0}
				env := map[string]any{
					"telemetry": tel,
					"reported":  map[string]any{"mode": "auto"},
					"tags":      map[string]any{"zone": "north"},
				}
				in := Input{Telemetry: tel, Env: env}
				temps := make([]any, 10) // boxed once: the harness should not allocate
				for k := range temps {
					temps[k] = 20 + float64(k)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					tel["temperature"] = temps[i%10]
					in.Now = t0.Add(time.Duration(i) * time.Second)
					for j, r := range rs {
						if _, err := r.Step(states[j], in); err != nil {
							b.Fatal(err)
						}
					}
					i++
				}
				if n > 0 {
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/rule")
				}
			})
		}
	}
}

func BenchmarkParse(b *testing.B) {
	doc := []byte(contractExample)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStateMarshal(b *testing.B) {
	r := mustParse(b, `{"id":"r","anomaly":{"point":"temperature","history":120},`+alertThen+`}`)
	s := r.NewState()
	for i := range 200 {
		r.Step(s, Input{Now: t0.Add(time.Duration(i) * time.Second), Telemetry: temp(float64(i % 7))})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}
