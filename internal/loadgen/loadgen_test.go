package loadgen

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestRunAgainstBareBroker(t *testing.T) {
	addr, stop, err := StartBareBroker(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, qos := range []byte{0, 1} {
		res, err := Run(context.Background(), Config{Broker: addr, Devices: 20, Duration: time.Second, QoS: qos})
		if err != nil {
			t.Fatal(err)
		}
		if res.Acked == 0 || res.Acked+res.Errors != res.Sent || res.MsgsPerSec <= 0 {
			t.Fatalf("qos %d: inconsistent %+v", qos, res)
		}
		if res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max*2 {
			t.Fatalf("qos %d: percentiles out of order %+v", qos, res.Latency)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 100; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	p50, p99 := h.quantile(0.5), h.quantile(0.99)
	if p50 < 48*time.Millisecond || p50 > 53*time.Millisecond || p99 < 97*time.Millisecond || p99 > 103*time.Millisecond {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
}

func TestProcStats(t *testing.T) {
	cpu, rss, err := ProcStats(os.Getpid())
	if err != nil || rss <= 0 || cpu < 0 {
		t.Fatalf("cpu %v rss %d err %v", cpu, rss, err)
	}
}
