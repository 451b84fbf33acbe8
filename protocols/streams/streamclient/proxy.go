package streamclient

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Proxy forwards a local TCP port through streams: every connection it
// accepts gets a stream of its own to Device's Name.
type Proxy struct {
	Dialer *Dialer
	Device string
	Name   string
	// Logger; nil is slog.Default().
	Logger *slog.Logger
}

// Serve accepts connections on l until ctx is done, then closes l and
// returns once every forwarded connection has ended.
func (p *Proxy) Serve(ctx context.Context, l net.Listener) error {
	log := p.Logger
	if log == nil {
		log = slog.Default()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.forward(ctx, log, c)
		}()
	}
}

func (p *Proxy) forward(ctx context.Context, log *slog.Logger, c net.Conn) {
	start := time.Now()
	ws, err := p.Dialer.Dial(ctx, p.Device, p.Name)
	if err != nil {
		log.Warn("stream not opened", "device", p.Device, "name", p.Name, "client", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	log.Info("stream opened", "device", p.Device, "name", p.Name, "client", c.RemoteAddr().String())
	sent, recv := Join(ctx, c, ws)
	log.Info("stream closed", "device", p.Device, "name", p.Name, "sent", sent, "received", recv,
		"duration", time.Since(start).Round(time.Millisecond))
}
