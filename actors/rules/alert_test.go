package rules

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestAlertLifecycle(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type step struct {
		op      string // raise, ack, clear
		at      int
		sev     string
		changed bool // for raise and clear
		err     error
		state   string
		count   int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"raise, ack, clear", []step{
			{op: "raise", at: 0, sev: "major", changed: true, state: StateActive, count: 1},
			{op: "ack", at: 5, state: StateAcknowledged, count: 1},
			{op: "clear", at: 10, changed: true, state: StateCleared, count: 1},
		}},
		{"repeat raise while open keeps the state", []step{
			{op: "raise", at: 0, sev: "minor", changed: true, state: StateActive, count: 1},
			{op: "raise", at: 1, sev: "minor", changed: false, state: StateActive, count: 2},
			{op: "ack", at: 2, state: StateAcknowledged, count: 2},
			{op: "raise", at: 3, sev: "minor", changed: false, state: StateAcknowledged, count: 3},
			{op: "raise", at: 4, sev: "critical", changed: true, state: StateAcknowledged, count: 4},
		}},
		{"cleared alert raised again is active", []step{
			{op: "raise", at: 0, sev: "major", changed: true, state: StateActive, count: 1},
			{op: "clear", at: 1, changed: true, state: StateCleared, count: 1},
			{op: "clear", at: 2, changed: false, state: StateCleared, count: 1},
			{op: "raise", at: 3, sev: "major", changed: true, state: StateActive, count: 2},
		}},
		{"invalid acks", []step{
			{op: "ack", at: 0, err: ErrInvalidTransition, state: "", count: 0},
			{op: "clear", at: 0, changed: false, state: "", count: 0},
			{op: "raise", at: 1, sev: "info", changed: true, state: StateActive, count: 1},
			{op: "ack", at: 2, state: StateAcknowledged, count: 1},
			{op: "ack", at: 3, err: ErrInvalidTransition, state: StateAcknowledged, count: 1},
			{op: "clear", at: 4, changed: true, state: StateCleared, count: 1},
			{op: "ack", at: 5, err: ErrInvalidTransition, state: StateCleared, count: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAlert("hot", "dev-1")
			for i, st := range tt.steps {
				var changed bool
				var err error
				switch st.op {
				case "raise":
					changed = a.Raise(at(st.at), st.sev, "msg")
				case "ack":
					err = a.Ack(at(st.at))
				case "clear":
					changed = a.Clear(at(st.at))
				}
				if !errors.Is(err, st.err) || (st.err == nil && err != nil) {
					t.Errorf("step %d %s: err %v, want %v", i, st.op, err, st.err)
				}
				if st.op != "ack" && changed != st.changed {
					t.Errorf("step %d %s: changed %v, want %v", i, st.op, changed, st.changed)
				}
				if a.State != st.state || a.Count != st.count {
					t.Errorf("step %d %s: state %q count %d, want %q %d", i, st.op, a.State, a.Count, st.state, st.count)
				}
			}
		})
	}
}

func TestAlertTimes(t *testing.T) {
	a := NewAlert("hot", "dev-1")
	if a.ID != "hot/dev-1" || a.Open() {
		t.Fatalf("new alert %+v", a)
	}
	a.Raise(t0, SeverityMajor, "too hot")
	a.Ack(t0.Add(time.Minute))
	a.Clear(t0.Add(2 * time.Minute))
	if !a.AckedAt.Equal(t0.Add(time.Minute)) || !a.ClearedAt.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("acked %v cleared %v", a.AckedAt, a.ClearedAt)
	}
	a.Raise(t0.Add(3*time.Minute), SeverityCritical, "hotter")
	if !a.FirstSeen.Equal(t0) || !a.LastSeen.Equal(t0.Add(3*time.Minute)) || !a.AckedAt.IsZero() || !a.ClearedAt.IsZero() ||
		a.Severity != SeverityCritical || a.Message != "hotter" || !a.Open() {
		t.Errorf("re-raised %+v", a)
	}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back Alert
	if err := json.Unmarshal(b, &back); err != nil || back.ID != a.ID || back.Count != 2 || !back.FirstSeen.Equal(a.FirstSeen) {
		t.Errorf("round trip %s → %+v, %v", b, back, err)
	}
}

func TestSeverityRank(t *testing.T) {
	order := []string{SeverityInfo, SeverityWarning, SeverityMinor, SeverityMajor, SeverityCritical}
	for i, s := range order {
		if SeverityRank(s) != i+1 {
			t.Errorf("SeverityRank(%s) = %d", s, SeverityRank(s))
		}
	}
	if SeverityRank("fatal") != 0 || SeverityRank("") != 0 {
		t.Error("unknown severities rank above 0")
	}
}
