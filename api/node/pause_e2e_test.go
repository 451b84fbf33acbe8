package node

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPausedOwnerIsFenced is the first regression test of issue 20: three
// members with --replicas 2, 60 devices under one building. n3 is frozen
// (SIGSTOP) for longer than failure detection while n1 writes c=1 to every
// twin; n3 is resumed and at once asked to write c=2 to every twin, one
// attempt each. Before the fix n3 answered 200 for all 60 with grains whose
// activations were still in its memory, and the other members never saw
// those writes (two histories at one version). Now every write n3
// acknowledges must be what n1 and n2 read, and no twin may read
// differently on the majority's members.
func TestPausedOwnerIsFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir := t.TempDir()
	n1 := ceStart(t, "n1", "n1", filepath.Join(dir, "n1"), "")
	n2 := ceStart(t, "n2", "n2", filepath.Join(dir, "n2"), n1.node.Addr("gossip"))
	n3 := ceStart(t, "n3", "n3", filepath.Join(dir, "n3"), n1.node.Addr("gossip"))
	all := []*cmember{n1, n2, n3}
	waitAlive(t, 30*time.Second, all)

	const devices = 60
	ceDo(t, 30*time.Second, all, "PUT", "/api/v1/entities/b1", map[string]any{"kind": "building"}, 200, 201)
	for i := 0; i < devices; i++ {
		ceDo(t, 30*time.Second, all, "PUT", fmt.Sprintf("/api/v1/devices/p%02d", i), map[string]any{"parent": "b1"}, 200, 201)
	}
	patch := func(m *cmember, id string, c int) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, _, _, err := m.api.Do(ctx, "PATCH", "/api/v1/twins/"+id, map[string]any{"desired": map[string]any{"c": c}})
		return st, err
	}
	// Every grain active somewhere, n3 owning about a third of them.
	for i := 0; i < devices; i++ {
		ceDo(t, 30*time.Second, all, "PATCH", fmt.Sprintf("/api/v1/twins/p%02d", i), map[string]any{"desired": map[string]any{"c": 0}}, 200)
	}

	if err := n3.node.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	cont := func() { _ = n3.node.Cmd.Process.Signal(syscall.SIGCONT) }
	defer cont()
	for i := 0; i < devices; i++ {
		ceDo(t, 30*time.Second, []*cmember{n1}, "PATCH", fmt.Sprintf("/api/v1/twins/p%02d", i), map[string]any{"desired": map[string]any{"c": 1}}, 200)
	}
	if d := 8*time.Second - time.Since(paused); d > 0 {
		time.Sleep(d) // longer than failure detection
	}
	cont()
	acked := map[string]bool{}
	codes := map[int]int{}
	for i := 0; i < devices; i++ {
		id := fmt.Sprintf("p%02d", i)
		st, err := patch(n3, id, 2)
		if err != nil {
			codes[-1]++
			continue
		}
		codes[st]++
		if st == 200 {
			acked[id] = true
		}
	}
	t.Logf("n3 paused for %v; its answers to c=2 right after SIGCONT: %v (status: count; -1 = transport error)", time.Since(paused).Round(time.Second), codes)

	// What the majority reads must include every write n3 acknowledged, and
	// n1 and n2 must agree.
	read := func(m *cmember, id string) (int, int64, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, _, out, err := m.api.Do(ctx, "GET", "/api/v1/twins/"+id, nil)
		if err != nil || st != 200 {
			return 0, 0, false
		}
		var tw struct {
			Version int64 `json:"version"`
			Desired struct {
				C int `json:"c"`
			} `json:"desired"`
		}
		if json.Unmarshal(out, &tw) != nil {
			return 0, 0, false
		}
		return tw.Desired.C, tw.Version, true
	}
	var bad []string
	cePoll(30*time.Second, func() bool {
		bad = bad[:0]
		for i := 0; i < devices; i++ {
			id := fmt.Sprintf("p%02d", i)
			c1, v1, ok1 := read(n1, id)
			c2, v2, ok2 := read(n2, id)
			switch {
			case !ok1 || !ok2:
				bad = append(bad, id+": unreadable")
			case c1 != c2 || v1 != v2:
				bad = append(bad, fmt.Sprintf("%s: n1 reads c=%d@%d, n2 c=%d@%d", id, c1, v1, c2, v2))
			case acked[id] && c1 != 2:
				bad = append(bad, fmt.Sprintf("%s: n3 acknowledged c=2, the majority reads c=%d", id, c1))
			case !acked[id] && c1 != 1 && c1 != 2:
				bad = append(bad, fmt.Sprintf("%s: reads c=%d", id, c1))
			}
		}
		return len(bad) == 0
	})
	if len(bad) > 0 {
		t.Fatalf("30 s after the resume, %d twins wrong: %v", len(bad), bad)
	}

	// n3 is back by itself: either the others blocked its identity while
	// it was frozen (their dead verdict held for more than the 3 s grace)
	// and it restarted as a new incarnation on the same addresses, or it
	// refuted the verdict within the grace and was never shut out.
	rejoined := cePoll(60*time.Second, func() bool {
		return aliveExactly(n1.api, "n1", "n2", "n3") && aliveExactly(n3.api, "n1", "n2", "n3")
	})
	t.Logf("n3 restarted under a new identity: %v", strings.Contains(n3.node.Logs(), "restarting under a new identity"))
	if !rejoined {
		t.Fatalf("n3 did not come back: n1 sees %s; n3 sees %s", clusterSummary(n1.api), clusterSummary(n3.api))
	}
	hosts := cePoll(30*time.Second, func() bool {
		for i := 0; i < devices; i++ {
			if _, _, ok := read(n1, fmt.Sprintf("p%02d", i)); !ok {
				return false
			}
		}
		v, err := ceReadCluster(n1.api)
		if err != nil {
			return false
		}
		for _, m := range v.Members {
			if m.Name == "n3" && m.Grains > 0 {
				return true
			}
		}
		return false
	})
	// Grains moving onto the new incarnation is not asserted yet: it is
	// timing-dependent (seen 0–1 grains within 30 s), an open point of
	// issue 20.
	t.Logf("n3 came back as a new incarnation (hosts grains: %v): %s", hosts, clusterSummary(n1.api))
}
