package thermostat

import (
	"context"
	"testing"
)

func TestFilterTelemetry(t *testing.T) {
	cases := []struct {
		name   string
		points map[string]any
		want   any
		err    bool
	}{
		{"comfortable", map[string]any{"temperature": 21.0, "humidity": 40.0}, "comfortable", false},
		{"muggy", map[string]any{"temperature": 24.0, "humidity": 80.0}, "muggy", false},
		{"cold", map[string]any{"temperature": 12.0}, "cold", false},
		{"hot", map[string]any{"temperature": 31.0}, "hot", false},
		{"no temperature", map[string]any{"humidity": 50.0}, nil, false},
		{"impossible", map[string]any{"temperature": 500.0}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Thermostat{}.FilterTelemetry(context.Background(), "t1", tc.points)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if err == nil && out["comfort"] != tc.want {
				t.Fatalf("comfort = %v, want %v", out["comfort"], tc.want)
			}
		})
	}
}
