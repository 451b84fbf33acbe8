package twin

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// Issue 12, item 3: telemetry point names are bounded per device, per
// message and in length.
func TestCheckPoints(t *testing.T) {
	tw := New("d1", "device")
	many := func(n int, prefix string) map[string]any {
		m := map[string]any{}
		for i := 0; i < n; i++ {
			m[fmt.Sprintf("%s%d", prefix, i)] = float64(i)
		}
		return m
	}
	tw.SetTelemetry(many(60, "p"), time.Unix(1, 0))
	l := Limits{MaxPoints: 64, MaxPointsPerMessage: 10, MaxPointName: 8}
	for _, tc := range []struct {
		name   string
		points map[string]any
		want   error
	}{
		{"known names", many(10, "p"), nil},
		{"four new names fit", many(4, "q"), nil},
		{"five new names do not", many(5, "q"), ErrTooManyPoints},
		{"too many in one message", many(11, "p"), ErrTooManyPoints},
		{"long name", map[string]any{"temperature": 1.0}, ErrPointName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tw.CheckPoints(tc.points, l)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("CheckPoints = %v, want %v", err, tc.want)
			}
		})
	}
}
