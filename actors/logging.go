package actors

import (
	"context"
	"log/slog"
	"strings"
)

// minLevel wraps a handler and drops records below a level. protoactor logs
// every topology step at INFO; at our INFO those lines drown the node's own.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}

// protoactorHandler is the handler of protoactor's logs: WARN and above
// (minLevel), less what a graceful stop says at ERROR although nothing
// failed. When a member leaves, or this node stops, protoactor's endpoint
// manager closes its gRPC stream to that member, and the endpoint writer
// then logs "EndpointWriter lost connection" at ERROR with the gRPC code
// Canceled; and when the other member stops first, its gRPC server's
// GOAWAY says "graceful_stop". Both streams were closed on purpose, so
// those lines are dropped; a connection lost any other way (a crash:
// Unavailable without a graceful GOAWAY, EOF) is still logged.
type protoactorHandler struct {
	minLevel
}

func (h protoactorHandler) Handle(ctx context.Context, r slog.Record) error {
	if closedOnPurpose(r) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h protoactorHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return protoactorHandler{minLevel{h.Handler.WithAttrs(a), h.min}}
}

func (h protoactorHandler) WithGroup(name string) slog.Handler {
	return protoactorHandler{minLevel{h.Handler.WithGroup(name), h.min}}
}

// closedOnPurpose: an endpoint writer's stream that this node closed, or
// that the other member closed in a graceful stop.
func closedOnPurpose(r slog.Record) bool {
	if r.Message != "EndpointWriter lost connection" {
		return false
	}
	canceled := false
	r.Attrs(func(a slog.Attr) bool {
		v := a.Value.String()
		canceled = a.Key == "error" && (strings.Contains(v, "code = Canceled") || strings.Contains(v, `"graceful_stop"`))
		return !canceled
	})
	return canceled
}

var _ slog.Handler = protoactorHandler{}
