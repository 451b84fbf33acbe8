package jepsen

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// State is the register behind one twin: desired.v and the twin version
// (the ETag). Only this harness changes the twins it checks, so every
// accepted write raises the version by exactly one (actors/twin: the
// version rises by one on every accepted change of desired).
type State struct {
	Value   int64
	Version int64
}

func (s State) String() string { return fmt.Sprintf("v=%d @%d", s.Value, s.Version) }

// step is the sequential specification: a compare-and-set register whose
// CAS compares the version.
//
//   - A read must see exactly the state (value and version).
//   - A write that answered sets the value, and its answer shows the
//     value written at the next version. One whose outcome is unknown may
//     take effect: porcupine gives it an open end (it can be placed
//     anywhere after its call, including after every other operation,
//     which is how "it never happened" is expressed), and here it applies.
//   - A CAS that answered 2xx needs the expected version and moves to the
//     next; one that answered 412 needs a different version and changes
//     nothing; one whose outcome is unknown applies if the version matches
//     and changes nothing otherwise.
//
// Definitely failed operations (a read without an answer, a request that
// never left the client) are not in the history at all.
func step(s State, in Input, out Output) (bool, State) {
	switch in.Kind {
	case Read:
		return !out.Missing && out.Value == s.Value && out.Version == s.Version, s
	case Write:
		next := State{Value: in.Value, Version: s.Version + 1}
		if out.Status == Unknown {
			return true, next
		}
		return !out.Missing && out.Value == in.Value && out.Version == next.Version, next
	case CAS:
		next := State{Value: in.Value, Version: s.Version + 1}
		switch {
		case out.Status == Unknown:
			if s.Version == in.Expect {
				return true, next
			}
			return true, s
		case out.Precondition:
			return s.Version != in.Expect, s
		default:
			return s.Version == in.Expect && !out.Missing && out.Value == in.Value && out.Version == next.Version, next
		}
	}
	return false, s
}

// registerModel is the porcupine model of one twin starting at init.
func registerModel(init State) porcupine.Model {
	return porcupine.Model{
		Init: func() interface{} { return init },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			return step(state.(State), input.(Input), output.(Output))
		},
		Hash: func(state interface{}) uint64 {
			s := state.(State)
			return uint64(s.Value)*1_000_003 ^ uint64(s.Version)
		},
		DescribeOperation: func(input, output interface{}) string {
			in, out := input.(Input), output.(Output)
			return Op{Twin: "", Node: "", Input: in, Output: out}.describe()
		},
		DescribeState: func(state interface{}) string { return state.(State).String() },
		DescribeOperationMetadata: func(info interface{}) string {
			if info == nil {
				return ""
			}
			return fmt.Sprint(info)
		},
	}
}

func (o Op) describe() string {
	var in string
	switch o.Input.Kind {
	case Read:
		in = "read()"
	case Write:
		in = fmt.Sprintf("write(%d)", o.Input.Value)
	case CAS:
		in = fmt.Sprintf("cas(@%d, %d)", o.Input.Expect, o.Input.Value)
	}
	switch {
	case o.Output.Status == Unknown:
		return in + " → ?"
	case o.Output.Precondition:
		return in + " → 412"
	case o.Output.Missing:
		return fmt.Sprintf("%s → v=∅ @%d", in, o.Output.Version)
	default:
		return fmt.Sprintf("%s → v=%d @%d", in, o.Output.Value, o.Output.Version)
	}
}

// TwinVerdict is the linearizability result of one twin.
type TwinVerdict struct {
	Twin string
	Init State
	Ops  int // operations checked
	// Unknown counts the writes and CAS whose outcome the client could
	// not know and Resolve could not settle (they make the check slower).
	Unknown int
	Result  porcupine.CheckResult
	// Visualization is the porcupine HTML of the history when it is not
	// linearizable (or the check timed out), else "".
	Visualization string
	// Took is how long the check ran.
	Took time.Duration
	// Stuck describes, for an illegal history, where the longest
	// linearization the checker found ends and the first operation (by
	// return time) it could not place.
	Stuck string
}

// CheckTwins checks each twin's history against the register model
// starting from init[twin], with at most timeout per twin (0: none). When a
// history is not linearizable (or the check times out) its visualization
// goes to dir/<twin>.html.
// Times in Stuck are relative to origin. Once budget (0: none) is spent,
// the twins left are not checked (Result Unknown).
func CheckTwins(ops []Op, init map[string]State, timeout, budget time.Duration, dir string, origin time.Time) []TwinVerdict {
	begin := time.Now()
	byTwin := map[string][]Op{}
	for _, op := range ops {
		byTwin[op.Twin] = append(byTwin[op.Twin], op)
	}
	var twins []string
	for t := range init {
		twins = append(twins, t)
	}
	sort.Strings(twins)
	var out []TwinVerdict
	for _, twin := range twins {
		hist := porcupineHistory(byTwin[twin])
		model := registerModel(init[twin])
		if budget > 0 && time.Since(begin) > budget {
			out = append(out, TwinVerdict{Twin: twin, Init: init[twin], Ops: len(hist), Result: porcupine.Unknown,
				Stuck: fmt.Sprintf("not checked: the check budget of %v was spent", budget)})
			continue
		}
		t0 := time.Now()
		res, info := porcupine.CheckOperationsVerbose(model, hist, timeout)
		v := TwinVerdict{Twin: twin, Init: init[twin], Ops: len(hist), Result: res, Took: time.Since(t0)}
		if res == porcupine.Illegal {
			v.Stuck = stuck(hist, info, origin)
		}
		if res != porcupine.Ok && dir != "" {
			if err := os.MkdirAll(dir, 0o755); err == nil {
				path := filepath.Join(dir, twin+".html")
				if err := porcupine.VisualizePath(model, info, path); err == nil {
					v.Visualization = path
				}
			}
		}
		out = append(out, v)
	}
	return out
}

