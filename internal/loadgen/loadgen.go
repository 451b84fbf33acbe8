// Package loadgen drives MQTT telemetry load: N simulated devices, one paho
// client each, publishing JSON telemetry at QoS 0 or 1 for a duration. It
// measures throughput and publish latency (PUBACK latency at QoS 1) with a
// fixed-size log-bucket histogram, so memory does not grow with the run.
// It also runs the baseline it is compared with: a bare embedded mochi
// broker with no twinmesh hooks.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/twinmesh/twinmesh/internal/mochiclose"
)

// Config describes one load run.
type Config struct {
	Broker string // host:port
	// Brokers, when set, spreads the devices over several brokers (the
	// nodes of a cluster): device i connects to Brokers[i % len(Brokers)].
	Brokers  []string
	Devices  int // default 1000
	Duration time.Duration
	QoS      byte
	// Rate is messages per second per device; 0 means as fast as the
	// broker allows with one message in flight per device.
	Rate float64
	// Credentials returns the MQTT client ID, user name and password of
	// device i; nil means "dev-i" with no credentials.
	Credentials func(i int) (clientID, username, password string, err error)
	// Topic returns the telemetry topic of a client; nil means the IoT Hub
	// topic devices/{id}/messages/events/.
	Topic              func(clientID string) string
	ConnectConcurrency int       // default 50
	Progress           io.Writer // one status line per second, may be nil
	// OnAck, when set, is called with the device index and the message's
	// seq (its payload's "seq") for every message the broker acknowledged
	// (QoS 1: PUBACK; QoS 0: written to the socket), from the device's
	// goroutine.
	OnAck func(device, seq int)
	// OnStart, when set, is called once every client is connected, as
	// the measured window begins.
	OnStart func()
}

// Result is what a run measured.
type Result struct {
	Sent, Acked, Errors int64
	Duration            time.Duration
	MsgsPerSec          float64
	Latency             struct{ P50, P99, Max time.Duration }
	ConnectTime         time.Duration
}

// histogram buckets latencies logarithmically (2 % wide) from 1 µs to ~10 min.
type histogram struct {
	counts [1400]atomic.Int64
	max    atomic.Int64
}

const growth = 1.02

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	b := int(math.Log(us) / math.Log(growth))
	return min(b, 1399)
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (h *histogram) quantile(q float64) time.Duration {
	var total int64
	for i := range h.counts {
		total += h.counts[i].Load()
	}
	if total == 0 {
		return 0
	}
	want := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= want {
			return time.Duration(math.Pow(growth, float64(i+1)) * float64(time.Microsecond))
		}
	}
	return time.Duration(h.max.Load())
}

