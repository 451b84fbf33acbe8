package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// benchRuleWhen is the condition of the --rules rules: evaluated on every
// telemetry message of every device (what rule evaluation costs), never
// true with the load generator's values (what actions would cost is not
// what is measured).
const benchRuleWhen = "telemetry.temperature > 1000000 + %d"

// createBenchRules stores n rules scoped to every device and returns a
// function that deletes them.
func createBenchRules(ctx context.Context, node, token string, n int) (func(), error) {
	client := &http.Client{Timeout: 30 * time.Second}
	do := func(ctx context.Context, method, path, body string) error {
		req, err := http.NewRequestWithContext(ctx, method, node+path, bytes.NewBufferString(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode >= 300 {
			msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
			return fmt.Errorf("%s %s: %s %s", method, path, res.Status, msg)
		}
		return nil
	}
	var made []string
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, id := range made {
			_ = do(cctx, "DELETE", "/api/v1/rules/"+id, "")
		}
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("bench-rule-%d", i)
		body := fmt.Sprintf(`{"scope":{"kind":"device"},"when":%q,"then":[{"alert":{"severity":"minor","message":"bench"}}]}`,
			fmt.Sprintf(benchRuleWhen, i))
		if err := do(ctx, "PUT", "/api/v1/rules/"+id, body); err != nil {
			cleanup()
			return nil, fmt.Errorf("create bench rules: %w", err)
		}
		made = append(made, id)
	}
	return cleanup, nil
}

// patchResult is what the --patch-clients REST clients measured.
type patchResult struct {
	Clients  int           `json:"clients"`
	OK       int64         `json:"ok"`
	Failed   int64         `json:"failed"`
	PerSec   float64       `json:"perSec"`
	P50      time.Duration `json:"p50"`
	P99      time.Duration `json:"p99"`
	Duration time.Duration `json:"duration"`
}

// restPatches is a running set of REST patch clients.
type restPatches struct {
	clients int
	start   time.Time
	wg      sync.WaitGroup
	mu      sync.Mutex
	lat     []time.Duration // of successful patches; bounded by maxPatchSamples
	ok, bad int64
}

// maxPatchSamples bounds the latencies kept (the first ones; at 20,000
// patches a second that is 25 s).
const maxPatchSamples = 500_000

// startPatches starts n clients, each sending desired merge patches to the
// bench devices in turn, one at a time, until ctx ends. n = 0 starts none
// (wait returns nil).
func startPatches(ctx context.Context, node, token string, n, devices int) *restPatches {
	l := &restPatches{clients: n, start: time.Now()}
	if n == 0 {
		return l
	}
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}
	client := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	for c := 0; c < n; c++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				dev := (c + i*n) % devices
				body := fmt.Sprintf(`{"desired":{"bench":{"client":%d,"n":%d}}}`, c, i)
				req, _ := http.NewRequestWithContext(ctx, "PATCH", fmt.Sprintf("%s/api/v1/twins/bench-%d", node, dev), bytes.NewBufferString(body))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/merge-patch+json")
				t0 := time.Now()
				res, err := client.Do(req)
				d := time.Since(t0)
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				if ctx.Err() != nil {
					return // the run ended: not counted
				}
				l.mu.Lock()
				if err == nil && res.StatusCode < 300 {
					l.ok++
					if len(l.lat) < maxPatchSamples {
						l.lat = append(l.lat, d)
					}
				} else {
					l.bad++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// wait waits for the clients (their context must have ended) and returns
// what they measured.
func (l *restPatches) wait() *patchResult {
	if l.clients == 0 {
		return nil
	}
	l.wg.Wait()
	r := &patchResult{Clients: l.clients, OK: l.ok, Failed: l.bad, Duration: time.Since(l.start)}
	r.PerSec = float64(r.OK) / r.Duration.Seconds()
	slices.Sort(l.lat)
	if n := len(l.lat); n > 0 {
		r.P50, r.P99 = l.lat[n/2], l.lat[min(n-1, n*99/100)]
	}
	return r
}
