package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"
)

// Limits on a rule document, enforced by [Parse] and [Rule.Compile].
const (
	// MaxRuleBytes is the largest rule document Parse accepts.
	MaxRuleBytes = 64 << 10
	// MaxExprLen is the longest "when" or "clear" expression, in bytes.
	MaxExprLen = 4096
	// MaxIDLen is the longest rule ID.
	MaxIDLen = 128
	// MaxWindowSamples bounds the sample buffer of a sliding window. When a
	// window of Size holds more samples than this, the oldest are dropped
	// and the aggregate covers only the newest MaxWindowSamples. Tumbling
	// windows keep running aggregates and hold no samples.
	MaxWindowSamples = 10000
	// MinAnomalyHistory is the number of samples the anomaly detector must
	// have seen before it can flag anything; it is also the smallest
	// accepted Anomaly.History.
	MinAnomalyHistory = 10
	// MaxAnomalyHistory is the largest accepted Anomaly.History.
	MaxAnomalyHistory = 10000
	// DefaultRateLimit is the minimum interval between two runs of a rule's
	// actions for one entity when Rule.RateLimit is zero.
	DefaultRateLimit = time.Second
	// DefaultConfidence is Anomaly.Confidence when zero.
	DefaultConfidence = 0.95
	// DefaultHistory is Anomaly.History when zero.
	DefaultHistory = 120
)

// Aggregations accepted in Window.Agg.
const (
	AggAvg   = "avg"
	AggMin   = "min"
	AggMax   = "max"
	AggSum   = "sum"
	AggCount = "count"
)

// Modes accepted in Anomaly.Mode.
const (
	ModeSpikes        = "spikes"
	ModeDips          = "dips"
	ModeSpikesAndDips = "spikesanddips"
)

// Rule is one rule as stored and served by the API (CONTRACT section 5). A
// Rule is inert until [Parse] or [Rule.Compile] has validated and compiled
// it; after that it is immutable and safe for concurrent use by any number
// of grains, each with its own [State].
type Rule struct {
	// ID names the rule: 1 to MaxIDLen characters from [A-Za-z0-9._:-]. The
	// alert a rule raises on an entity has ID "<rule ID>/<entity ID>".
	ID string `json:"id"`
	// Scope selects the entities the rule applies to; see [Rule.Matches].
	Scope Scope `json:"scope"`
	// When is the condition, an expr-lang/expr boolean expression over the
	// twin (see the package documentation for the environment). It may be
	// empty only when Anomaly is set; it then defaults to
	// "anomaly.isAnomaly".
	When string `json:"when,omitempty"`
	// Clear, when set, gives the rule hysteresis: once raised, the rule
	// stays active until Clear holds, however When evolves. Without Clear
	// the rule clears as soon as When stops holding.
	Clear string `json:"clear,omitempty"`
	// For is how long When must hold, without interruption, before the rule
	// is raised. Zero raises on the first evaluation that holds.
	For Duration `json:"for,omitempty"`
	// Window, when set, aggregates a telemetry point over time; the
	// condition sees the aggregate as "window" and is evaluated only when
	// the window produces a value.
	Window *Window `json:"window,omitempty"`
	// Anomaly, when set, runs spike-and-dip detection on a telemetry point;
	// the condition sees the result as "anomaly".
	Anomaly *Anomaly `json:"anomaly,omitempty"`
	// Then lists the actions run when the rule is raised. At least one is
	// required, and at most one of them may be an alert.
	Then []Action `json:"then"`
	// RateLimit is the minimum interval between two runs of the non-alert
	// actions for one entity (DefaultRateLimit when zero). A raise that
	// comes sooner still raises the alert but its actions are dropped.
	RateLimit Duration `json:"rateLimit,omitempty"`
	// Disabled rules evaluate nothing; an entity on which the rule is
	// active is cleared at its next Step or Tick.
	Disabled bool `json:"disabled,omitempty"`

	c *compiled // set by Compile
}

// Scope selects entities. Every non-empty field must match; an empty Scope
// matches every entity.
type Scope struct {
	// Under matches the entity with this ID and every entity beneath it
	// (whose Ancestors contain it).
	Under string `json:"under,omitempty"`
	// Kind matches entities of this kind ("device", "room", ...).
	Kind string `json:"kind,omitempty"`
	// Tags must all be present on the entity with these values. A value is
	// compared with the tag's JSON scalar text (3 matches "3", true matches
	// "true"); the value "*" matches any value of a present tag.
	Tags map[string]string `json:"tags,omitempty"`
	// Entity matches exactly one entity ID.
	Entity string `json:"entity,omitempty"`
}

