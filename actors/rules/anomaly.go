package rules

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// MaxAnomalyScore caps AnomalyResult.Score: a sample that differs from a
// perfectly constant history has an infinite z-score, which JSON cannot
// carry.
const MaxAnomalyScore = 1e9

// zThreshold returns the robust z-score threshold for confidence c and a
// history of n samples: the two-sided standard normal quantile at level
// (1-c)/n, z = Φ⁻¹(1 − (1−c)/(2n)), so that on gaussian data a whole
// history's worth of samples passes without a false alarm with probability
// about c (a Bonferroni correction; see the package documentation for why
// not the per-sample quantile). For n = 120: 0.95 → 3.53, 0.99 → 3.94,
// 0.999 → 4.46.
func zThreshold(c float64, n int) float64 {
	return math.Sqrt2 * math.Erfinv(1-(1-c)/float64(n))
}

// anomalyState is the sliding history of one detector. Hist is a ring of
// at most History samples; Head is the index of the oldest once it is full.
type anomalyState struct {
	Hist []float64     `json:"hist,omitempty"`
	Head int           `json:"head,omitempty"`
	Last AnomalyResult `json:"last"`
	// LastT and LastX identify the previous sample, to ignore a redelivery.
	LastT   time.Time `json:"lastT,omitzero"`
	LastX   float64   `json:"lastX,omitempty"`
	HasLast bool      `json:"hasLast,omitempty"`

	scratch []float64
}

// observe scores x against the history, then adds it to the history. It
// reports false, changing nothing, for a redelivered sample (same raw time
// and value as the previous one).
func (a *anomalyState) observe(c *compiled, raw time.Time, x float64) (AnomalyResult, bool) {
	if a.HasLast && raw.Equal(a.LastT) && x == a.LastX {
		return a.Last, false
	}
	res := a.score(c, x)
	if len(a.Hist) < c.history {
		a.Hist = append(a.Hist, x)
	} else {
		a.Hist[a.Head] = x
		a.Head = (a.Head + 1) % len(a.Hist)
	}
	a.Last = res
	a.LastT, a.LastX, a.HasLast = raw, x, true
	return res, true
}

func (a *anomalyState) score(c *compiled, x float64) AnomalyResult {
	n := len(a.Hist)
	if n < MinAnomalyHistory {
		return AnomalyResult{}
	}
	sc := append(a.scratch[:0], a.Hist...)
	a.scratch = sc
	med := median(sc)
	var sumAbs float64
	for i, v := range sc {
		d := math.Abs(v - med)
		sc[i] = d
		sumAbs += d
	}
	scale := 1.4826 * median(sc)
	if scale == 0 {
		// More than half the history equals the median (quantized or
		// constant data): fall back to the mean absolute deviation, scaled
		// to σ for normal data.
		scale = 1.2533 * sumAbs / float64(n)
	}
	d := x - med
	var score float64
	switch {
	case scale > 0:
		score = math.Abs(d) / scale
	case d != 0:
		score = MaxAnomalyScore
	}
	if score > MaxAnomalyScore || math.IsNaN(score) {
		score = MaxAnomalyScore
	}
	res := AnomalyResult{Score: score}
	res.Spike = d > 0 && score >= c.threshold
	res.Dip = d < 0 && score >= c.threshold
	switch c.anomMode {
	case ModeSpikes:
		res.IsAnomaly = res.Spike
	case ModeDips:
		res.IsAnomaly = res.Dip
	default:
		res.IsAnomaly = res.Spike || res.Dip
	}
	return res
}

// median returns the median of v, which is not empty and holds no NaN,
// reordering v. It runs in linear time (quickselect), falling back to
// sorting when the input defeats the pivot choice, so a device cannot make
// it quadratic.
func median(v []float64) float64 {
	n := len(v)
	m := selectKth(v, n/2)
	if n%2 == 1 {
		return m
	}
	// After selection v[:n/2] holds the n/2 smallest: the other middle
	// element is their maximum.
	lo := v[0]
	for _, x := range v[1 : n/2] {
		if x > lo {
			lo = x
		}
	}
	return (lo + m) / 2
}

// selectKth reorders v so that v[k] is its k-th smallest element (and the
// elements before it are no greater, those after no smaller); it returns
// v[k].
func selectKth(v []float64, k int) float64 {
	lo, hi := 0, len(v)-1
	budget := 2 * bits.Len(uint(len(v)))
	for lo < hi {
		if budget--; budget < 0 {
			slices.Sort(v[lo : hi+1])
			return v[k]
		}
		mid := lo + (hi-lo)/2
		if v[mid] < v[lo] {
			v[mid], v[lo] = v[lo], v[mid]
		}
		if v[hi] < v[lo] {
			v[hi], v[lo] = v[lo], v[hi]
		}
		if v[hi] < v[mid] {
			v[hi], v[mid] = v[mid], v[hi]
		}
		pivot := v[mid]
		i, j := lo, hi
		for i <= j {
			for v[i] < pivot {
				i++
			}
			for v[j] > pivot {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return v[k]
		}
	}
	return v[k]
}

// validate checks a decoded history against the rule.
func (a *anomalyState) fits(history int) bool {
	return len(a.Hist) <= history && a.Head >= 0 && (a.Head == 0 || a.Head < len(a.Hist))
}
