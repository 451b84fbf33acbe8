package rules

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// contractExample is the rule of CONTRACT section 5.
const contractExample = `{ "id": "hot-rooms", "scope": {"under": "building-1", "kind": "device"},
  "when": "telemetry.temperature > 28", "for": "30s",
  "window": {"point": "temperature", "size": "5m", "agg": "avg"},
  "anomaly": {"point": "temperature", "mode": "spikesanddips", "confidence": 0.95, "history": 120},
  "then": [{"alert": {"severity": "major", "message": "too hot"}},
           {"command": {"target": "parent", "method": "cool", "payload": {}}},
           {"desired": {"target": "self", "patch": {"fan": "on"}}}] }`

func TestParseContractExample(t *testing.T) {
	r := mustParse(t, contractExample)
	if r.ID != "hot-rooms" || time.Duration(r.For) != 30*time.Second || r.Window.Size != Duration(5*time.Minute) ||
		r.Anomaly.History != 120 || len(r.Then) != 3 || !r.Compiled() {
		t.Fatalf("parsed %+v", r)
	}
	if len(r.c.effects) != 2 || r.c.alert.Severity != "major" || r.c.rateLimit != DefaultRateLimit {
		t.Errorf("compiled %+v", r.c)
	}
	// The rule marshals back as written and parses again.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"for":"30s"`) || !strings.Contains(string(b), `"size":"5m0s"`) || strings.Contains(string(b), "rateLimit") {
		t.Errorf("marshal: %s", b)
	}
	if _, err := Parse(b); err != nil {
		t.Errorf("re-parse: %v", err)
	}
}

func TestParseDefaults(t *testing.T) {
	r := mustParse(t, `{"id":"a","anomaly":{"point":"t"},"then":[{"alert":{"severity":"info"}}]}`)
	c := r.c
	if c.anomMode != ModeSpikesAndDips || c.confidence != DefaultConfidence || c.history != DefaultHistory || c.when.source != "anomaly.isAnomaly" {
		t.Errorf("defaults: mode %q conf %v history %d when %q", c.anomMode, c.confidence, c.history, c.when.source)
	}
	if c.alert.Message != "a" {
		t.Errorf("alert message defaults to %q, want the rule ID", c.alert.Message)
	}
	pct := mustParse(t, `{"id":"a","anomaly":{"point":"t","confidence":99},"then":[{"alert":{"severity":"info"}}]}`)
	if pct.c.confidence != 0.99 {
		t.Errorf("confidence 99 read as %v", pct.c.confidence)
	}
	if z := zThreshold(0.99, 120); z < 3.9 || z > 4.0 {
		t.Errorf("z(0.99, 120) = %v", z)
	}
}

