package thermostat_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/actors/plugin/plugintest"
	"github.com/twinmesh/twinmesh/examples/thermostat/thermostat"
)

func newThermostat(t *testing.T) *plugintest.Harness {
	t.Helper()
	h := plugintest.New(t, thermostat.Thermostat{})
	h.Create("t1", thermostat.Kind, "")
	return h
}

func configure(t *testing.T, h *plugintest.Harness, args string) {
	t.Helper()
	if _, err := h.Call("t1", "configure", json.RawMessage(args)); err != nil {
		t.Fatal(err)
	}
}

func status(t *testing.T, h *plugintest.Harness) thermostat.Status {
	t.Helper()
	out, err := h.Call("t1", "status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st thermostat.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConfigureStoresSettingsAndArmsTheTimer(t *testing.T) {
	h := newThermostat(t)
	configure(t, h, `{"setpoint":21,"interval":"1s"}`)
	var st thermostat.Status
	if !h.LoadState("t1", &st) || st.Setpoint != 21 || st.Interval != "1s" || st.LastTick != nil {
		t.Fatalf("state %+v", st)
	}
	tm := h.Timers("t1")
	if len(tm) != 1 || tm[0].Name != thermostat.Tick || !tm[0].Due.Equal(plugintest.Epoch.Add(time.Second)) {
		t.Fatalf("timers %+v", tm)
	}
	// Configuring again moves the timer: it does not add a second one.
	h.Advance(500 * time.Millisecond)
	configure(t, h, `{"setpoint":22,"interval":"1m"}`)
	if tm := h.Timers("t1"); len(tm) != 1 || !tm[0].Due.Equal(plugintest.Epoch.Add(time.Minute+500*time.Millisecond)) {
		t.Fatalf("timers after reconfigure %+v", tm)
	}
}

func TestTickDrivesTheHeater(t *testing.T) {
	cases := []struct {
		name  string
		temps []float64 // one reading before each tick
		want  []any     // desired.heater after each tick
	}{
		{"cold turns it on", []float64{18}, []any{"on"}},
		{"warm turns it off", []float64{23}, []any{"off"}},
		{"inside the band leaves it unset", []float64{21.4}, []any{nil}},
		{"on stays on inside the band", []float64{20, 21.2, 21.5}, []any{"on", "on", "on"}},
		{"off stays off inside the band", []float64{22, 20.8, 20.5}, []any{"off", "off", "off"}},
		{"past the band flips it", []float64{20, 21.6, 20.4}, []any{"on", "off", "on"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newThermostat(t)
			configure(t, h, `{"setpoint":21,"interval":"10s"}`)
			for i, temp := range tc.temps {
				if err := h.Telemetry("t1", map[string]any{"temperature": temp}); err != nil {
					t.Fatal(err)
				}
				h.Advance(10 * time.Second)
				if got := h.Twin("t1").Desired["heater"]; got != tc.want[i] {
					t.Fatalf("tick %d at %v°: heater %v, want %v", i+1, temp, got, tc.want[i])
				}
			}
		})
	}
}

func TestNoTemperatureNoChange(t *testing.T) {
	h := newThermostat(t)
	configure(t, h, `{"setpoint":21,"interval":"1s"}`)
	if err := h.Telemetry("t1", map[string]any{"humidity": 40}); err != nil {
		t.Fatal(err)
	}
	h.Advance(3 * time.Second)
	if tw := h.Twin("t1"); len(tw.Desired) != 0 {
		t.Fatalf("desired %v without a temperature", tw.Desired)
	}
	if st := status(t, h); st.LastTick == nil || !st.LastTick.Equal(plugintest.Epoch.Add(3*time.Second)) {
		t.Fatalf("status %+v: the timer must keep ticking", st)
	}
}

func TestStatus(t *testing.T) {
	h := newThermostat(t)
	if _, err := h.Call("t1", "status", nil); !errors.Is(err, errcode.ErrConflict) {
		t.Fatalf("status before configure: %v", err)
	}
	configure(t, h, `{"setpoint":19.5,"interval":"2s"}`)
	if st := status(t, h); st.Setpoint != 19.5 || st.Interval != "2s" || st.LastTick != nil {
		t.Fatalf("before the first tick: %+v", st)
	}
	h.Advance(5 * time.Second) // ticks at 2s and 4s
	out, _ := h.Call("t1", "status", nil)
	var raw map[string]any
	_ = json.Unmarshal(out, &raw)
	if raw["lastTick"] != plugintest.Epoch.Add(4*time.Second).Format(time.RFC3339) {
		t.Fatalf("status %s: lastTick is the last tick in RFC 3339", out)
	}
	// Settings and timer survive a crash of the node.
	h.Restart()
	h.Advance(2 * time.Second)
	if st := status(t, h); st.Setpoint != 19.5 || !st.LastTick.Equal(plugintest.Epoch.Add(6*time.Second)) {
		t.Fatalf("after restart %+v", st)
	}
}

func TestBadArguments(t *testing.T) {
	cases := []struct{ name, args string }{
		{"no arguments", ``},
		{"null", `null`},
		{"not an object", `[21]`},
		{"no setpoint", `{"interval":"1s"}`},
		{"setpoint not a number", `{"setpoint":"warm","interval":"1s"}`},
		{"no interval", `{"setpoint":21}`},
		{"bad interval", `{"setpoint":21,"interval":"soon"}`},
		{"interval too short", `{"setpoint":21,"interval":"10ms"}`},
		{"negative interval", `{"setpoint":21,"interval":"-1s"}`},
		{"unknown field", `{"setpoint":21,"interval":"1s","mode":"eco"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newThermostat(t)
			_, err := h.Call("t1", "configure", json.RawMessage(tc.args))
			if !errors.Is(err, errcode.ErrBadRequest) || err.Error() == "" {
				t.Fatalf("configure %s: %v, want a bad request", tc.args, err)
			}
			if h.State("t1") != nil || len(h.Timers("t1")) != 0 {
				t.Fatal("a refused configure changed the state")
			}
		})
	}
	h := newThermostat(t)
	if _, err := h.Call("t1", "reboot", nil); !errors.Is(err, plugin.ErrUnknownOp) {
		t.Fatalf("unknown operation: %v", err)
	}
}

func TestRegisteredInTheDefaultRegistry(t *testing.T) {
	k, ok := plugin.Default().Lookup(thermostat.Kind)
	if !ok || !k.Info().Traits.Has(plugin.Device) {
		t.Fatalf("kind %q not registered as a device (%v)", thermostat.Kind, plugin.Default().Kinds())
	}
}
