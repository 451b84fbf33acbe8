package jepsen

// What the runner observes of the cluster: membership rounds, convergence, final reads and telemetry.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// clusterView is GET /api/v1/cluster.
type clusterView struct {
	Self    string `json:"self"`
	Members []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"members"`
}

// round polls every node's view of the cluster once.
func (r *runner) round(ctx context.Context) Round {
	rd := Round{At: time.Now(), Alive: map[string][]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 1; i <= r.cfg.Nodes; i++ {
		n := r.nw.Node(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			a := r.rest.do(cctx, n.HTTPURL(), "GET", "/api/v1/cluster", nil)
			var v clusterView
			if a.err != nil || a.status != 200 || json.Unmarshal(a.body, &v) != nil {
				mu.Lock()
				rd.Alive[n.Name()] = nil
				mu.Unlock()
				return
			}
			alive := []string{}
			for _, m := range v.Members {
				if m.State == "alive" {
					alive = append(alive, m.Name)
				}
			}
			sort.Strings(alive)
			mu.Lock()
			rd.Alive[n.Name()] = alive
			mu.Unlock()
		}()
	}
	wg.Wait()
	return rd
}

// poll records a round every second until ctx ends.
func (r *runner) poll(ctx context.Context) {
	for ctx.Err() == nil {
		rd := r.round(ctx)
		r.mu.Lock()
		r.rounds = append(r.rounds, rd)
		r.mu.Unlock()
		sleep(ctx, time.Second)
	}
}

// waitConverged polls until every node sees every node alive.
func (r *runner) waitConverged(ctx context.Context, timeout time.Duration) (time.Duration, bool) {
	t0 := time.Now()
	for time.Since(t0) < timeout && ctx.Err() == nil {
		if r.round(ctx).full(r.names) {
			return time.Since(t0), true
		}
		sleep(ctx, 250*time.Millisecond)
	}
	return time.Since(t0), false
}

// clusterViews describes every node's view, for messages.
func (r *runner) clusterViews(ctx context.Context) string {
	rd := r.round(ctx)
	var parts []string
	for _, n := range r.names {
		if a := rd.Alive[n]; a == nil {
			parts = append(parts, n+" sees: no answer")
		} else {
			parts = append(parts, fmt.Sprintf("%s sees alive %v", n, a))
		}
	}
	return strings.Join(parts, "; ")
}

// finalReads reads every twin through every node (the nodes in parallel,
// a few twins at a time on each, each read retried for up to 5 s) into the
// history: after the heal they must agree with each other and with what
// was acknowledged. Twins whose answers differ, or that a node could not
// read, are logged.
func (r *runner) finalReads(ctx context.Context) {
	got := make([][]string, len(r.twins)) // twin → answer per node
	for t := range got {
		got[t] = make([]string, r.cfg.Nodes)
	}
	var wg sync.WaitGroup
	for i := 1; i <= r.cfg.Nodes; i++ {
		sem := make(chan struct{}, 4)
		for t, twin := range r.twins {
			wg.Add(1)
			sem <- struct{}{}
			go func(i, t int, twin string) {
				defer func() { <-sem; wg.Done() }()
				n := r.nw.Node(i)
				deadline := time.Now().Add(5 * time.Second)
				for {
					op := r.rest.twinOp(ctx, n.Name(), n.HTTPURL(), twin, Input{Kind: Read})
					op.Client = int(r.clients.Add(1) - 1)
					if op.Output.Status == OK {
						r.hist.Add(op)
						got[t][i-1] = fmt.Sprintf("%s: %s", n.Name(), strings.TrimPrefix(op.describe(), "read() → "))
						return
					}
					if time.Now().After(deadline) {
						got[t][i-1] = fmt.Sprintf("%s: no answer (%s)", n.Name(), op.Err)
						return
					}
					sleep(ctx, 200*time.Millisecond)
				}
			}(i, t, twin)
		}
	}
	wg.Wait()
	agree := 0
	for t, twin := range r.twins {
		same := true
		for i := range got[t] {
			a, b := got[t][i], got[t][0]
			if strings.Contains(a, "no answer") || a[strings.Index(a, ":"):] != b[strings.Index(b, ":"):] {
				same = false
			}
		}
		if same {
			agree++
		} else {
			r.logf("final read %s: %s", twin, strings.Join(got[t], "; "))
		}
	}
	r.logf("final reads: every node answered alike for %d of %d twins", agree, len(r.twins))
}

// readTelemetry reads every device's stored telemetry through every node.
func (r *runner) readTelemetry(ctx context.Context) []TelemetryView {
	views := make([]TelemetryView, r.cfg.Nodes)
	var wg sync.WaitGroup
	for i := 1; i <= r.cfg.Nodes; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			n := r.nw.Node(i)
			v := TelemetryView{Node: n.Name(), MIDs: map[string][]string{}}
			for _, d := range r.devices {
				var items struct {
					Items []struct {
						MID string `json:"mid"`
					} `json:"items"`
				}
				err := r.retry(ctx, 15*time.Second, "telemetry of "+d.ID+" via "+n.Name(), func() (bool, error) {
					a := r.rest.do(ctx, n.HTTPURL(), "GET", "/api/v1/twins/"+url.PathEscape(d.ID)+"/telemetry?limit=10000", nil)
					if a.err != nil || a.status != 200 {
						return false, nil
					}
					return true, json.Unmarshal(a.body, &items)
				})
				if err != nil {
					v.Err = strings.TrimSpace(v.Err + " " + err.Error())
					continue
				}
				mids := []string{}
				for _, it := range items.Items {
					mids = append(mids, it.MID)
				}
				v.MIDs[d.ID] = mids
			}
			views[i-1] = v
		}(i)
	}
	wg.Wait()
	return views
}

// writesOnly leaves out reads and CAS answered 412: a 412 only observes the
// version, like a read.
func writesOnly(ops []Op) []Op {
	var out []Op
	for _, op := range ops {
		if op.Input.Kind != Read && !op.Output.Precondition {
			out = append(out, op)
		}
	}
	return out
}

func (r *runner) setDown(i int, down bool) {
	r.mu.Lock()
	r.down[i] = down
	r.mu.Unlock()
}

// supervise does what systemd does for a node (Restart=on-failure,
// RestartSec=1): a node that exited although the nemesis did not stop it
// is recorded and started again.
func (r *runner) supervise(ctx context.Context) {
	for ctx.Err() == nil {
		sleep(ctx, time.Second)
		for i := 1; i <= r.cfg.Nodes && ctx.Err() == nil; i++ {
			n := r.nw.Node(i)
			r.mu.Lock()
			down := r.down[i]
			r.mu.Unlock()
			if down || n.Running() {
				continue
			}
			ev := fmt.Sprintf("+%.1fs %s exited on its own (%s)", time.Since(r.start).Seconds(), n.Name(), n.LastExit())
			r.mu.Lock()
			r.selfExits = append(r.selfExits, ev)
			r.mu.Unlock()
			r.logf("supervisor: %s; starting it again", ev[strings.Index(ev, " ")+1:])
			if err := n.Restart(ctx); err != nil {
				r.logf("supervisor: %s did not start: %v", n.Name(), err)
			}
		}
	}
}
