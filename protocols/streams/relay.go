package streams

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// closeGrace is how long a stream waits, once one side closed, for the
// other to answer the close it was passed before both are cut.
const closeGrace = 2 * time.Second

// relay is one open stream: two WebSockets and a pump each way.
type relay struct {
	id, device, name, who string
	valid                 func() bool // the caller's token still works; nil: always
	svc, dev              *websocket.Conn

	up, down atomic.Int64 // bytes to the device, to the service
	last     atomic.Int64 // unix nanoseconds of the last byte either way

	cfg        Config
	ctx        context.Context // done when the stream is cut
	cut        context.CancelFunc
	killed     chan struct{} // closed by stop
	killOnce   sync.Once
	reasonOnce sync.Once
	reason     string
}

func (r *relay) init(cfg Config) {
	r.cfg = cfg
	r.ctx, r.cut = context.WithCancel(context.Background())
	r.killed = make(chan struct{})
	r.last.Store(cfg.Now().UnixNano())
}

// stop ends the stream at once (idle, device disabled, node stopping).
// It does not block.
func (r *relay) stop(why string) {
	r.setReason(why)
	r.killOnce.Do(func() { close(r.killed) })
}

func (r *relay) setReason(why string) { r.reasonOnce.Do(func() { r.reason = why }) }

// why is the first reason the stream ended for; read it after relay.
func (r *relay) why() string { return r.reason }

// relay pumps both ways until both pumps ended, or the stream is cut.
func (r *relay) relay(m *metrics) {
	done := make(chan string, 2)
	go func() { done <- r.pump(r.svc, r.dev, &r.up, m.bytes.WithLabelValues("to_device"), "service", "device") }()
	go func() {
		done <- r.pump(r.dev, r.svc, &r.down, m.bytes.WithLabelValues("to_service"), "device", "service")
	}()
	every := max(min(r.cfg.IdleTimeout/2, time.Second), 10*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var grace <-chan time.Time
	killed := r.killed
	for running := 2; running > 0; {
		select {
		case why := <-done:
			running--
			r.setReason(why)
			if running == 1 {
				grace = time.After(closeGrace)
			}
		case <-killed:
			killed = nil
			r.cutBoth(websocket.ClosePolicyViolation, r.why())
		case <-grace:
			grace = nil
			r.cutBoth(websocket.CloseGoingAway, "close not answered")
		case <-tick.C:
			if r.cfg.Now().Sub(time.Unix(0, r.last.Load())) >= r.cfg.IdleTimeout {
				r.stop("idle timeout")
			}
		}
	}
	r.cut()
	_ = r.svc.Close()
	_ = r.dev.Close()
}

// cutBoth sends both sides a close frame and closes their connections,
// which ends the pumps' reads and writes.
func (r *relay) cutBoth(code int, text string) {
	r.cut()
	if len(text) > 120 {
		text = text[:120] // a close frame's payload is at most 125 bytes
	}
	msg := websocket.FormatCloseMessage(code, text)
	dl := time.Now().Add(time.Second)
	_ = r.svc.WriteControl(websocket.CloseMessage, msg, dl)
	_ = r.dev.WriteControl(websocket.CloseMessage, msg, dl)
	_ = r.svc.Close()
	_ = r.dev.Close()
}

// pump copies frames from src to dst, a chunk at a time, until src closes
// or fails; then it passes src's close on to dst. It returns why it ended.
func (r *relay) pump(src, dst *websocket.Conn, n *atomic.Int64, bytes prometheus.Counter, from, to string) string {
	var lim *rate.Limiter
	if r.cfg.BytesPerSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(r.cfg.BytesPerSecond), max(r.cfg.BytesPerSecond, r.cfg.ChunkSize))
	}
	buf := make([]byte, r.cfg.ChunkSize)
	for {
		_, rd, err := src.NextReader()
		if err != nil {
			passClose(dst, err)
			return from + " closed"
		}
		for {
			k, err := rd.Read(buf)
			if k > 0 {
				if lim != nil && lim.WaitN(r.ctx, k) != nil {
					return "stopped"
				}
				if err := dst.WriteMessage(websocket.BinaryMessage, buf[:k]); err != nil {
					return to + " gone"
				}
				n.Add(int64(k))
				bytes.Add(float64(k))
				r.last.Store(r.cfg.Now().UnixNano())
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				passClose(dst, err)
				return from + " closed"
			}
		}
	}
}

// passClose sends dst the close src ended with (its code and text), or
// "going away" when src failed without one.
func passClose(dst *websocket.Conn, err error) {
	code, text := websocket.CloseGoingAway, ""
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure && ce.Code != websocket.CloseTLSHandshake {
		code, text = ce.Code, ce.Text
	}
	_ = dst.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
}
