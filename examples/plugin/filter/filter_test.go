package filter_test

import (
	"errors"
	"testing"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/plugin/plugintest"
	"github.com/twinmesh/twinmesh/examples/plugin/filter"
)

func TestOnTelemetry(t *testing.T) {
	cases := []struct {
		name   string
		points map[string]any
		want   any // the comfort point stored; nil for none
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
			h := plugintest.New(t, filter.Sensor{})
			h.Create("s1", filter.Kind, "")
			err := h.Telemetry("s1", tc.points)
			if tc.err != (err != nil) {
				t.Fatalf("err = %v", err)
			}
			if tc.err && !errors.Is(err, errcode.ErrBadRequest) {
				t.Fatalf("a refused message answers %v, want a bad request", err)
			}
			tm := h.Twin("s1").Telemetry
			if got := tm["comfort"].Value; got != tc.want {
				t.Fatalf("comfort = %v, want %v", got, tc.want)
			}
			if tc.err && len(tm) != 0 {
				t.Fatalf("a refused message was stored: %v", tm)
			}
		})
	}
}
