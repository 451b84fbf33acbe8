package node

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/internal/loadgen"
	"github.com/twinmesh/twinmesh/internal/testutil"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestFanoutBenchmark: S WebSocket subscribers on one building while D
// devices publish; reports MQTT-publish → WebSocket-frame latency and the
// node's memory. Opt-in: TWINMESH_BENCH_FANOUT=1 (see BENCHMARKS.md).
func TestFanoutBenchmark(t *testing.T) {
	if os.Getenv("TWINMESH_BENCH_FANOUT") != "1" {
		t.Skip("set TWINMESH_BENCH_FANOUT=1 to measure")
	}
	subs := envInt("FANOUT_SUBSCRIBERS", 1000)
	devices := envInt("FANOUT_DEVICES", 1000)
	perSec := envInt("FANOUT_MSGS_PER_SEC", 100) // total publish rate
	dur := time.Duration(envInt("FANOUT_SECONDS", 20)) * time.Second

	n := testutil.Start(t, t.TempDir(), "--device-rate", "1000", "--device-burst", "1000", "--max-connections", "5000")
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/bld", `{"kind":"building"}`, 201)
	for r := 0; r < 10; r++ {
		api.MustDo(t, "PUT", fmt.Sprintf("/api/v1/entities/room-%d", r), `{"kind":"room","parent":"bld"}`, 201)
	}
	devs := make([]device, devices)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range devs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			devs[i] = register(t, api, fmt.Sprintf("dev-%d", i), fmt.Sprintf(`{"parent":"room-%d"}`, i%10))
		}()
	}
	wg.Wait()
	_, rss0, _ := loadgen.ProcStats(n.Cmd.Process.Pid)

	var mu sync.Mutex
	var lat []time.Duration
	var frames, missed atomic.Int64
	wsURL := "ws://" + n.Addr("http") + "/api/v1/ws?access_token=" + url.QueryEscape(n.Token)
	conns := make([]*websocket.Conn, subs)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
		if err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
		conns[i] = c
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"op":"subscribe","entity":"bld","subtree":true,"events":["telemetry"]}`)); err != nil {
			t.Fatal(err)
		}
	}
	var readers sync.WaitGroup
	for _, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				var f struct {
					Data struct {
						Points map[string]float64 `json:"points"`
					} `json:"data"`
					Missed int64 `json:"missed"`
				}
				if json.Unmarshal(b, &f) != nil || f.Data.Points == nil {
					continue
				}
				sent := time.UnixMicro(int64(f.Data.Points["sentMicros"]))
				d := time.Since(sent)
				frames.Add(1)
				missed.Add(f.Missed)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	clients := make([]paho.Client, devices)
	for i, d := range devs {
		c, err := connect("tcp://"+n.Addr("mqtt"), d.ID, "hub.test/"+d.ID+"/?api-version=1", token(t, d.ID, d.Primary, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	time.Sleep(time.Second)
	start := time.Now()
	published := 0
	tick := time.NewTicker(time.Second / time.Duration(perSec))
	for time.Since(start) < dur {
		<-tick.C
		c := clients[published%devices]
		payload := fmt.Sprintf(`{"temperature":%d,"sentMicros":%d}`, 20+published%10, time.Now().UnixMicro())
		c.Publish(fmt.Sprintf("devices/dev-%d/messages/events/", published%devices), 0, false, payload)
		published++
	}
	tick.Stop()
	time.Sleep(2 * time.Second)
	_, rss1, _ := loadgen.ProcStats(n.Cmd.Process.Pid)
	for _, c := range conns {
		c.Close()
	}
	readers.Wait()
	for _, c := range clients {
		c.Disconnect(0)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		t.Fatal("no frames received")
	}
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	t.Logf("subscribers=%d devices=%d published=%d (%d/s) frames=%d (expected %d) missed=%d  latency p50=%v p99=%v max=%v  node RSS %d MiB → %d MiB",
		subs, devices, published, perSec, frames.Load(), int64(published)*int64(subs), missed.Load(),
		q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), rss0>>20, rss1>>20)
}