func TestParseInvalid(t *testing.T) {
	const then = `"then":[{"alert":{"severity":"major"}}]`
	tests := []struct {
		name string
		doc  string
		want string // substring of the error
		pos  [2]int // CompileError line, column; zero if not a compile error
	}{
		{"not json", `{"id":`, "decode", [2]int{}},
		{"not an object", `[1,2]`, "decode", [2]int{}},
		{"unknown field", `{"id":"a","wehn":"true",` + then + `}`, `unknown field "wehn"`, [2]int{}},
		{"trailing data", `{"id":"a","when":"true",` + then + `} {}`, "trailing data", [2]int{}},
		{"missing id", `{"when":"true",` + then + `}`, "id", [2]int{}},
		{"bad id", `{"id":"a/b","when":"true",` + then + `}`, "id", [2]int{}},
		{"missing when", `{"id":"a",` + then + `}`, "when: required", [2]int{}},
		{"missing then", `{"id":"a","when":"true"}`, "then: at least one action", [2]int{}},
		{"empty then", `{"id":"a","when":"true","then":[]}`, "then: at least one action", [2]int{}},
		{"reserved message property", `{"id":"a","when":"true","then":[{"message":{"target":"self","payload":1,"properties":{"$.mid":"x"}}}]}`, `"$.mid" is reserved`, [2]int{}},
		{"syntax error", `{"id":"a","when":"telemetry.t >",` + then + `}`, "unexpected token EOF", [2]int{1, 13}},
		{"syntax error on line 2", `{"id":"a","when":"telemetry.t > 1 &&\n  telemetry.u ** ",` + then + `}`, "unexpected token", [2]int{2, 17}},
		{"unknown name", `{"id":"a","when":"telemetri.t > 1",` + then + `}`, "unknown name telemetri", [2]int{1, 1}},
		{"non-bool", `{"id":"a","when":"1 + 2",` + then + `}`, "expected bool", [2]int{1, 1}},
		{"non-bool string", `{"id":"a","when":"'yes'",` + then + `}`, "expected bool", [2]int{1, 1}},
		{"bad clear", `{"id":"a","when":"true","clear":"(",` + then + `}`, "clear: line 1", [2]int{1, 1}},
		{"window without window", `{"id":"a","when":"telemetry.t > 1 && window > 3",` + then + `}`, "window is available only", [2]int{1, 20}},
		{"anomaly without anomaly", `{"id":"a","when":"anomaly.isAnomaly",` + then + `}`, "anomaly is available only", [2]int{1, 1}},
		{"unknown anomaly field", `{"id":"a","when":"anomaly.bogus","anomaly":{"point":"t"},` + then + `}`, "bogus", [2]int{1, 9}},
		{"too long", `{"id":"a","when":"` + strings.Repeat("1 < 2 && ", 500) + `true",` + then + `}`, "more than", [2]int{1, 1}},
		{"bad for", `{"id":"a","when":"true","for":"soon",` + then + `}`, `bad duration "soon"`, [2]int{}},
		{"numeric for", `{"id":"a","when":"true","for":30,` + then + `}`, "duration must be a string", [2]int{}},
		{"negative for", `{"id":"a","when":"true","for":"-5s",` + then + `}`, "for: negative", [2]int{}},
		{"negative rate limit", `{"id":"a","when":"true","rateLimit":"-1s",` + then + `}`, "rateLimit: negative", [2]int{}},
		{"window without size", `{"id":"a","when":"window > 1","window":{"point":"t","agg":"avg"},` + then + `}`, "window.size", [2]int{}},
		{"window slide > size", `{"id":"a","when":"window > 1","window":{"point":"t","size":"1m","slide":"2m","agg":"avg"},` + then + `}`, "window.slide", [2]int{}},
		{"window without point", `{"id":"a","when":"window > 1","window":{"size":"1m","agg":"avg"},` + then + `}`, "window.point", [2]int{}},
		{"unknown agg", `{"id":"a","when":"window > 1","window":{"point":"t","size":"1m","agg":"median"},` + then + `}`, `unknown aggregation "median"`, [2]int{}},
		{"unknown mode", `{"id":"a","anomaly":{"point":"t","mode":"bumps"},` + then + `}`, `unknown mode "bumps"`, [2]int{}},
		{"confidence 1", `{"id":"a","anomaly":{"point":"t","confidence":1},` + then + `}`, "confidence", [2]int{}},
		{"confidence negative", `{"id":"a","anomaly":{"point":"t","confidence":-0.5},` + then + `}`, "confidence", [2]int{}},
		{"history too short", `{"id":"a","anomaly":{"point":"t","history":5},` + then + `}`, "history", [2]int{}},
		{"anomaly without point", `{"id":"a","anomaly":{"mode":"spikes"},` + then + `}`, "anomaly.point", [2]int{}},
		{"empty action", `{"id":"a","when":"true","then":[{}]}`, "exactly one", [2]int{}},
		{"two kinds in one action", `{"id":"a","when":"true","then":[{"alert":{"severity":"info"},"command":{"target":"self","method":"m"}}]}`, "exactly one", [2]int{}},
		{"two alerts", `{"id":"a","when":"true","then":[{"alert":{"severity":"info"}},{"alert":{"severity":"major"}}]}`, "at most one alert", [2]int{}},
		{"bad severity", `{"id":"a","when":"true","then":[{"alert":{"severity":"fatal"}}]}`, `unknown severity "fatal"`, [2]int{}},
		{"command without method", `{"id":"a","when":"true","then":[{"command":{"target":"self"}}]}`, "command.method", [2]int{}},
		{"command bad timeout", `{"id":"a","when":"true","then":[{"command":{"target":"self","method":"m","timeoutSeconds":-1}}]}`, "timeoutSeconds", [2]int{}},
		{"bad target", `{"id":"a","when":"true","then":[{"command":{"target":"child:","method":"m"}}]}`, "target", [2]int{}},
		{"empty target", `{"id":"a","when":"true","then":[{"message":{"payload":"x"}}]}`, "target", [2]int{}},
		{"desired patch not object", `{"id":"a","when":"true","then":[{"desired":{"target":"self","patch":[1]}}]}`, "desired.patch", [2]int{}},
		{"desired patch empty", `{"id":"a","when":"true","then":[{"desired":{"target":"self","patch":{}}}]}`, "desired.patch", [2]int{}},
		{"unknown action field", `{"id":"a","when":"true","then":[{"alert":{"severity":"info","colour":"red"}}]}`, "colour", [2]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse accepted %s: %+v", tt.doc, r)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			var ce *CompileError
			isCE := errors.As(err, &ce)
			switch {
			case tt.pos == [2]int{} && isCE:
				t.Errorf("unexpected CompileError %+v", ce)
			case tt.pos != [2]int{} && !isCE:
				t.Errorf("error %v is not a CompileError", err)
			case isCE && (ce.Line != tt.pos[0] || ce.Column != tt.pos[1]):
				t.Errorf("position %d:%d, want %d:%d (%v)", ce.Line, ce.Column, tt.pos[0], tt.pos[1], ce)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	doc := `{"id":"a","when":"true","then":[{"alert":{"severity":"info","message":"` + strings.Repeat("x", MaxRuleBytes) + `"}}]}`
	if _, err := Parse([]byte(doc)); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized document: %v", err)
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want Target
		ok   bool
	}{
		{"self", Target{Kind: TargetSelf}, true},
		{"parent", Target{Kind: TargetParent}, true},
		{"child:dev-1", Target{Kind: TargetChild, ID: "dev-1"}, true},
		{"room-12", Target{Kind: TargetEntity, ID: "room-12"}, true},
		{"child:", Target{}, false},
		{"", Target{}, false},
		{"two words", Target{}, false},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseTarget(%q) = %+v, %v", tt.in, got, err)
		}
	}
	if TargetChild.String() != "child" {
		t.Error(TargetChild.String())
	}
}

func TestMatches(t *testing.T) {
	dev := EntityInfo{ID: "dev-1", Kind: "device", Ancestors: []string{"room-1", "floor-1", "building-1"},
		Tags: map[string]any{"zone": "north", "floor": 3.0, "critical": true}}
	tests := []struct {
		name  string
		scope Scope
		want  bool
	}{
		{"empty scope", Scope{}, true},
		{"under ancestor", Scope{Under: "building-1"}, true},
		{"under itself", Scope{Under: "dev-1"}, true},
		{"under other", Scope{Under: "building-2"}, false},
		{"kind", Scope{Kind: "device"}, true},
		{"other kind", Scope{Kind: "room"}, false},
		{"under and kind", Scope{Under: "floor-1", Kind: "device"}, true},
		{"entity", Scope{Entity: "dev-1"}, true},
		{"other entity", Scope{Entity: "dev-2"}, false},
		{"string tag", Scope{Tags: map[string]string{"zone": "north"}}, true},
		{"string tag differs", Scope{Tags: map[string]string{"zone": "south"}}, false},
		{"number tag", Scope{Tags: map[string]string{"floor": "3"}}, true},
		{"bool tag", Scope{Tags: map[string]string{"critical": "true"}}, true},
		{"wildcard tag", Scope{Tags: map[string]string{"zone": "*"}}, true},
		{"wildcard absent tag", Scope{Tags: map[string]string{"owner": "*"}}, false},
		{"all tags must match", Scope{Tags: map[string]string{"zone": "north", "floor": "4"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Rule{ID: "r", Scope: tt.scope}
			if got := r.Matches(dev); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	for in, want := range map[string]time.Duration{`"1m30s"`: 90 * time.Second, `""`: 0, `null`: 0, `"250ms"`: 250 * time.Millisecond} {
		d = 7
		if err := json.Unmarshal([]byte(in), &d); err != nil || (in != "null" && time.Duration(d) != want) {
			t.Errorf("unmarshal %s = %v, %v", in, time.Duration(d), err)
		}
	}
	if b, _ := json.Marshal(Duration(90 * time.Second)); string(b) != `"1m30s"` {
		t.Errorf("marshal = %s", b)
	}
	if err := json.Unmarshal([]byte(`5`), &d); err == nil {
		t.Error("number accepted")
	}
}