// Window aggregates the numeric samples of one telemetry point.
type Window struct {
	// Point is the telemetry point aggregated. Numbers count as themselves,
	// booleans as 0 and 1; other values are ignored (except by count,
	// which counts every non-null sample).
	Point string `json:"point"`
	// Size is the length of the window; it must be positive.
	Size Duration `json:"size"`
	// Slide selects the kind of window. 0 or Size: tumbling — windows
	// [k·Size, (k+1)·Size) aligned like time.Time.Truncate, evaluated once
	// when each closes. Between 0 and Size: sliding — evaluated at every
	// sample over the samples in (now-Size, now]; the value is otherwise
	// unused (reserved for hopping windows). More than Size is invalid.
	Slide Duration `json:"slide,omitempty"`
	// Agg is one of avg, min, max, sum and count.
	Agg string `json:"agg"`
}

// Anomaly configures spike-and-dip detection on one telemetry point, after
// Azure Stream Analytics' AnomalyDetection_SpikeAndDip. The method is
// described in the package documentation.
type Anomaly struct {
	// Point is the telemetry point watched.
	Point string `json:"point"`
	// Mode is spikes, dips or spikesanddips (the default).
	Mode string `json:"mode,omitempty"`
	// Confidence in (0, 1), DefaultConfidence when zero. A value in
	// (1, 100) is read as a percentage, as Stream Analytics writes it (95).
	Confidence float64 `json:"confidence,omitempty"`
	// History is the number of past samples the detector compares a new
	// sample with, MinAnomalyHistory to MaxAnomalyHistory; DefaultHistory
	// when zero.
	History int `json:"history,omitempty"`
}

// Duration is a time.Duration written in JSON as a Go duration string
// ("30s", "5m", "1h30m").
type Duration time.Duration

// String returns the duration as time.Duration formats it.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string such as "30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string; "" and null mean zero. Numbers are
// refused, since their unit would be ambiguous.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\", got %s", truncate(string(b), 32))
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: %v", truncate(s, 32), err)
	}
	*d = Duration(v)
	return nil
}

// EntityInfo is what scope matching needs to know about an entity.
type EntityInfo struct {
	ID   string
	Kind string
	// Ancestors are the IDs of the entities above this one along
	// "contains", in any order.
	Ancestors []string
	// Tags are the twin's tags.
	Tags map[string]any
}

