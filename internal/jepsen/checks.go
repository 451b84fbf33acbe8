package jepsen

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// TelemetryView is one node's answer to GET /api/v1/twins/{id}/telemetry
// for every device: the stored message IDs, in the order returned.
type TelemetryView struct {
	Node string
	MIDs map[string][]string // device → stored mids
	Err  string              // the read failed (for some device)
}

// TelemetryVerdict is the telemetry check of one node's view.
type TelemetryVerdict struct {
	Node string
	// Acked and Stored count the acknowledged messages and the stored
	// records; Unacked the messages sent but never acknowledged (they may
	// or may not be stored: both are fine).
	Acked, Unacked, Stored int
	// Lost are acknowledged messages missing from the view (a violation).
	Lost []string
	// Duplicated are message IDs stored more than once (a violation).
	Duplicated []string
	// Unknown are stored message IDs that were never sent (a violation).
	Unknown []string
	Err     string
}

// OK reports whether the view has no violation.
func (v TelemetryVerdict) OK() bool {
	return len(v.Lost) == 0 && len(v.Duplicated) == 0 && len(v.Unknown) == 0 && v.Err == ""
}

// CheckTelemetry compares what was sent and acknowledged with each node's
// view of the stored messages.
func CheckTelemetry(msgs []Message, views []TelemetryView) []TelemetryVerdict {
	sent := map[string]Message{}
	for _, m := range msgs {
		sent[m.MID] = m
	}
	var out []TelemetryVerdict
	for _, view := range views {
		v := TelemetryVerdict{Node: view.Node, Err: view.Err}
		stored := map[string]int{}
		for _, mids := range view.MIDs {
			for _, mid := range mids {
				stored[mid]++
				v.Stored++
			}
		}
		for _, m := range msgs {
			if !m.Acked {
				v.Unacked++
				continue
			}
			v.Acked++
			if _, ok := view.MIDs[m.Device]; !ok {
				continue // the device could not be read: reported in Err
			}
			if stored[m.MID] == 0 {
				v.Lost = append(v.Lost, m.MID)
			}
		}
		for mid, n := range stored {
			if n > 1 {
				v.Duplicated = append(v.Duplicated, fmt.Sprintf("%s ×%d", mid, n))
			}
			if _, ok := sent[mid]; !ok {
				v.Unknown = append(v.Unknown, mid)
			}
		}
		sort.Strings(v.Lost)
		sort.Strings(v.Duplicated)
		sort.Strings(v.Unknown)
		out = append(out, v)
	}
	return out
}

// Fork is one twin version that the cluster acknowledged or served with
// two different values: two owners committed the same version from
// different histories.
type Fork struct {
	Twin    string
	Version int64
	// Values maps each value to up to three operations that saw it
	// ("write via n1 at +12.3s").
	Values map[int64][]string
	// At is when the version was first seen with a second value.
	At time.Time
}

// FindForks lists the twin versions seen with more than one value in
// successful answers (writes, CAS and reads), in the order of At. Every
// accepted write raises the version by one, so one version with two values
// means two activations accepted writes on the same base: a fencing
// failure, visible from the clients alone. Times in the descriptions are
// relative to origin.
func FindForks(ops []Op, origin time.Time) []Fork {
	type key struct {
		twin string
		ver  int64
	}
	seen := map[key]*Fork{}
	for _, op := range ops {
		if op.Output.Status != OK || op.Output.Missing {
			continue
		}
		k := key{op.Twin, op.Output.Version}
		f := seen[k]
		if f == nil {
			f = &Fork{Twin: op.Twin, Version: op.Output.Version, Values: map[int64][]string{}}
			seen[k] = f
		}
		if _, ok := f.Values[op.Output.Value]; !ok && len(f.Values) == 1 && (f.At.IsZero() || op.Return.Before(f.At)) {
			f.At = op.Return
		}
		desc := fmt.Sprintf("%s via %s at +%.1fs", op.Input.Kind, op.Node, op.Return.Sub(origin).Seconds())
		if len(f.Values[op.Output.Value]) < 3 {
			f.Values[op.Output.Value] = append(f.Values[op.Output.Value], desc)
		}
	}
	var out []Fork
	for _, f := range seen {
		if len(f.Values) > 1 {
			out = append(out, *f)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.Before(out[j].At)
		}
		return out[i].Twin < out[j].Twin
	})
	return out
}

func (f Fork) String() string {
	var vals []string
	for val, seen := range f.Values {
		vals = append(vals, fmt.Sprintf("v=%d (%s)", val, strings.Join(seen, ", ")))
	}
	sort.Strings(vals)
	return fmt.Sprintf("%s version %d: %s", f.Twin, f.Version, strings.Join(vals, " vs "))
}

// Activation is one `msg="grain activated"` line of a node log.
type Activation struct {
	Node   string // node name and incarnation, e.g. "n2#3"
	Entity string
	Epoch  uint64
	At     time.Time
}

// Fenced is one `msg="grain fenced"` line: the activation learnt that a
// newer owner epoch exists.
type Fenced = Activation

var (
	entityRE = regexp.MustCompile(`\bentity=("(?:[^"\\]|\\.)*"|[^ ]+)`)
	epochRE  = regexp.MustCompile(`\bepoch=(\d+)`)
	timeRE   = regexp.MustCompile(`^time=(\S+)`)
)

// ParseLog reads a node log written by internal/faults (incarnations
// separated by "### … incarnation N" lines) and returns its activations
// and fenced lines.
func ParseLog(node, path string) (acts []Activation, fenced []Fenced, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	inc := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "### ") && strings.Contains(line, " incarnation ") {
			inc++
			continue
		}
		act := strings.Contains(line, `msg="grain activated"`)
		fen := strings.Contains(line, `msg="grain fenced"`)
		if !act && !fen {
			continue
		}
		em, pm := entityRE.FindStringSubmatch(line), epochRE.FindStringSubmatch(line)
		if em == nil || pm == nil {
			continue
		}
		a := Activation{Node: fmt.Sprintf("%s#%d", node, inc), Entity: unquote(em[1])}
		a.Epoch, _ = strconv.ParseUint(pm[1], 10, 64)
		if tm := timeRE.FindStringSubmatch(line); tm != nil {
			a.At, _ = time.Parse(time.RFC3339Nano, tm[1])
		}
		if act {
			acts = append(acts, a)
		} else {
			fenced = append(fenced, a)
		}
	}
	return acts, fenced, sc.Err()
}

func unquote(s string) string {
	if strings.HasPrefix(s, `"`) {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
	}
	return s
}

// EpochClash is one (entity, epoch) claimed by more than one activation:
// fencing tokens must be unique.
type EpochClash struct {
	Entity string
	Epoch  uint64
	Nodes  []string
}

// FindEpochClashes lists the (entity, epoch) pairs more than one
// activation claimed.
func FindEpochClashes(acts []Activation) []EpochClash {
	type key struct {
		e  string
		ep uint64
	}
	by := map[key][]string{}
	for _, a := range acts {
		k := key{a.Entity, a.Epoch}
		by[k] = append(by[k], a.Node)
	}
	var out []EpochClash
	for k, nodes := range by {
		if len(nodes) > 1 {
			out = append(out, EpochClash{Entity: k.e, Epoch: k.ep, Nodes: nodes})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Entity < out[j].Entity })
	return out
}
