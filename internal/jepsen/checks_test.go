package jepsen

import (
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// at builds an operation called at ms and returned at ms+dur (an Unknown
// never returns).
func at(client, ms, dur int, in Input, out Output) Op {
	return Op{Twin: "t", Client: client, Node: "n1", Input: in, Output: out,
		Call: t0.Add(time.Duration(ms) * time.Millisecond), Return: t0.Add(time.Duration(ms+dur) * time.Millisecond)}
}

func rd(v, ver int64) (Input, Output) {
	return Input{Kind: Read}, Output{Status: OK, Value: v, Version: ver}
}
func wr(v, ver int64) (Input, Output) {
	return Input{Kind: Write, Value: v}, Output{Status: OK, Value: v, Version: ver}
}
func wrUnknown(v int64) (Input, Output) {
	return Input{Kind: Write, Value: v}, Output{Status: Unknown}
}
func cas(expect, v, ver int64) (Input, Output) {
	return Input{Kind: CAS, Value: v, Expect: expect}, Output{Status: OK, Value: v, Version: ver}
}
func cas412(expect, v int64) (Input, Output) {
	return Input{Kind: CAS, Value: v, Expect: expect}, Output{Status: Failed, Precondition: true}
}
func casUnknown(expect, v int64) (Input, Output) {
	return Input{Kind: CAS, Value: v, Expect: expect}, Output{Status: Unknown}
}

func op(client, ms, dur int, io func() (Input, Output)) Op {
	in, out := io()
	return at(client, ms, dur, in, out)
}

func TestCheckTwins(t *testing.T) {
	init := State{Value: 0, Version: 2}
	cases := []struct {
		name string
		ops  []Op
		want porcupine.CheckResult
	}{
		{"sequential read write cas", []Op{
			op(0, 0, 10, func() (Input, Output) { return rd(0, 2) }),
			op(0, 20, 10, func() (Input, Output) { return wr(5, 3) }),
			op(0, 40, 10, func() (Input, Output) { return cas(3, 6, 4) }),
			op(0, 60, 10, func() (Input, Output) { return cas412(3, 7) }),
			op(0, 80, 10, func() (Input, Output) { return rd(6, 4) }),
		}, porcupine.Ok},
		{"stale read after an acknowledged write", []Op{
			op(0, 0, 10, func() (Input, Output) { return wr(5, 3) }),
			op(1, 20, 10, func() (Input, Output) { return rd(0, 2) }),
		}, porcupine.Illegal},
		{"concurrent read may see either", []Op{
			op(0, 0, 100, func() (Input, Output) { return wr(5, 3) }),
			op(1, 10, 10, func() (Input, Output) { return rd(0, 2) }),
			op(2, 30, 10, func() (Input, Output) { return rd(5, 3) }),
		}, porcupine.Ok},
		{"read goes back in time", []Op{
			op(0, 0, 100, func() (Input, Output) { return wr(5, 3) }),
			op(1, 10, 10, func() (Input, Output) { return rd(5, 3) }),
			op(2, 30, 10, func() (Input, Output) { return rd(0, 2) }),
		}, porcupine.Illegal},
		{"fork: two writes acknowledged at one version", []Op{
			op(0, 0, 10, func() (Input, Output) { return wr(5, 3) }),
			op(1, 0, 10, func() (Input, Output) { return wr(6, 3) }),
		}, porcupine.Illegal},
		{"write skips a version", []Op{
			op(0, 0, 10, func() (Input, Output) { return wr(5, 4) }),
		}, porcupine.Illegal},
		{"unknown write seen later", []Op{
			op(0, 0, 0, func() (Input, Output) { return wrUnknown(5) }),
			op(1, 50, 10, func() (Input, Output) { return rd(5, 3) }),
		}, porcupine.Ok},
		{"unknown write never seen", []Op{
			op(0, 0, 0, func() (Input, Output) { return wrUnknown(5) }),
			op(1, 50, 10, func() (Input, Output) { return rd(0, 2) }),
			op(1, 70, 10, func() (Input, Output) { return wr(6, 3) }),
		}, porcupine.Ok},
		{"unknown write cannot take effect before it was called", []Op{
			op(1, 0, 10, func() (Input, Output) { return rd(5, 3) }),
			op(0, 50, 0, func() (Input, Output) { return wrUnknown(5) }),
		}, porcupine.Illegal},
		{"412 although the version matched", []Op{
			op(0, 0, 10, func() (Input, Output) { return cas412(2, 5) }),
		}, porcupine.Illegal},
		{"cas succeeds at another version", []Op{
			op(0, 0, 10, func() (Input, Output) { return cas(7, 5, 3) }),
		}, porcupine.Illegal},
		{"unknown cas at a stale version cannot apply", []Op{
			op(0, 0, 0, func() (Input, Output) { return casUnknown(9, 5) }),
			op(1, 50, 10, func() (Input, Output) { return rd(5, 3) }),
		}, porcupine.Illegal},
		{"unknown cas at the current version may apply", []Op{
			op(0, 0, 0, func() (Input, Output) { return casUnknown(2, 5) }),
			op(1, 50, 10, func() (Input, Output) { return rd(5, 3) }),
		}, porcupine.Ok},
		{"read misses desired.v", []Op{
			at(0, 0, 10, Input{Kind: Read}, Output{Status: OK, Missing: true, Version: 2}),
		}, porcupine.Illegal},
		{"failed operations are left out", []Op{
			at(0, 0, 10, Input{Kind: Read}, Output{Status: Failed}),
			at(0, 20, 10, Input{Kind: Write, Value: 9}, Output{Status: Failed}),
			op(0, 40, 10, func() (Input, Output) { return rd(0, 2) }),
		}, porcupine.Ok},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			inits := map[string]State{"t": init}
			if r := CheckTwins(Resolve(tc.ops, inits), inits, 10*time.Second, 0, "", t0); r[0].Result != tc.want {
				t.Errorf("after Resolve: %s, want %s", r[0].Result, tc.want)
			}
			v := CheckTwins(tc.ops, inits, 10*time.Second, 0, dir, t0)
			if len(v) != 1 || v[0].Result != tc.want {
				t.Fatalf("got %+v, want %s", v, tc.want)
			}
			if tc.want == porcupine.Illegal {
				if v[0].Visualization == "" {
					t.Error("no visualization for an illegal history")
				} else if b, err := os.ReadFile(v[0].Visualization); err != nil || !strings.Contains(string(b), "<html") {
					t.Errorf("visualization %s: %v", v[0].Visualization, err)
				}
				if v[0].Stuck == "" {
					t.Error("no Stuck description")
				}
			} else if v[0].Visualization != "" {
				t.Errorf("visualization written for a %s history", v[0].Result)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	init := map[string]State{"t": {Value: 0, Version: 2}}
	seenLater := op(0, 0, 0, func() (Input, Output) { return wrUnknown(5) })
	gapFiller := op(2, 20, 0, func() (Input, Output) { return wrUnknown(6) })
	tooLate := op(3, 200, 0, func() (Input, Output) { return wrUnknown(7) })
	ops := []Op{
		seenLater,
		op(1, 10, 10, func() (Input, Output) { return rd(5, 3) }),
		op(1, 30, 10, func() (Input, Output) { return rd(5, 3) }),
		gapFiller,
		// Version 4 is never seen: the unseen write 6 may have made it.
		op(1, 60, 10, func() (Input, Output) { return wr(8, 5) }),
		tooLate,
	}
	got := Resolve(ops, init)
	if len(got) != 5 {
		t.Fatalf("Resolve kept %d operations, want 5 (the late unseen write dropped): %v", len(got), got)
	}
	if got[0].Output.Status != OK || got[0].Output.Version != 3 || !got[0].Return.Equal(t0.Add(20*time.Millisecond)) {
		t.Errorf("seen write: %+v, want OK at version 3 returning when the first read did", got[0])
	}
	if got[3].Output.Status != Unknown || got[3].Input.Value != 6 {
		t.Errorf("gap filler: %+v, want kept unknown", got[3])
	}
	for _, o := range got {
		if o.Input.Value == 7 {
			t.Errorf("the write called after the last gap was kept: %v", o)
		}
	}
	if v := CheckTwins(got, init, 10*time.Second, 0, "", t0); v[0].Result != porcupine.Ok {
		t.Errorf("resolved history: %s", v[0].Result)
	}
	// Without a gap every unseen unknown operation goes.
	none := Resolve([]Op{tooLate, op(1, 300, 10, func() (Input, Output) { return wr(9, 3) })}, init)
	if len(none) != 1 {
		t.Errorf("no gap: kept %v", none)
	}
}

func TestFindForks(t *testing.T) {
	ops := []Op{
		op(0, 0, 10, func() (Input, Output) { return wr(5, 3) }),
		op(1, 20, 10, func() (Input, Output) { return rd(5, 3) }),
		op(2, 40, 10, func() (Input, Output) { return wr(6, 3) }),
		op(2, 60, 10, func() (Input, Output) { return wr(7, 4) }),
		at(3, 70, 10, Input{Kind: Write, Value: 8}, Output{Status: Unknown}),
	}
	f := FindForks(ops, t0)
	if len(f) != 1 || f[0].Version != 3 || len(f[0].Values) != 2 || !f[0].At.Equal(t0.Add(50*time.Millisecond)) {
		t.Fatalf("FindForks = %+v", f)
	}
	if s := f[0].String(); !strings.Contains(s, "v=5 (write via n1 at +0.0s, read via n1 at +0.0s)") || !strings.Contains(s, "v=6") {
		t.Errorf("String() = %s", s)
	}
}

func TestCheckTelemetry(t *testing.T) {
	msgs := []Message{
		{Device: "d", MID: "d-0", Acked: true},
		{Device: "d", MID: "d-1", Acked: true},
		{Device: "d", MID: "d-2"}, // never acknowledged: may be stored or not
		{Device: "d", MID: "d-3"},
		{Device: "e", MID: "e-0", Acked: true},
	}
	v := CheckTelemetry(msgs, []TelemetryView{
		{Node: "n1", MIDs: map[string][]string{"d": {"d-0", "d-1", "d-2"}, "e": {"e-0"}}},
		{Node: "n2", MIDs: map[string][]string{"d": {"d-0", "d-0", "d-9"}, "e": {"e-0"}}},
		{Node: "n3", MIDs: map[string][]string{"d": {"d-0", "d-1"}}, Err: "e: timeout"},
	})
	if !v[0].OK() || v[0].Acked != 3 || v[0].Unacked != 2 || v[0].Stored != 4 {
		t.Errorf("n1: %+v", v[0])
	}
	if v[1].OK() || strings.Join(v[1].Lost, ",") != "d-1" || strings.Join(v[1].Duplicated, ",") != "d-0 ×2" || strings.Join(v[1].Unknown, ",") != "d-9" {
		t.Errorf("n2: %+v", v[1])
	}
	if v[2].OK() || len(v[2].Lost) != 0 {
		t.Errorf("n3 (e unreadable: not lost, but an error): %+v", v[2])
	}
}

func TestParseLogAndEpochClashes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n1.log")
	log := `### 2026-01-01T00:00:00Z faults: n1 incarnation 1: ip netns exec …
time=2026-01-01T00:00:01.000Z level=INFO msg="grain activated" component=actors entity=jt-0 kind=device epoch=10 node=n1
time=2026-01-01T00:00:02.000Z level=WARN msg="grain fenced" component=actors entity=jt-0 epoch=10 err="fenced"
### 2026-01-01T00:00:03Z faults: n1 incarnation 2: ip netns exec …
time=2026-01-01T00:00:04.000Z level=INFO msg="grain activated" component=actors entity="jt 1" kind=device epoch=11 node=n1
`
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	acts, fenced, err := ParseLog("n1", path)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 2 || acts[0].Node != "n1#1" || acts[1].Node != "n1#2" || acts[1].Entity != "jt 1" || acts[1].Epoch != 11 {
		t.Errorf("activations %+v", acts)
	}
	if len(fenced) != 1 || fenced[0].Entity != "jt-0" {
		t.Errorf("fenced %+v", fenced)
	}
	clash := FindEpochClashes(append(acts, Activation{Node: "n2#1", Entity: "jt-0", Epoch: 10}))
	if len(clash) != 1 || clash[0].Entity != "jt-0" || len(clash[0].Nodes) != 2 {
		t.Errorf("clashes %+v", clash)
	}
}

func TestAvailabilities(t *testing.T) {
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	w := Window{What: "pause n2", Start: ms(1000), Heal: ms(2000), End: ms(3000)}
	ops := []Op{
		{Node: "n1", Call: ms(1100), Return: ms(1200), Output: Output{Status: OK}},
		{Node: "n2", Call: ms(1100), Return: ms(2100), Output: Output{Status: Unknown}, Input: Input{Kind: Write}},
		{Node: "n2", Call: ms(1500), Return: ms(1600), Output: Output{Status: Failed, Precondition: true}, Input: Input{Kind: CAS}},
		{Node: "n2", Call: ms(2100), Return: ms(2400), Output: Output{Status: OK}},
		{Node: "n1", Call: ms(2000), Return: ms(2050), Output: Output{Status: OK}},
	}
	rounds := []Round{
		{At: ms(2100), Alive: map[string][]string{"n1": {"n1"}, "n2": {"n1", "n2"}}},
		{At: ms(2600), Alive: map[string][]string{"n1": {"n1", "n2"}, "n2": {"n1", "n2"}}},
	}
	a := Availabilities([]Window{w}, ops, []Message{{Sent: ms(1500), Acked: true}, {Sent: ms(1600)}}, rounds, []string{"n1", "n2"})[0]
	if a.During != 3 || a.DuringOK != 2 || a.After != 2 || a.AfterOK != 2 || a.Telemetry != 2 || a.TelemetryAcked != 1 {
		t.Errorf("counts %+v", a)
	}
	if a.Recovered["n1"] != 50*time.Millisecond || a.Recovered["n2"] != 400*time.Millisecond || a.Converged != 600*time.Millisecond {
		t.Errorf("recovery %v, converged %v", a.Recovered, a.Converged)
	}
	if s := a.String(); !strings.Contains(s, "recovered +0.4s") || !strings.Contains(s, "membership +0.6s") {
		t.Errorf("String() = %s", s)
	}
}

func TestSchedules(t *testing.T) {
	s := ShortSchedule(rand.New(rand.NewSource(1)), 3)
	if len(s) != 3 || s[0].Kind != Pause || s[0].For <= 8*time.Second || s[1].Kind != Partition || s[1].For != 20*time.Second ||
		len(s[1].Nodes) != 1 || len(s[1].Other) != 2 || s[2].Kind != Kill {
		t.Errorf("short schedule %v", s)
	}
	a := RandomSchedule(rand.New(rand.NewSource(7)), 5, 10*time.Minute, nil)
	b := RandomSchedule(rand.New(rand.NewSource(7)), 5, 10*time.Minute, nil)
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("schedules of one seed differ: %d vs %d faults", len(a), len(b))
	}
	var total time.Duration
	kinds := map[FaultKind]bool{}
	for i := range a {
		if a[i].String() != b[i].String() {
			t.Errorf("fault %d: %s vs %s", i, a[i], b[i])
		}
		total += a[i].For + a[i].Settle
		kinds[a[i].Kind] = true
		if a[i].Kind == Partition && len(a[i].Nodes) != 2 {
			t.Errorf("a minority of 5 is 2 nodes: %s", a[i])
		}
	}
	if total < 10*time.Minute {
		t.Errorf("schedule covers %v, want ≥ 10m", total)
	}
	if len(kinds) < 5 {
		t.Errorf("10 minutes drew only %v", kinds)
	}
	only := RandomSchedule(rand.New(rand.NewSource(7)), 3, time.Minute, []FaultKind{Loss})
	for _, f := range only {
		if f.Kind != Loss {
			t.Errorf("asked for loss only, got %s", f)
		}
	}
}

func TestJSONLRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.jsonl")
	ops := []Op{
		op(0, 0, 10, func() (Input, Output) { return cas(2, 5, 3) }),
		op(1, 20, 10, func() (Input, Output) { return cas412(2, 6) }),
		op(1, 40, 10, func() (Input, Output) { return wrUnknown(7) }),
		at(2, 60, 10, Input{Kind: Read}, Output{Status: OK, Missing: true, Version: 3}),
		at(3, 80, 10, Input{Kind: Read}, Output{Status: Failed}),
	}
	ops[2].Err = "timeout"
	msgs := []Message{{Device: "d", MID: "d-0", Sent: t0, Attempts: 1, Nodes: []string{"n1"}, Acked: true, AckedAt: t0.Add(time.Second), AckedBy: "n1"}}
	init := map[string]State{"t": {Value: 0, Version: 2}}
	if err := WriteJSONL(path, init, ops, msgs, t0); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 7 || !strings.Contains(lines[0], `"init":"t"`) || !strings.Contains(lines[1], `"expect":2`) ||
		!strings.Contains(lines[2], `"status":"412"`) || !strings.Contains(lines[6], `"mid":"d-0"`) {
		t.Errorf("history:\n%s", b)
	}
	gotInit, gotOps, gotMsgs, err := ReadJSONL(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	if gotInit["t"] != init["t"] || len(gotOps) != len(ops) || len(gotMsgs) != 1 || !gotMsgs[0].AckedAt.Equal(msgs[0].AckedAt) {
		t.Fatalf("read back %v %v %v", gotInit, gotOps, gotMsgs)
	}
	for i := range ops {
		if gotOps[i].String() != ops[i].String() || !gotOps[i].Call.Equal(ops[i].Call) || !gotOps[i].Return.Equal(ops[i].Return) {
			t.Errorf("op %d: %s (%v–%v), want %s (%v–%v)", i, gotOps[i], gotOps[i].Call, gotOps[i].Return, ops[i], ops[i].Call, ops[i].Return)
		}
	}
}

// TestRecheck checks a saved history again (TWINMESH_JEPSEN_HISTORY=path
// of a run's history.jsonl), e.g. with TWINMESH_JEPSEN_STALE_READS=1 or a
// longer TWINMESH_JEPSEN_CHECK_TIMEOUT, without running a cluster.
func TestRecheck(t *testing.T) {
	path := os.Getenv("TWINMESH_JEPSEN_HISTORY")
	if path == "" {
		t.Skip("set TWINMESH_JEPSEN_HISTORY to a history.jsonl to check it again")
	}
	origin := time.Unix(0, 0)
	init, ops, msgs, err := ReadJSONL(path, origin)
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.Minute
	if s := os.Getenv("TWINMESH_JEPSEN_CHECK_TIMEOUT"); s != "" {
		if timeout, err = time.ParseDuration(s); err != nil {
			t.Fatal(err)
		}
	}
	checked := Resolve(ops, init)
	if os.Getenv("TWINMESH_JEPSEN_STALE_READS") == "1" {
		checked = writesOnly(checked)
	}
	dir := filepath.Join(filepath.Dir(path), "recheck")
	for _, v := range CheckTwins(checked, init, timeout, 0, dir, origin) {
		t.Logf("%s: %s, %d ops, %v %s %s", v.Twin, v.Result, v.Ops, v.Took.Round(time.Millisecond), v.Stuck, v.Visualization)
		if v.Result != porcupine.Ok {
			t.Errorf("%s: %s", v.Twin, v.Result)
		}
	}
	for _, f := range FindForks(ops, origin) {
		t.Errorf("fork: %s", f)
	}
	acked := 0
	for _, m := range msgs {
		if m.Acked {
			acked++
		}
	}
	t.Logf("%d operations, %d messages (%d acknowledged)", len(ops), len(msgs), acked)
}