// Parse decodes a rule document strictly (unknown fields and trailing data
// are refused), then validates and compiles it with [Rule.Compile]. Every
// error wraps [ErrInvalid]; an expression that does not compile is reported
// as a *[CompileError] carrying the compiler's message and position.
func Parse(doc []byte) (*Rule, error) {
	if len(doc) > MaxRuleBytes {
		return nil, invalidf("rule document is %d bytes, more than %d", len(doc), MaxRuleBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	var r Rule
	if err := dec.Decode(&r); err != nil {
		return nil, invalidf("decode: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalidf("decode: trailing data after the rule object")
	}
	if err := r.Compile(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Compile validates the rule and compiles its expressions. Parse calls it;
// call it directly on a Rule built in Go. Defaults are applied to the
// compiled form only, so the Rule still marshals as it was written. Compile
// must not run concurrently with any other use of the rule.
func (r *Rule) Compile() error {
	r.c = nil
	c, err := r.compile()
	if err != nil {
		return err
	}
	r.c = c
	return nil
}

// Compiled reports whether the rule has been compiled successfully.
func (r *Rule) Compiled() bool { return r.c != nil }

func validID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch ch := id[i]; {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case ch == '.' || ch == '_' || ch == ':' || ch == '-':
		default:
			return false
		}
	}
	return true
}

// compiled is the validated, defaulted and compiled form of a Rule.
type compiled struct {
	when, clear *program
	forDur      time.Duration
	rateLimit   time.Duration

	win      *Window
	tumbling bool
	winSize  time.Duration

	anom       *Anomaly
	anomMode   string
	confidence float64
	threshold  float64 // robust z-score threshold
	history    int

	alert   *AlertAction // the alert action, if any
	effects []Action     // the other actions, in order
	points  []string     // telemetry points the condition names, in order of appearance

	fingerprint string // of the stateful parts (window, anomaly)
}

func (r *Rule) compile() (*compiled, error) {
	if !validID(r.ID) {
		return nil, invalidf("id %q: want 1 to %d characters from [A-Za-z0-9._:-]", truncate(r.ID, 40), MaxIDLen)
	}
	c := &compiled{forDur: time.Duration(r.For), rateLimit: time.Duration(r.RateLimit)}
	if c.forDur < 0 {
		return nil, invalidf("for: negative duration %s", r.For)
	}
	if c.rateLimit < 0 {
		return nil, invalidf("rateLimit: negative duration %s", r.RateLimit)
	}
	if c.rateLimit == 0 {
		c.rateLimit = DefaultRateLimit
	}
	if w := r.Window; w != nil {
		if w.Point == "" {
			return nil, invalidf("window.point: required")
		}
		if w.Size <= 0 {
			return nil, invalidf("window.size: must be positive, got %s", w.Size)
		}
		if w.Slide < 0 || w.Slide > w.Size {
			return nil, invalidf("window.slide: must be between 0 and size (%s), got %s", w.Size, w.Slide)
		}
		switch w.Agg {
		case AggAvg, AggMin, AggMax, AggSum, AggCount:
		default:
			return nil, invalidf("window.agg: unknown aggregation %q (want avg, min, max, sum or count)", truncate(w.Agg, 32))
		}
		cp := *w
		c.win = &cp
		c.winSize = time.Duration(w.Size)
		c.tumbling = w.Slide == 0 || w.Slide == w.Size
	}
	if a := r.Anomaly; a != nil {
		if a.Point == "" {
			return nil, invalidf("anomaly.point: required")
		}
		switch a.Mode {
		case "":
			c.anomMode = ModeSpikesAndDips
		case ModeSpikes, ModeDips, ModeSpikesAndDips:
			c.anomMode = a.Mode
		default:
			return nil, invalidf("anomaly.mode: unknown mode %q (want spikes, dips or spikesanddips)", truncate(a.Mode, 32))
		}
		conf := a.Confidence
		switch {
		case conf == 0:
			conf = DefaultConfidence
		case conf > 1 && conf < 100:
			conf /= 100
		}
		if !(conf > 0 && conf < 1) || math.IsNaN(conf) {
			return nil, invalidf("anomaly.confidence: must be in (0, 1), got %v", a.Confidence)
		}
		c.confidence = conf
		c.history = a.History
		if c.history == 0 {
			c.history = DefaultHistory
		}
		if c.history < MinAnomalyHistory || c.history > MaxAnomalyHistory {
			return nil, invalidf("anomaly.history: must be between %d and %d, got %d", MinAnomalyHistory, MaxAnomalyHistory, a.History)
		}
		c.threshold = zThreshold(conf, c.history)
		cp := *a
		c.anom = &cp
	}
	if len(r.Then) == 0 {
		return nil, invalidf("then: at least one action is required")
	}
	for i := range r.Then {
		a := &r.Then[i]
		if err := a.validate(); err != nil {
			return nil, fmt.Errorf("%w: then[%d]: %v", ErrInvalid, i, err)
		}
		if a.Alert != nil {
			if c.alert != nil {
				return nil, invalidf("then[%d]: a rule has at most one alert action", i)
			}
			al := *a.Alert
			if al.Message == "" {
				al.Message = r.ID
			}
			c.alert = &al
			continue
		}
		c.effects = append(c.effects, *a)
	}

	when := r.When
	if strings.TrimSpace(when) == "" {
		if r.Anomaly == nil {
			return nil, invalidf("when: required (it may be omitted only with anomaly)")
		}
		when = "anomaly.isAnomaly"
	}
	vars := envVars{window: r.Window != nil, anomaly: r.Anomaly != nil}
	var err error
	if c.when, err = compileExpr("when", when, vars); err != nil {
		return nil, err
	}
	if r.Clear != "" {
		if c.clear, err = compileExpr("clear", r.Clear, vars); err != nil {
			return nil, err
		}
	}
	c.points = c.when.points
	c.fingerprint = fingerprint(c)
	return c, nil
}

// fingerprint identifies the configuration of a rule's stateful parts: a
// State built under another fingerprint has its window and anomaly
// buffers reset (its alert phase is kept).
func fingerprint(c *compiled) string {
	var b strings.Builder
	if w := c.win; w != nil {
		fmt.Fprintf(&b, "w:%s|%d|%d|%s;", w.Agg, int64(w.Size), int64(w.Slide), strconv.Quote(w.Point))
	}
	if a := c.anom; a != nil {
		fmt.Fprintf(&b, "a:%s|%s|%d;", c.anomMode, strconv.Quote(a.Point), c.history)
	}
	return b.String()
}

// Matches reports whether the entity is in the rule's scope. It looks at the
// scope only: a disabled rule still matches (so that Step can clear what it
// raised), and an uncompiled rule can be matched.
func (r *Rule) Matches(e EntityInfo) bool {
	s := &r.Scope
	if s.Entity != "" && e.ID != s.Entity {
		return false
	}
	if s.Kind != "" && e.Kind != s.Kind {
		return false
	}
	if s.Under != "" && e.ID != s.Under && !slices.Contains(e.Ancestors, s.Under) {
		return false
	}
	for k, want := range s.Tags {
		v, ok := e.Tags[k]
		if !ok || v == nil {
			return false
		}
		if want != "*" && !tagEquals(v, want) {
			return false
		}
	}
	return true
}

// tagEquals compares a tag value with the scope's text form of it.
func tagEquals(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case bool:
		return strconv.FormatBool(x) == want
	case float64:
		if f, err := strconv.ParseFloat(want, 64); err == nil {
			return f == x
		}
		return false
	case int:
		return strconv.Itoa(x) == want
	case int64:
		return strconv.FormatInt(x, 10) == want
	case json.Number:
		return x.String() == want
	default:
		return false
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// program is one compiled expression.
type program struct {
	field  string
	source string
	prog   *vm.Program
	points []string // telemetry points named as telemetry.<p> or telemetry["p"]
}
