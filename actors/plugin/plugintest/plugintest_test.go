package plugintest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/actors/plugin/plugintest"
)

// gadget is a device kind with every capability, to exercise the harness.
type gadget struct{}

type gadgetState struct {
	Sum    float64 `json:"sum"`
	Every  string  `json:"every,omitempty"`
	Pongs  int     `json:"pongs,omitempty"`
	Ticks  int     `json:"ticks,omitempty"`
	Active int     `json:"active,omitempty"`
}

func (gadget) Info() plugin.Info { return plugin.Info{Name: "gadget", Traits: plugin.Device} }

func load(ctx *plugin.Ctx) gadgetState {
	var st gadgetState
	_, _ = ctx.LoadState(&st)
	return st
}

func (gadget) Operation(ctx *plugin.Ctx, name string, args json.RawMessage) (any, error) {
	st := load(ctx)
	switch name {
	case "add":
		var a struct{ N float64 }
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		st.Sum += a.N
		return st.Sum, ctx.SetState(st)
	case "arm": // args: a duration; "periodic" re-arms in OnTimer
		var a struct {
			After    string
			Periodic bool
		}
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		d, err := time.ParseDuration(a.After)
		if err != nil {
			return nil, err
		}
		if a.Periodic {
			st.Every = a.After
		}
		ctx.After("tick", d)
		return nil, ctx.SetState(st)
	case "ping":
		return nil, ctx.SendParent("ping", map[string]string{"hello": ctx.ID()})
	case "conflict":
		return nil, errcode.New(errcode.Conflict, "busy")
	case "plain":
		return nil, errors.New("no good")
	}
	return nil, plugin.UnknownOp(ctx.Kind(), name)
}

func (gadget) OnTelemetry(_ *plugin.Ctx, points map[string]any) (map[string]any, error) {
	x, ok := points["x"].(float64)
	if !ok {
		return points, nil
	}
	if x < 0 {
		return nil, fmt.Errorf("x %v is negative", x)
	}
	points["x2"] = 2 * x
	return points, nil
}

func (gadget) OnChange(_ *plugin.Ctx, section string, patch json.RawMessage) error {
	var p map[string]any
	_ = json.Unmarshal(patch, &p)
	if _, bad := p["forbidden"]; bad && section == "desired" {
		return errors.New("forbidden is forbidden")
	}
	return nil
}

func (gadget) OnTimer(ctx *plugin.Ctx, name string) error {
	st := load(ctx)
	st.Ticks++
	if st.Every != "" {
		d, _ := time.ParseDuration(st.Every)
		ctx.After(name, d)
	}
	if err := ctx.PatchDesired(map[string]any{"ticks": st.Ticks}); err != nil {
		return err
	}
	return ctx.SetState(st)
}

func (gadget) OnMessage(ctx *plugin.Ctx, from, name string, _ json.RawMessage) error {
	if name == "pong" {
		st := load(ctx)
		st.Pongs++
		return ctx.SetState(st)
	}
	return nil
}

func (gadget) OnActivate(ctx *plugin.Ctx) error {
	st := load(ctx)
	st.Active++
	return ctx.SetState(st)
}

// hub is a rollup kind that answers pings.
type hub struct{}

func (hub) Info() plugin.Info { return plugin.Info{Name: "hub", Traits: plugin.Rollup} }

func (hub) OnMessage(ctx *plugin.Ctx, from, name string, payload json.RawMessage) error {
	if name != "ping" {
		return nil
	}
	if err := ctx.PatchDesired(map[string]any{"last": from}); err != nil {
		return err
	}
	return ctx.Send(from, "pong", nil)
}

var (
	_ plugin.Operator         = gadget{}
	_ plugin.TelemetryHandler = gadget{}
	_ plugin.ChangeHandler    = gadget{}
	_ plugin.TimerHandler     = gadget{}
	_ plugin.MessageHandler   = gadget{}
	_ plugin.Activator        = gadget{}
	_ plugin.MessageHandler   = hub{}
)

func setup(t *testing.T) *plugintest.Harness {
	h := plugintest.New(t, gadget{}, hub{})
	h.Create("h1", "hub", "")
	h.Create("g1", "gadget", "h1")
	return h
}

