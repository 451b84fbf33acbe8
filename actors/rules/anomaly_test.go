package rules

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// series is a generated signal with known anomalies.
type series struct {
	x      []float64
	spikes map[int]bool
	dips   map[int]bool
}

// seriesSpec describes a generated series: a slow sine plus gaussian noise,
// with spikes and dips of magnitude MinK..MaxK noise standard deviations
// injected at random indices, MinGap to MaxGap samples apart. The default
// models a temperature sampled every 10 s: a daily cycle of ±2 °C (8640
// samples), noise σ = 0.2 °C, one anomaly every 25 to 75 samples (about
// 2% of the samples) of 6 to 12 σ.
type seriesSpec struct {
	N          int
	Base, Amp  float64
	Period     float64 // samples
	Sigma      float64 // noise standard deviation
	MinK, MaxK float64 // anomaly magnitude, in Sigma
	MinGap     int     // samples between anomalies, at least
	MaxGap     int
}

var defaultSeries = seriesSpec{
	N: 5000, Base: 21, Amp: 2, Period: 8640, Sigma: 0.2,
	MinK: 6, MaxK: 12, MinGap: 25, MaxGap: 75,
}

func genSeries(seed uint64, sp seriesSpec) series {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := series{x: make([]float64, sp.N), spikes: map[int]bool{}, dips: map[int]bool{}}
	next := 2*DefaultHistory + rng.IntN(sp.MaxGap)
	for i := range s.x {
		v := sp.Base + sp.Amp*math.Sin(2*math.Pi*float64(i)/sp.Period) + rng.NormFloat64()*sp.Sigma
		if i == next {
			k := (sp.MinK + rng.Float64()*(sp.MaxK-sp.MinK)) * sp.Sigma
			if rng.IntN(2) == 0 {
				v += k
				s.spikes[i] = true
			} else {
				v -= k
				s.dips[i] = true
			}
			next += sp.MinGap + rng.IntN(sp.MaxGap-sp.MinGap+1)
		}
		s.x[i] = v
	}
	return s
}

// detect runs an anomaly rule over the series, one sample a second, and
// returns the indices flagged. A non-zero z overrides the threshold.
func detect(tb testing.TB, mode string, confidence float64, history int, x []float64, z float64) map[int]bool {
	tb.Helper()
	r := mustParse(tb, fmt.Sprintf(`{"id":"anom","anomaly":{"point":"t","mode":%q,"confidence":%v,"history":%d},
		"then":[{"alert":{"severity":"minor"}}]}`, mode, confidence, history))
	if z != 0 {
		r.c.threshold = z
	}
	s := r.NewState()
	flagged := map[int]bool{}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, v := range x {
		tel := map[string]any{"t": v}
		if _, err := r.Step(s, Input{Now: t0.Add(time.Duration(i) * time.Second), Telemetry: tel}); err != nil {
			tb.Fatal(err)
		}
		if s.anom.Last.IsAnomaly {
			flagged[i] = true
		}
	}
	return flagged
}

// score returns precision and recall of flagged against truth.
func score(flagged, truth map[int]bool) (precision, recall float64) {
	tp := 0
	for i := range flagged {
		if truth[i] {
			tp++
		}
	}
	precision, recall = 1, 1
	if len(flagged) > 0 {
		precision = float64(tp) / float64(len(flagged))
	}
	if len(truth) > 0 {
		recall = float64(tp) / float64(len(truth))
	}
	return precision, recall
}

func truthFor(mode string, s series) map[int]bool {
	truth := map[int]bool{}
	if mode != ModeDips {
		for i := range s.spikes {
			truth[i] = true
		}
	}
	if mode != ModeSpikes {
		for i := range s.dips {
			truth[i] = true
		}
	}
	return truth
}

func TestAnomalyPrecisionRecall(t *testing.T) {
	for _, mode := range []string{ModeSpikes, ModeDips, ModeSpikesAndDips} {
		t.Run(mode, func(t *testing.T) {
			for seed := uint64(1); seed <= 3; seed++ {
				s := genSeries(seed, defaultSeries)
				truth := truthFor(mode, s)
				p, r := score(detect(t, mode, 0.99, DefaultHistory, s.x, 0), truth)
				t.Logf("seed %d: %d anomalies in %d samples: precision %.3f recall %.3f", seed, len(truth), len(s.x), p, r)
				if p < 0.8 || r < 0.8 {
					t.Errorf("seed %d: precision %.3f, recall %.3f; want both >= 0.8", seed, p, r)
				}
			}
		})
	}
}