// porcupineHistory turns a twin's operations into porcupine's form:
// failed operations go, except a CAS's 412 (it tells the version was not
// the expected one); an unknown one never returns.
func porcupineHistory(ops []Op) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Output.Status == Failed && !op.Output.Precondition {
			continue
		}
		ret := op.Return.UnixNano()
		if op.Output.Status == Unknown {
			ret = math.MaxInt64
		}
		out = append(out, porcupine.Operation{
			ClientId: op.Client,
			Input:    op.Input,
			Call:     op.Call.UnixNano(),
			Output:   op.Output,
			Return:   ret,
			Metadata: op.Node + metaDetail(op),
		})
	}
	return out
}

func metaDetail(op Op) string {
	switch {
	case op.Err != "":
		return ": " + op.Err
	case op.HTTP != 0 && op.Output.Status != OK:
		return fmt.Sprintf(": HTTP %d", op.HTTP)
	}
	return ""
}

// stuck finds the longest partial linearization and the earliest-returning
// operation outside it.
func stuck(hist []porcupine.Operation, info porcupine.LinearizationInfo, origin time.Time) string {
	var best []porcupine.Operation
	for _, part := range info.PartialLinearizationsOperations() {
		for _, lin := range part {
			if len(lin) > len(best) {
				best = lin
			}
		}
	}
	type id struct {
		client int
		call   int64
	}
	in := map[id]bool{}
	var last int64
	for _, op := range best {
		in[id{op.ClientId, op.Call}] = true
		if op.Call > last {
			last = op.Call
		}
	}
	var next *porcupine.Operation
	for i := range hist {
		op := &hist[i]
		if in[id{op.ClientId, op.Call}] || op.Return == math.MaxInt64 {
			continue
		}
		if next == nil || op.Return < next.Return {
			next = op
		}
	}
	rel := func(ns int64) string { return fmt.Sprintf("+%.3fs", time.Unix(0, ns).Sub(origin).Seconds()) }
	msg := fmt.Sprintf("linearizable for %d of %d operations (the last called at %s)", len(best), len(hist), rel(last))
	if next != nil {
		o := Op{Input: next.Input.(Input), Output: next.Output.(Output)}
		msg += fmt.Sprintf("; cannot place %s via %v (called %s, returned %s)", o.describe(), next.Metadata, rel(next.Call), rel(next.Return))
	}
	return msg
}

// Resolve makes the history cheaper to check without changing its verdict.
// An operation with an unknown outcome costs porcupine dearly: it never
// returns, so it may be placed anywhere after its call. But values are
// unique, so:
//
//   - an unknown write or CAS whose value some answer showed certainly took
//     effect, before that answer returned and at the version it showed: it
//     becomes a successful operation with that version, returning when the
//     first such answer returned (when two versions showed its value — a
//     fork — it stays unknown);
//   - one whose value no answer showed can only have taken effect at a
//     version no answer showed either (a gap), before the answers at the
//     next seen version came, or after every answer (where it changes
//     nothing anyone saw): it is kept only when it was called early enough
//     to fill some gap, and dropped otherwise.
//
// The result goes to CheckTwins like the original.
func Resolve(ops []Op, init map[string]State) []Op {
	type seen struct {
		version int64
		ret     time.Time
		forked  bool
	}
	shown := map[string]map[int64]*seen{} // twin → value → where it was first seen
	versions := map[string]map[int64]time.Time{}
	for _, op := range ops {
		if op.Output.Status != OK || op.Output.Missing {
			continue
		}
		if shown[op.Twin] == nil {
			shown[op.Twin], versions[op.Twin] = map[int64]*seen{}, map[int64]time.Time{}
		}
		s := shown[op.Twin][op.Output.Value]
		switch {
		case s == nil:
			shown[op.Twin][op.Output.Value] = &seen{version: op.Output.Version, ret: op.Return}
		case s.version != op.Output.Version:
			s.forked = true
		case op.Return.Before(s.ret):
			s.ret = op.Return
		}
		if r, ok := versions[op.Twin][op.Output.Version]; !ok || op.Return.Before(r) {
			versions[op.Twin][op.Output.Version] = op.Return
		}
	}
	// latest[twin] is the last moment an unseen write could still fill a
	// gap: the latest first answer at a version that follows a gap.
	latest := map[string]time.Time{}
	for twin, vs := range versions {
		var list []int64
		for v := range vs {
			list = append(list, v)
		}
		sort.Slice(list, func(i, j int) bool { return list[i] < list[j] })
		prev := init[twin].Version
		for _, v := range list {
			if v > prev+1 && vs[v].After(latest[twin]) {
				latest[twin] = vs[v]
			}
			prev = v
		}
	}
	out := make([]Op, 0, len(ops))
	for _, op := range ops {
		if op.Output.Status != Unknown {
			out = append(out, op)
			continue
		}
		if s := shown[op.Twin][op.Input.Value]; s != nil {
			if !s.forked && !s.ret.Before(op.Call) {
				op.Output = Output{Status: OK, Value: op.Input.Value, Version: s.version}
				op.Return = s.ret
				op.Err += " (resolved: its value was seen)"
			}
			out = append(out, op)
			continue
		}
		if l, ok := latest[op.Twin]; ok && !op.Call.After(l) {
			out = append(out, op)
		}
	}
	return out
}
