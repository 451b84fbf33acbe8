package rules

import (
	"encoding/json"
	"math"
	"time"
)

// windowState is the state of one window. A tumbling window keeps running
// aggregates of the open window; a sliding window keeps its samples.
type windowState struct {
	// Open tumbling window: start (zero when none is open) and aggregates.
	Start time.Time `json:"start,omitzero"`
	N     int       `json:"n,omitempty"`
	Sum   float64   `json:"sum,omitempty"`
	Min   float64   `json:"min,omitempty"`
	Max   float64   `json:"max,omitempty"`
	// LastEnd is the end of the last tumbling window closed.
	LastEnd time.Time `json:"lastEnd,omitzero"`

	// Sliding window samples, oldest first: unix nanoseconds and values.
	T []int64   `json:"t,omitempty"`
	V []float64 `json:"v,omitempty"`

	// Value is the last aggregate produced, which conditions see as
	// "window"; HasValue is false until there is one.
	Value    float64 `json:"value,omitempty"`
	HasValue bool    `json:"hasValue,omitempty"`

	// LastT and LastV identify the previous sample, to ignore a redelivery.
	LastT   time.Time `json:"lastT,omitzero"`
	LastV   float64   `json:"lastV,omitempty"`
	HasLast bool      `json:"hasLast,omitempty"`
}

// sampleValue converts a telemetry value to a window sample: numbers as
// themselves, booleans as 0/1; for count any non-null value counts (as 1).
func sampleValue(agg string, v any) (float64, bool) {
	if v == nil {
		return 0, false
	}
	if f, ok := toFloat(v); ok {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, agg == AggCount
		}
		return f, true
	}
	switch x := v.(type) {
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case json.Number:
		if f, err := x.Float64(); err == nil && !math.IsInf(f, 0) {
			return f, true
		}
	}
	return 1, agg == AggCount
}

// dup reports a redelivered sample and otherwise records it as the last.
func (w *windowState) dup(raw time.Time, v float64) bool {
	if w.HasLast && raw.Equal(w.LastT) && v == w.LastV {
		return true
	}
	w.LastT, w.LastV, w.HasLast = raw, v, true
	return false
}

// addTumbling adds a sample at now to the open window, opening it if
// needed. Windows that ended at or before now must have been closed.
func (w *windowState) addTumbling(size time.Duration, now time.Time, v float64) {
	if w.Start.IsZero() {
		w.Start = now.Truncate(size)
		w.N, w.Sum, w.Min, w.Max = 0, 0, v, v
	}
	w.N++
	w.Sum += v
	w.Min = math.Min(w.Min, v)
	w.Max = math.Max(w.Max, v)
}

// closed is a tumbling window that closed: its end and aggregate.
type closed struct {
	end   time.Time
	value float64
}

// closeTumbling closes the open window if it ended at or before now and,
// for count and sum, reports the latest empty window that ended since (an
// empty window only matters while the last value was not already 0). It
// returns at most two windows, oldest first.
func (w *windowState) closeTumbling(agg string, size time.Duration, now time.Time, dst []closed) []closed {
	if !w.Start.IsZero() {
		end := w.Start.Add(size)
		if now.Before(end) {
			return dst
		}
		w.Value = aggregate(agg, w.N, w.Sum, w.Min, w.Max)
		w.HasValue = true
		w.LastEnd = end
		w.Start, w.N, w.Sum, w.Min, w.Max = time.Time{}, 0, 0, 0, 0
		dst = append(dst, closed{end, w.Value})
	}
	if (agg == AggCount || agg == AggSum) && w.HasValue && w.Value != 0 && !w.LastEnd.IsZero() {
		if end := now.Truncate(size); end.After(w.LastEnd) {
			w.Value = 0
			w.LastEnd = end
			dst = append(dst, closed{end, 0})
		}
	}
	return dst
}

// tumblingDeadline is when the window state next changes with time alone.
func (w *windowState) tumblingDeadline(agg string, size time.Duration) (time.Time, bool) {
	if !w.Start.IsZero() {
		return w.Start.Add(size), true
	}
	if (agg == AggCount || agg == AggSum) && w.HasValue && w.Value != 0 && !w.LastEnd.IsZero() {
		return w.LastEnd.Add(size), true
	}
	return time.Time{}, false
}

// addSliding adds a sample at now, drops the samples at or before
// now-size (and the oldest beyond MaxWindowSamples), and recomputes Value.
func (w *windowState) addSliding(agg string, size time.Duration, now time.Time, v float64) {
	w.T = append(w.T, now.UnixNano())
	w.V = append(w.V, v)
	cut := now.Add(-size).UnixNano()
	i := 0
	for i < len(w.T) && w.T[i] <= cut {
		i++
	}
	if over := len(w.T) - i - MaxWindowSamples; over > 0 {
		i += over
	}
	if i > 0 {
		// Shift in place so the buffer's capacity stays bounded.
		n := copy(w.T, w.T[i:])
		copy(w.V, w.V[i:])
		w.T, w.V = w.T[:n], w.V[:n]
	}
	// Samples are finite, so plain comparisons do.
	var sum, lo, hi float64
	switch agg {
	case AggSum, AggAvg:
		for _, x := range w.V {
			sum += x
		}
	case AggMin:
		lo = w.V[0]
		for _, x := range w.V[1:] {
			if x < lo {
				lo = x
			}
		}
	case AggMax:
		hi = w.V[0]
		for _, x := range w.V[1:] {
			if x > hi {
				hi = x
			}
		}
	}
	w.Value = aggregate(agg, len(w.V), sum, lo, hi)
	w.HasValue = true
}

func aggregate(agg string, n int, sum, lo, hi float64) float64 {
	switch agg {
	case AggCount:
		return float64(n)
	case AggSum:
		return sum
	case AggMin:
		return lo
	case AggMax:
		return hi
	default:
		if n == 0 {
			return 0
		}
		return sum / float64(n)
	}
}

// fits checks a decoded window state.
func (w *windowState) fits() bool {
	return len(w.T) == len(w.V) && len(w.T) <= MaxWindowSamples && w.N >= 0
}