// TestAnomalyReport prints precision and recall over a grid of modes,
// confidence levels, anomaly magnitudes and drift speeds, and compares the
// threshold with the per-sample quantile (go test -run AnomalyReport -v).
func TestAnomalyReport(t *testing.T) {
	if testing.Short() {
		t.Skip("report")
	}
	type row struct {
		mode     string
		conf     float64
		k        [2]float64
		period   float64
		perPoint bool
	}
	var rows []row
	for _, mode := range []string{ModeSpikes, ModeDips, ModeSpikesAndDips} {
		for _, conf := range []float64{0.95, 0.99, 0.999} {
			for _, k := range [][2]float64{{3, 6}, {6, 12}} {
				rows = append(rows, row{mode, conf, k, defaultSeries.Period, false})
			}
		}
	}
	for _, conf := range []float64{0.95, 0.99} {
		rows = append(rows, row{ModeSpikesAndDips, conf, [2]float64{6, 12}, defaultSeries.Period, true})
		rows = append(rows, row{ModeSpikesAndDips, conf, [2]float64{6, 12}, 1440, false})
		rows = append(rows, row{ModeSpikesAndDips, conf, [2]float64{6, 12}, 480, false})
	}
	t.Logf("%-14s %-6s %-6s %-7s %-10s %9s %9s", "mode", "conf", "k·σ", "period", "threshold", "precision", "recall")
	for _, rw := range rows {
		sp := defaultSeries
		sp.MinK, sp.MaxK, sp.Period = rw.k[0], rw.k[1], rw.period
		z, zname := 0.0, "history"
		if rw.perPoint {
			z, zname = math.Sqrt2*math.Erfinv(rw.conf), "per-sample"
		}
		var tp, nflag, ntruth int
		for seed := uint64(1); seed <= 3; seed++ {
			s := genSeries(seed, sp)
			truth := truthFor(rw.mode, s)
			flagged := detect(t, rw.mode, rw.conf, DefaultHistory, s.x, z)
			for i := range flagged {
				if truth[i] {
					tp++
				}
			}
			nflag += len(flagged)
			ntruth += len(truth)
		}
		t.Logf("%-14s %-6v %-6s %-7v %-10s %9.3f %9.3f", rw.mode, rw.conf, fmt.Sprintf("%v-%v", rw.k[0], rw.k[1]),
			rw.period, zname, float64(tp)/float64(max(nflag, 1)), float64(tp)/float64(max(ntruth, 1)))
	}
}

func BenchmarkAnomaly(b *testing.B) {
	s := genSeries(1, defaultSeries)
	truth := truthFor(ModeSpikesAndDips, s)
	var p, r float64
	for b.Loop() {
		p, r = score(detect(b, ModeSpikesAndDips, 0.99, DefaultHistory, s.x, 0), truth)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(s.x)), "ns/sample")
	b.ReportMetric(p, "precision")
	b.ReportMetric(r, "recall")
}

func TestMedian(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 1; n <= 300; n++ {
		for _, distinct := range []int{2, 5, 1000} {
			v := make([]float64, n)
			for i := range v {
				v[i] = float64(rng.IntN(distinct))
			}
			sorted := slices.Clone(v)
			slices.Sort(sorted)
			want := sorted[n/2]
			if n%2 == 0 {
				want = (sorted[n/2-1] + sorted[n/2]) / 2
			}
			if got := median(v); got != want {
				t.Fatalf("n=%d distinct=%d: median %v, want %v", n, distinct, got, want)
			}
		}
	}
	// Sorted and reversed inputs, which defeat naive pivots.
	for _, n := range []int{1000, 1001} {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(i)
		}
		if got := median(slices.Clone(v)); got != float64(n-1)/2 {
			t.Errorf("sorted %d: %v", n, got)
		}
		slices.Reverse(v)
		if got := median(v); got != float64(n-1)/2 {
			t.Errorf("reversed %d: %v", n, got)
		}
	}
}
