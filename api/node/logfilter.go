package node

import (
	"context"
	"log/slog"
	"strings"
)

// stoppingHandler drops what memberlist logs when this node closes its own
// gossip sockets while it stops ("Failed to send gossip to …: use of
// closed network connection", at WARN): a graceful stop logs nothing
// alarming. Everything else passes through.
type stoppingHandler struct{ slog.Handler }

func (h stoppingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "use of closed network connection") {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h stoppingHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return stoppingHandler{h.Handler.WithAttrs(a)}
}

func (h stoppingHandler) WithGroup(name string) slog.Handler {
	return stoppingHandler{h.Handler.WithGroup(name)}
}

var _ slog.Handler = stoppingHandler{}
