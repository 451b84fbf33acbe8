package actors_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/rules"
)

func temp(t *testing.T, s *actors.System, id string, v float64) {
	t.Helper()
	if err := s.Telemetry(ctx(t), id, actors.TelemetryIn{Points: map[string]any{"temperature": v}}); err != nil {
		t.Fatal(err)
	}
}

func alertState(t *testing.T, s *actors.System, id string) string {
	t.Helper()
	a, err := s.Alert(ctx(t), id)
	if errors.Is(err, actors.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return a.State
}

func TestRulesRaiseAckClearAndAct(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	e := start(t, path, options{})
	s := e.sys
	put(t, s, "b1", "building", "")
	put(t, s, "r1", "room", "b1")
	put(t, s, "d1", "device", "r1")
	put(t, s, "d9", "device", "") // out of scope
	rule := `{"scope":{"under":"b1","kind":"device"},
	  "when":"telemetry.temperature > 28","clear":"telemetry.temperature < 26",
	  "then":[{"alert":{"severity":"major","message":"too hot"}},
	          {"desired":{"target":"parent","patch":{"cooling":"on"}}}]}`
	if _, created, err := s.PutRule(ctx(t), "hot", []byte(rule)); err != nil || !created {
		t.Fatalf("put rule: %v", err)
	}
	id := rules.AlertID("hot", "d1")

	temp(t, s, "d9", 35)
	temp(t, s, "d1", 25)
	if st := alertState(t, s, id); st != "" {
		t.Fatalf("alert %q before the condition held", st)
	}
	temp(t, s, "d1", 30)
	if st := alertState(t, s, id); st != "active" {
		t.Fatalf("alert state %q, want active", st)
	}
	if st := alertState(t, s, rules.AlertID("hot", "d9")); st != "" {
		t.Fatal("rule fired out of its scope")
	}
	var tw struct {
		Alerts []struct{ ID, State, Severity string }
	}
	doc, _, _ := s.GetTwin(ctx(t), "d1")
	_ = json.Unmarshal(doc, &tw)
	if len(tw.Alerts) != 1 || tw.Alerts[0].ID != id || tw.Alerts[0].Severity != "major" {
		t.Fatalf("twin alerts %+v", tw.Alerts)
	}
	// The desired action reached the parent.
	deadline := time.Now().Add(5 * time.Second)
	for get(t, s, "r1").Desired["cooling"] != "on" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if get(t, s, "r1").Desired["cooling"] != "on" {
		t.Fatal("desired action did not reach the parent")
	}
	if a, err := s.AckAlert(ctx(t), id); err != nil || a.State != "acknowledged" {
		t.Fatalf("ack: %+v %v", a, err)
	}
	if _, err := s.AckAlert(ctx(t), id); !errors.Is(err, actors.ErrConflict) {
		t.Fatalf("second ack: %v", err)
	}
	temp(t, s, "d1", 27) // hysteresis: still open
	if st := alertState(t, s, id); st != "acknowledged" {
		t.Fatalf("alert %q inside the hysteresis band", st)
	}
	temp(t, s, "d1", 24)
	if st := alertState(t, s, id); st != "cleared" {
		t.Fatalf("alert %q after the clear condition", st)
	}
	active, _ := s.Alerts(ctx(t), actors.AlertFilter{State: "active", Under: "b1"})
	if len(active) != 0 {
		t.Fatalf("active alerts %+v", active)
	}
	temp(t, s, "d1", 31) // raised again
	all, _ := s.Alerts(ctx(t), actors.AlertFilter{Under: "r1"})
	if len(all) != 1 || all[0].Count != 2 || all[0].State != "active" {
		t.Fatalf("re-raised alert %+v", all)
	}
	if len(e.events.of("d1", actors.EventRule)) < 3 || len(e.events.of("d1", actors.EventAlert)) < 4 {
		t.Fatal("rule and alert events missing")
	}

	// Alerts survive a restart.
	e.stop()
	e2 := start(t, path, options{})
	if st := alertState(t, e2.sys, id); st != "active" {
		t.Fatalf("after restart alert is %q", st)
	}
	// Deleting the rule clears its open alerts.
	if err := e2.sys.DeleteRule(ctx(t), "hot"); err != nil {
		t.Fatal(err)
	}
	if st := alertState(t, e2.sys, id); st != "cleared" {
		t.Fatalf("after rule delete alert is %q", st)
	}
	if _, err := e2.sys.GetRule(ctx(t), "hot"); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("deleted rule: %v", err)
	}
}

