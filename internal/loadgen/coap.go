package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"
)

// CoAPConfig describes one CoAP load run: devices, one go-coap client
// (one UDP socket) each, posting confirmable JSON telemetry, one request in
// flight per device.
type CoAPConfig struct {
	// Addrs are the servers (host:port); device i sends to
	// Addrs[i % len(Addrs)].
	Addrs    []string
	Devices  int // default 1000
	Duration time.Duration
	// Request returns device i's telemetry path and the options its
	// requests carry (a SAS token's Uri-Query, say); nil means
	// /devices/dev-i/messages/events with none.
	Request  func(i int) (path string, opts []message.Option, err error)
	Progress io.Writer // one status line per second, may be nil
}

// RunCoAP posts confirmable telemetry until cfg.Duration has passed (or ctx
// is done) and reports: a message counts as acknowledged when its answer
// is 2.04 (Changed); latency is request to answer.
func RunCoAP(ctx context.Context, cfg CoAPConfig) (Result, error) {
	if cfg.Devices <= 0 {
		cfg.Devices = 1000
	}
	if cfg.Duration <= 0 || len(cfg.Addrs) == 0 {
		return Result{}, errors.New("loadgen: Duration and Addrs are required")
	}
	if cfg.Request == nil {
		cfg.Request = func(i int) (string, []message.Option, error) {
			return "/devices/dev-" + strconv.Itoa(i) + "/messages/events", nil, nil
		}
	}
	var res Result
	start := time.Now()
	clients := make([]*udpclient.Conn, cfg.Devices)
	paths := make([]string, cfg.Devices)
	opts := make([][]message.Option, cfg.Devices)
	defer func() {
		for _, c := range clients {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	for i := range clients {
		p, o, err := cfg.Request(i)
		if err != nil {
			return res, err
		}
		c, err := udp.Dial(cfg.Addrs[i%len(cfg.Addrs)], options.WithErrors(func(error) {}))
		if err != nil {
			return res, fmt.Errorf("dial %s: %w", cfg.Addrs[i%len(cfg.Addrs)], err)
		}
		clients[i], paths[i], opts[i] = c, p, o
	}
	res.ConnectTime = time.Since(start)

	var hist histogram
	var sent, acked, failed atomic.Int64
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	begin := time.Now()
	stop := progress(cfg.Progress, begin, &acked, &hist)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; runCtx.Err() == nil; seq++ {
				payload := `{"temperature":` + strconv.FormatFloat(20+float64(seq%100)/10, 'f', 1, 64) +
					`,"humidity":` + strconv.Itoa(30+seq%40) + `,"seq":` + strconv.Itoa(seq) + `}`
				t0 := time.Now()
				sent.Add(1)
				rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
				r, err := c.Post(rctx, paths[i], message.AppJSON, strings.NewReader(payload), opts[i]...)
				rcancel()
				if err != nil || r.Code() != codes.Changed {
					failed.Add(1)
					continue
				}
				hist.add(time.Since(t0))
				acked.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Duration = time.Since(begin)
	stop()
	res.Sent, res.Acked, res.Errors = sent.Load(), acked.Load(), failed.Load()
	res.MsgsPerSec = float64(res.Acked) / res.Duration.Seconds()
	res.Latency.P50, res.Latency.P99 = hist.quantile(0.5), hist.quantile(0.99)
	res.Latency.Max = time.Duration(hist.max.Load())
	return res, nil
}

// progress prints a status line every second until the returned func is
// called; w may be nil.
func progress(w io.Writer, begin time.Time, acked *atomic.Int64, hist *histogram) func() {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintln(w)
				return
			case <-t.C:
				el := time.Since(begin)
				fmt.Fprintf(w, "\r  %4.0fs  %9d msgs  %8.0f msgs/s  p99 %-10v", el.Seconds(), acked.Load(),
					float64(acked.Load())/el.Seconds(), hist.quantile(0.99).Round(10*time.Microsecond))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// StartBareCoAP runs a plain go-coap UDP server on a free loopback port
// that answers every POST 2.04 and stores nothing: the baseline twinmesh's
// CoAP adapter is compared with. It asks for the same 4 MiB socket receive
// buffer as twinmesh's listener; everything else is go-coap's defaults.
func StartBareCoAP(_ context.Context) (addr string, stop func(), err error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return "", nil, err
	}
	_ = c.SetReadBuffer(4 << 20) // as twinmesh's listener asks
	l := coapnet.NewUDPConn("udp", c)
	s := udpserver.New(options.WithErrors(func(error) {}),
		options.WithHandlerFunc(func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
			if r.Code() == codes.POST {
				_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
			}
		}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	return l.LocalAddr().String(), func() { s.Stop(); <-done }, nil
}
