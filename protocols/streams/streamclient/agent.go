package streamclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Agent is the device side of streams: it accepts requests for the
// stream names its Targets allow, and joins each stream to a TCP
// connection to that name's target. Nothing else is ever dialled.
type Agent struct {
	// Targets maps stream names to the host:port each reaches.
	Targets map[string]string
	// MaxStreams bounds the streams open at once; default 16.
	MaxStreams int
	// DialTimeout bounds connecting to a target and to the node; default 10 s.
	DialTimeout time.Duration
	// TLS configures wss:// connect-backs (nil: the system's roots).
	TLS *tls.Config
	// Logger; nil is slog.Default().
	Logger *slog.Logger

	mu   sync.Mutex
	open int
}

// ParseTargets parses an --allow list: name=host:port[,name=host:port…].
func ParseTargets(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, addr, ok := strings.Cut(part, "=")
		if !ok || name == "" || strings.ContainsAny(name, "/+#") {
			return nil, fmt.Errorf("allow %q: want name=host:port", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("allow %q: %v", part, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("allow: %s named twice", name)
		}
		out[name] = addr
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("allow: no target")
	}
	return out, nil
}

// Handle answers one stream request: answer is called once with the
// status to publish (403 for a name the agent does not allow, 503 over
// MaxStreams, 502 when the target cannot be reached, 200 to accept).
// Having accepted, Handle connects back to the node and relays until the
// stream ends or ctx is done. It blocks for the stream's life: call it on
// a goroutine of the caller's.
func (a *Agent) Handle(ctx context.Context, req Request, answer func(status int)) {
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("name", req.Name, "rid", req.RID)
	timeout := a.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	target, ok := a.Targets[req.Name]
	if !ok {
		log.Warn("stream refused: name not allowed")
		answer(http.StatusForbidden)
		return
	}
	if !a.take() {
		log.Warn("stream refused: too many open")
		answer(http.StatusServiceUnavailable)
		return
	}
	defer a.give()
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, timeout)
	tcp, err := d.DialContext(dctx, "tcp", target)
	cancel()
	if err != nil {
		log.Warn("stream refused: target unreachable", "target", target, "err", err)
		answer(http.StatusBadGateway)
		return
	}
	answer(http.StatusOK)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+req.Token)
	dctx, cancel = context.WithTimeout(ctx, timeout)
	ws, err := dial(dctx, req.URL, h, a.TLS)
	cancel()
	if err != nil {
		_ = tcp.Close()
		log.Warn("stream: connect back failed", "url", req.URL, "err", err)
		return
	}
	start := time.Now()
	log.Info("stream opened", "target", target)
	sent, recv := Join(ctx, tcp, ws)
	log.Info("stream closed", "target", target, "sent", sent, "received", recv, "duration", time.Since(start).Round(time.Millisecond))
}

func (a *Agent) take() bool {
	limit := a.MaxStreams
	if limit <= 0 {
		limit = 16
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.open >= limit {
		return false
	}
	a.open++
	return true
}

func (a *Agent) give() {
	a.mu.Lock()
	a.open--
	a.mu.Unlock()
}