func TestRuleForUsesTheClockAndInvalidRulesAreRefused(t *testing.T) {
	e := start(t, filepath.Join(t.TempDir(), "db"), options{})
	s := e.sys
	put(t, s, "d1", "device", "")
	if _, _, err := s.PutRule(ctx(t), "sustained", []byte(`{"scope":{"entity":"d1"},"when":"telemetry.temperature > 28","for":"30s","then":[{"alert":{"severity":"minor"}}]}`)); err != nil {
		t.Fatal(err)
	}
	id := rules.AlertID("sustained", "d1")
	temp(t, s, "d1", 30)
	e.clock.Add(10 * time.Second)
	temp(t, s, "d1", 30.5)
	if st := alertState(t, s, id); st != "" {
		t.Fatalf("raised after 10s of a 30s for: %q", st)
	}
	e.clock.Add(25 * time.Second)
	temp(t, s, "d1", 31)
	if st := alertState(t, s, id); st != "active" {
		t.Fatalf("not raised after 35s: %q", st)
	}
	cases := map[string]string{
		"bad expression": `{"when":"telemetry.temperature >","then":[{"alert":{"severity":"major"}}]}`,
		"not boolean":    `{"when":"1 + 2","then":[{"alert":{"severity":"major"}}]}`,
		"bad duration":   `{"when":"true","for":"soon","then":[{"alert":{"severity":"major"}}]}`,
		"id mismatch":    `{"id":"other","when":"true","then":[{"alert":{"severity":"major"}}]}`,
		"not json":       `{"when":`,
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := s.PutRule(ctx(t), "bad", []byte(doc))
			if !errors.Is(err, actors.ErrBadRequest) {
				t.Fatalf("err = %v", err)
			}
			if name == "bad expression" && !strings.Contains(err.Error(), "column") {
				t.Fatalf("no position in %v", err)
			}
		})
	}
	list, _ := s.Rules(ctx(t))
	if len(list) != 1 {
		t.Fatalf("%d rules stored", len(list))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func point(v twinView, name string) map[string]any {
	m, _ := v.Rollup[name].(map[string]any)
	return m
}

func TestPointRollupsAlertsAndRoomRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	e := start(t, path, options{})
	s := e.sys
	put(t, s, "b1", "building", "")
	put(t, s, "f1", "floor", "b1")
	put(t, s, "r1", "room", "f1")
	put(t, s, "r2", "room", "f1")
	put(t, s, "d1", "device", "r1")
	put(t, s, "d2", "device", "r1")
	put(t, s, "d3", "device", "r2")
	if _, _, err := s.PutRule(ctx(t), "warm-room", []byte(`{"scope":{"kind":"room"},"when":"rollup.temperature.avg > 26",
	  "then":[{"alert":{"severity":"warning","message":"room warm on average"}}]}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutRule(ctx(t), "hot-device", []byte(`{"scope":{"kind":"device"},"when":"telemetry.temperature > 30",
	  "then":[{"alert":{"severity":"critical","message":"hot"}}]}`)); err != nil {
		t.Fatal(err)
	}
	temp(t, s, "d1", 20)
	temp(t, s, "d2", 24)
	temp(t, s, "d3", 31)
	waitFor(t, "building temperature rollup", func() bool {
		p := point(get(t, s, "b1"), "temperature")
		return p["count"] == 3.0 && p["min"] == 20.0 && p["max"] == 31.0 && p["avg"] == 25.0
	})
	if p := point(get(t, s, "r1"), "temperature"); p["avg"] != 22.0 || p["count"] != 2.0 {
		t.Fatalf("room rollup %v", p)
	}
	// d3's critical alert and r2's warm-room alert (avg 31) roll up with
	// the worst severity.
	waitFor(t, "alert rollup", func() bool {
		r := get(t, s, "b1").Rollup
		return r["alerts"] == 2.0 && r["worstSeverity"] == "critical"
	})
	// The room rule sees rollup.temperature.avg.
	temp(t, s, "d2", 34) // r1 avg (20+34)/2 = 27 → warm-room on r1, hot-device on d2
	waitFor(t, "room rule on its rollup", func() bool { return alertState(t, s, rules.AlertID("warm-room", "r1")) == "active" })
	// hot-device on d2 and d3, warm-room on r1 (avg 27) and r2 (avg 31).
	waitFor(t, "building alert count", func() bool {
		r := get(t, s, "b1").Rollup
		return r["alerts"] == 4.0 && r["worstSeverity"] == "critical"
	})
	want := get(t, s, "b1").Rollup
	// A restart finds the same rollups (contributions are stored with each change).
	e.stop()
	e2 := start(t, path, options{})
	if _, err := e2.sys.Touch(ctx(t)); err != nil {
		t.Fatal(err)
	}
	got := get(t, e2.sys, "b1").Rollup
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if string(wb) != string(gb) {
		t.Fatalf("rollup after restart\n%s\nwant\n%s", gb, wb)
	}
	// Moving a device moves its values.
	put(t, e2.sys, "d2", "device", "r2")
	waitFor(t, "rollups after a move", func() bool {
		return point(get(t, e2.sys, "r1"), "temperature")["count"] == 1.0 && point(get(t, e2.sys, "r2"), "temperature")["max"] == 34.0
	})
}