func state(t *testing.T, h *plugintest.Harness, id string) gadgetState {
	t.Helper()
	var st gadgetState
	h.LoadState(id, &st)
	return st
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestHarness(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, h *plugintest.Harness)
	}{
		{"operation result and private state", func(t *testing.T, h *plugintest.Harness) {
			must(t, errFirst(h.Call("g1", "add", map[string]int{"n": 2})))
			out, err := h.Call("g1", "add", json.RawMessage(`{"n":3}`))
			if err != nil || string(out) != "5" {
				t.Fatalf("add = %s, %v", out, err)
			}
			if st := state(t, h, "g1"); st.Sum != 5 {
				t.Fatalf("state %+v", st)
			}
		}},
		{"operation errors keep their code", func(t *testing.T, h *plugintest.Harness) {
			for op, want := range map[string]error{"nope": plugin.ErrUnknownOp, "conflict": errcode.ErrConflict,
				"plain": errcode.ErrBadRequest} {
				if _, err := h.Call("g1", op, nil); !errors.Is(err, want) || err.Error() == "" {
					t.Errorf("%s: %v, want %v", op, err, want)
				}
			}
			if _, err := h.Call("h1", "add", nil); !errors.Is(err, plugin.ErrUnknownOp) {
				t.Errorf("a kind without operations: %v", err)
			}
			if _, err := h.Call("ghost", "add", nil); !errors.Is(err, errcode.ErrNotFound) {
				t.Errorf("a missing entity: %v", err)
			}
		}},
		{"telemetry hook derives and refuses", func(t *testing.T, h *plugintest.Harness) {
			must(t, h.Telemetry("g1", map[string]any{"x": 2}))
			if err := h.Telemetry("g1", map[string]any{"x": -1}); !errors.Is(err, errcode.ErrBadRequest) {
				t.Fatalf("negative x: %v", err)
			}
			tm := h.Twin("g1").Telemetry
			if tm["x"].Value != 2.0 || tm["x2"].Value != 4.0 {
				t.Fatalf("telemetry %v", tm)
			}
			if len(h.Events("g1")) == 0 || h.Events("g1")[len(h.Events("g1"))-1].Type != "telemetry" {
				t.Fatalf("events %v", h.Events("g1"))
			}
		}},
		{"desired patches and a refusing change hook", func(t *testing.T, h *plugintest.Harness) {
			h.ClearEvents()
			must(t, h.PatchDesired("g1", map[string]any{"a": 1}))
			if err := h.PatchDesired("g1", map[string]any{"forbidden": 1}); !errors.Is(err, errcode.ErrBadRequest) {
				t.Fatalf("forbidden: %v", err)
			}
			must(t, h.PatchReported("g1", map[string]any{"fw": "1.2"}))
			tw := h.Twin("g1")
			if tw.Desired["a"] != 1.0 || tw.Desired["forbidden"] != nil || tw.Reported["fw"] != "1.2" {
				t.Fatalf("twin %+v", tw)
			}
			if ev := h.Events("g1"); len(ev) != 2 || ev[0].Type != "twin" || ev[0].Section != "desired" {
				t.Fatalf("events %+v", ev)
			}
		}},
		{"a durable timer fires when the clock reaches it", func(t *testing.T, h *plugintest.Harness) {
			must(t, errFirst(h.Call("g1", "arm", map[string]any{"after": "10s"})))
			if tm := h.Timers("g1"); len(tm) != 1 || tm[0].Name != "tick" || !tm[0].Due.Equal(plugintest.Epoch.Add(10*time.Second)) {
				t.Fatalf("timers %+v", tm)
			}
			h.Advance(9 * time.Second)
			if st := state(t, h, "g1"); st.Ticks != 0 {
				t.Fatalf("early tick: %+v", st)
			}
			h.Advance(time.Second)
			if st := state(t, h, "g1"); st.Ticks != 1 || h.Twin("g1").Desired["ticks"] != 1.0 {
				t.Fatalf("after due: %+v", st)
			}
			if tm := h.Timers("g1"); len(tm) != 0 {
				t.Fatalf("a fired one-shot timer is still pending: %+v", tm)
			}
		}},
		{"a periodic timer fires once per period", func(t *testing.T, h *plugintest.Harness) {
			must(t, errFirst(h.Call("g1", "arm", map[string]any{"after": "10s", "periodic": true})))
			h.Advance(35 * time.Second)
			if st := state(t, h, "g1"); st.Ticks != 3 {
				t.Fatalf("ticks %d after 35s of a 10s period", st.Ticks)
			}
			if tm := h.Timers("g1"); len(tm) != 1 || !tm[0].Due.Equal(plugintest.Epoch.Add(40*time.Second)) {
				t.Fatalf("timers %+v", tm)
			}
		}},
		{"timers and state survive a crash", func(t *testing.T, h *plugintest.Harness) {
			must(t, errFirst(h.Call("g1", "add", map[string]int{"n": 7})))
			must(t, errFirst(h.Call("g1", "arm", map[string]any{"after": "1m"})))
			must(t, h.Telemetry("g1", map[string]any{"x": 1}))
			h.Restart()
			h.Advance(time.Minute)
			st := state(t, h, "g1")
			if st.Ticks != 1 || st.Sum != 7 {
				t.Fatalf("after restart: %+v", st)
			}
			if h.Twin("g1").Telemetry["x"].Value != 1.0 {
				t.Fatal("acknowledged telemetry lost in the crash")
			}
		}},
		{"activation hook runs at creation and at each activation", func(t *testing.T, h *plugintest.Harness) {
			if st := state(t, h, "g1"); st.Active != 1 {
				t.Fatalf("after create: %+v", st)
			}
			h.Passivate("g1")
			h.Twin("g1")
			if st := state(t, h, "g1"); st.Active != 2 {
				t.Fatalf("after reactivation: %+v", st)
			}
		}},
		{"messages go between entities", func(t *testing.T, h *plugintest.Harness) {
			must(t, errFirst(h.Call("g1", "ping", nil)))
			if h.Twin("h1").Desired["last"] != "g1" {
				t.Fatalf("hub desired %v", h.Twin("h1").Desired)
			}
			if st := state(t, h, "g1"); st.Pongs != 1 {
				t.Fatalf("pongs %d", st.Pongs)
			}
			m := h.Messages()
			if len(m) != 2 || m[0].Name != "ping" || m[0].To != "h1" || m[1].Name != "pong" || !m[1].Delivered {
				t.Fatalf("messages %+v", m)
			}
		}},
		{"a message to a missing entity is dropped", func(t *testing.T, h *plugintest.Harness) {
			h.Send("g1", "ghost", "ping", nil)
			if m := h.Messages(); len(m) != 1 || m[0].Delivered {
				t.Fatalf("messages %+v", m)
			}
		}},
		{"rollups follow telemetry", func(t *testing.T, h *plugintest.Harness) {
			h.Create("g2", "gadget", "h1")
			must(t, h.Telemetry("g1", map[string]any{"x": 1}))
			must(t, h.Telemetry("g2", map[string]any{"x": 3}))
			h.Advance(time.Second)
			r := h.Twin("h1").Rollup
			x, _ := r["x"].(map[string]any)
			if r["devices"] != 2.0 || x["avg"] != 2.0 {
				t.Fatalf("rollup %v", r)
			}
		}},
		{"delete refuses a parent, then removes the entity", func(t *testing.T, h *plugintest.Harness) {
			if err := h.Delete("h1"); !errors.Is(err, errcode.ErrConflict) {
				t.Fatalf("delete parent: %v", err)
			}
			must(t, errFirst(h.Call("g1", "arm", map[string]any{"after": "1s"})))
			must(t, h.Delete("g1"))
			if _, err := h.Call("g1", "add", nil); !errors.Is(err, errcode.ErrNotFound) {
				t.Fatalf("call after delete: %v", err)
			}
			if len(h.Timers("g1")) != 0 || h.State("g1") != nil {
				t.Fatalf("timers %v, state %s left", h.Timers("g1"), h.State("g1"))
			}
			must(t, h.Delete("h1"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, setup(t)) })
	}
}

func errFirst(_ json.RawMessage, err error) error { return err }
