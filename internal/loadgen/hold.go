package loadgen

import (
	"context"
	"maps"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// HoldConfig describes idle sessions to open and hold: each device
// connects, publishes one QoS 1 message and then stays connected without
// traffic.
type HoldConfig struct {
	// Brokers are MQTT addresses; session i connects to Brokers[i % len].
	Brokers []string
	// Sources are local addresses to connect from, in turn (one port per
	// connection is taken from each source's ephemeral range, ~28,000 on
	// Linux); nil lets the system choose.
	Sources  []net.IP
	Sessions []Session
	// First is the index of Sessions[0] among all the run's devices (the
	// message's "seq" and the broker and source chosen depend on it).
	First int
	// Rate is new connections per second; 0 means as fast as Concurrency
	// allows.
	Rate float64
	// Concurrency bounds the connections being opened at once. Default 64.
	Concurrency int
	// Timeout bounds each session's connect and first message. Default 10 s.
	Timeout time.Duration
	// MaxFailures stops opening new sessions once that many failed (a node
	// at its limit answers every further one the same way, or not at
	// all). Default 100.
	MaxFailures int
	// Topic returns the telemetry topic of a client ID; nil means the IoT
	// Hub topic devices/{id}/messages/events/.
	Topic func(clientID string) string
	// Progress, when set, is called about every 250 ms while sessions are
	// being opened, from a goroutine Open owns, and once more at the end.
	Progress func(HoldStatus)
}

// HoldStatus is where opening the sessions stands.
type HoldStatus struct {
	Connected int64 `json:"connected"`
	Failed    int64 `json:"failed"`
	// Reasons counts failures by Reason.
	Reasons map[string]int64 `json:"reasons,omitempty"`
	// FirstError is the first failure's message.
	FirstError string `json:"firstError,omitempty"`
	// Elapsed is the time since Open started.
	Elapsed time.Duration `json:"elapsed"`
	// GaveUp is set when Open stopped early after MaxFailures failures.
	GaveUp bool `json:"gaveUp,omitempty"`
}

// Holder holds open sessions until Close.
type Holder struct {
	cfg   HoldConfig
	start time.Time

	mu      sync.Mutex
	conns   []*Conn
	status  HoldStatus
	stopped atomic.Bool
}

// Open opens cfg.Sessions (at cfg.Rate, cfg.Concurrency at a time) and
// returns once each was opened or failed, or opening gave up, or ctx ended.
// Close the Holder in every case.
func Open(ctx context.Context, cfg HoldConfig) (*Holder, HoldStatus) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 100
	}
	if cfg.Topic == nil {
		cfg.Topic = func(id string) string { return "devices/" + id + "/messages/events/" }
	}
	h := &Holder{cfg: cfg, start: time.Now(), conns: make([]*Conn, 0, len(cfg.Sessions))}
	lim := rate.NewLimiter(rate.Inf, 1)
	if cfg.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(cfg.Rate), max(1, int(cfg.Rate/20)))
	}
	done := make(chan struct{})
	var progress sync.WaitGroup
	if cfg.Progress != nil {
		progress.Add(1)
		go func() {
			defer progress.Done()
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					cfg.Progress(h.Status())
					return
				case <-t.C:
					cfg.Progress(h.Status())
				}
			}
		}()
	}
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	for i, s := range cfg.Sessions {
		if ctx.Err() != nil || h.stopped.Load() {
			break
		}
		if err := lim.Wait(ctx); err != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h.openOne(ctx, cfg.First+i, s)
		}()
	}
	wg.Wait()
	close(done)
	progress.Wait()
	return h, h.Status()
}

// openOne opens one session and publishes its message.
func (h *Holder) openOne(ctx context.Context, n int, s Session) {
	cctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	var src net.IP
	if len(h.cfg.Sources) > 0 {
		src = h.cfg.Sources[n%len(h.cfg.Sources)]
	}
	c, err := DialMQTT(cctx, h.cfg.Brokers[n%len(h.cfg.Brokers)], src, s)
	if err == nil {
		payload := `{"temperature":` + strconv.FormatFloat(20+float64(n%100)/10, 'f', 1, 64) +
			`,"humidity":` + strconv.Itoa(30+n%40) + `,"seq":0}`
		left := time.Until(deadlineOf(cctx))
		if err = c.PublishQoS1(h.cfg.Topic(s.ClientID), []byte(payload), left); err != nil {
			c.c.Close()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.status.Failed++
		if h.status.Reasons == nil {
			h.status.Reasons = map[string]int64{}
		}
		h.status.Reasons[Reason(err)]++
		if h.status.FirstError == "" {
			h.status.FirstError = s.ClientID + ": " + err.Error()
		}
		if h.status.Failed >= int64(h.cfg.MaxFailures) && !h.status.GaveUp {
			h.status.GaveUp = true
			h.stopped.Store(true)
		}
		return
	}
	h.conns = append(h.conns, c)
	h.status.Connected++
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// Status returns a copy of where opening stands.
func (h *Holder) Status() HoldStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.status
	s.Reasons = maps.Clone(s.Reasons)
	s.Elapsed = time.Since(h.start)
	return s
}

// Check pings every held session (64 at a time, each within timeout) and
// returns how many answered: the sessions the broker still holds.
func (h *Holder) Check(ctx context.Context, timeout time.Duration) int {
	h.mu.Lock()
	conns := h.conns
	h.mu.Unlock()
	var alive atomic.Int64
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, c := range conns {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if c.Ping(timeout) == nil {
				alive.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(alive.Load())
}

// Close disconnects every held session.
func (h *Holder) Close() {
	h.mu.Lock()
	conns := h.conns
	h.conns = nil
	h.mu.Unlock()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, c := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = c.Close()
		}()
	}
	wg.Wait()
}
