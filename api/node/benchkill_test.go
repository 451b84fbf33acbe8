package node

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/loadgen"
	"github.com/twinmesh/twinmesh/internal/testutil"
)

// The node is SIGKILLed in the middle of a bench run at full QoS 1 speed;
// after a restart on the same data folder, every message that got a PUBACK
// is in the warm store (PUBACK only after the commit is durable).
func TestBenchSIGKILLKeepsEveryPUBACKed(t *testing.T) {
	const devices = 40
	data := t.TempDir()
	flags := []string{"--device-rate", "1000000", "--device-burst", "1000000"}
	n := testutil.Start(t, data, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	creds, err := provision(ctx, n.URL(), n.Token, devices)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := make([][]int, devices)
	var killedAt time.Time
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		time.Sleep(3 * time.Second)
		mu.Lock()
		killedAt = time.Now()
		mu.Unlock()
		n.Kill()
	}()
	res, err := loadgen.Run(ctx, loadgen.Config{Broker: n.Addr("mqtt"), Devices: devices, Duration: 6 * time.Second, QoS: 1,
		Credentials: creds, OnAck: func(d, seq int) {
			mu.Lock()
			acked[d] = append(acked[d], seq)
			mu.Unlock()
		}})
	<-killed
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	total := 0
	for _, a := range acked {
		total += len(a)
	}
	t.Logf("%d messages acknowledged before the SIGKILL at %v, %d failed after it", total, killedAt.Format(time.StampMilli), res.Errors)
	if total < devices {
		t.Fatalf("only %d messages acknowledged before the kill", total)
	}

	n2 := testutil.Start(t, data, flags...)
	c := n2.Client()
	missing := 0
	for d := 0; d < devices; d++ {
		var hist struct {
			Items []struct {
				Points map[string]any `json:"points"`
			} `json:"items"`
		}
		body := c.MustDo(t, "GET", fmt.Sprintf("/api/v1/twins/bench-%d/telemetry?limit=10000", d), nil, 200)
		if err := json.Unmarshal(body, &hist); err != nil {
			t.Fatal(err)
		}
		stored := map[int]bool{}
		for _, it := range hist.Items {
			if s, ok := it.Points["seq"].(float64); ok {
				stored[int(s)] = true
			}
		}
		for _, seq := range acked[d] {
			if !stored[seq] {
				missing++
				if missing <= 10 {
					t.Errorf("bench-%d: seq %d was PUBACKed but is not stored", d, seq)
				}
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d PUBACKed messages lost after SIGKILL", missing, total)
	}
}