// Run connects the devices, publishes until cfg.Duration has passed (or ctx
// is done), disconnects them and reports.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Devices <= 0 {
		cfg.Devices = 1000
	}
	if cfg.ConnectConcurrency <= 0 {
		cfg.ConnectConcurrency = 50
	}
	if cfg.Duration <= 0 {
		return Result{}, errors.New("loadgen: Duration must be positive")
	}
	if cfg.Topic == nil {
		cfg.Topic = func(id string) string { return "devices/" + id + "/messages/events/" }
	}
	if cfg.Credentials == nil {
		cfg.Credentials = func(i int) (string, string, string, error) { return "dev-" + strconv.Itoa(i), "", "", nil }
	}
	var res Result
	clients := make([]paho.Client, cfg.Devices)
	ids := make([]string, cfg.Devices)
	start := time.Now()
	sem := make(chan struct{}, cfg.ConnectConcurrency)
	errs := make(chan error, cfg.Devices)
	var wg sync.WaitGroup
	for i := 0; i < cfg.Devices; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id, user, pass, err := cfg.Credentials(i)
			if err != nil {
				errs <- err
				return
			}
			broker := cfg.Broker
			if len(cfg.Brokers) > 0 {
				broker = cfg.Brokers[i%len(cfg.Brokers)]
			}
			o := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(id).SetUsername(user).SetPassword(pass).
				SetAutoReconnect(false).SetCleanSession(true).SetConnectTimeout(30 * time.Second).
				SetWriteTimeout(30 * time.Second).SetMaxResumePubInFlight(1)
			c := paho.NewClient(o)
			if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				errs <- fmt.Errorf("connect %s: %v", id, tok.Error())
				return
			}
			clients[i], ids[i] = c, id
		}()
	}
	wg.Wait()
	close(errs)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Disconnect(100)
			}
		}
	}()
	if err := <-errs; err != nil {
		return res, err
	}
	res.ConnectTime = time.Since(start)

	var hist histogram
	var sent, acked, failed atomic.Int64
	if cfg.OnStart != nil {
		cfg.OnStart()
	}
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	begin := time.Now()
	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if cfg.Progress != nil {
		progressDone.Add(1)
		go func() {
			defer progressDone.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					fmt.Fprintln(cfg.Progress)
					return
				case <-t.C:
					el := time.Since(begin)
					fmt.Fprintf(cfg.Progress, "\r  %4.0fs  %9d msgs  %8.0f msgs/s  p99 %-10v", el.Seconds(), acked.Load(),
						float64(acked.Load())/el.Seconds(), hist.quantile(0.99).Round(10*time.Microsecond))
				}
			}
		}()
	}
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := cfg.Topic(ids[i])
			var interval time.Duration
			if cfg.Rate > 0 {
				interval = time.Duration(float64(time.Second) / cfg.Rate)
			}
			next := time.Now()
			for seq := 0; runCtx.Err() == nil; seq++ {
				if interval > 0 {
					next = next.Add(interval)
					if d := time.Until(next); d > 0 {
						select {
						case <-time.After(d):
						case <-runCtx.Done():
							return
						}
					}
				}
				payload := `{"temperature":` + strconv.FormatFloat(20+float64(seq%100)/10, 'f', 1, 64) +
					`,"humidity":` + strconv.Itoa(30+seq%40) + `,"seq":` + strconv.Itoa(seq) + `}`
				t0 := time.Now()
				tok := c.Publish(topic, cfg.QoS, false, payload)
				sent.Add(1)
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					failed.Add(1)
					if !c.IsConnected() {
						return // the broker went away: publishing on would only spin
					}
					continue
				}
				hist.add(time.Since(t0))
				acked.Add(1)
				if cfg.OnAck != nil {
					cfg.OnAck(i, seq)
				}
			}
		}()
	}
	wg.Wait()
	res.Duration = time.Since(begin)
	close(stopProgress)
	progressDone.Wait()
	res.Sent, res.Acked, res.Errors = sent.Load(), acked.Load(), failed.Load()
	res.MsgsPerSec = float64(res.Acked) / res.Duration.Seconds()
	res.Latency.P50, res.Latency.P99 = hist.quantile(0.5), hist.quantile(0.99)
	res.Latency.Max = time.Duration(hist.max.Load())
	return res, nil
}

// StartBareBroker runs a plain embedded mochi broker (allow-all auth, no
// other hooks) on a free loopback port: the baseline twinmesh is compared with.
func StartBareBroker(_ context.Context) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	// mochi logs connections at INFO to stdout by default: the bench's
	// output is its own.
	s := mochi.New(&mochi.Options{InlineClient: false, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		_ = ln.Close()
		return "", nil, err
	}
	if err := s.AddListener(listeners.NewNet("bare", ln)); err != nil {
		_ = ln.Close()
		return "", nil, err
	}
	if err := s.Serve(); err != nil {
		return "", nil, err
	}
	return ln.Addr().String(), func() { _ = mochiclose.Close(s, []io.Closer{ln}, 3*time.Second, 5*time.Second) }, nil
}

// ProcStats reads a process's CPU time (user+system) and resident set size
// from /proc (Linux).
func ProcStats(pid int) (cpuSeconds float64, rssBytes int64, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 22 {
		return 0, 0, fmt.Errorf("loadgen: short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	const ticks = 100 // USER_HZ on Linux
	rssPages, _ := strconv.ParseInt(fields[21], 10, 64)
	return (utime + stime) / ticks, rssPages * int64(os.Getpagesize()), nil
}
