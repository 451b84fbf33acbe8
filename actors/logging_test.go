package actors

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestProtoactorLogsOfAGracefulStop: the endpoint writer's ERROR lines
// about streams closed on purpose (by this node, or by a member's graceful
// stop) are dropped; a connection lost otherwise is still logged, and
// nothing below WARN gets through.
func TestProtoactorLogsOfAGracefulStop(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(protoactorHandler{minLevel{slog.NewTextHandler(&buf, nil), slog.LevelWarn}}).With("component", "protoactor")
	log.Error("EndpointWriter lost connection", "address", "127.0.0.1:1", "error", errors.New("rpc error: code = Canceled desc = grpc: the client connection is closing"))
	log.Error("EndpointWriter lost connection", "address", "127.0.0.1:2", "error",
		errors.New(`rpc error: code = Unavailable desc = closing transport due to: connection error: desc = "error reading from server: EOF", received prior goaway: code: NO_ERROR, debug data: "graceful_stop"`))
	log.Info("topology changed")
	log.Error("EndpointWriter lost connection", "address", "127.0.0.1:3", "error", errors.New("rpc error: code = Unavailable desc = connection refused"))
	out := buf.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "127.0.0.1:3") {
		t.Fatalf("logged:\n%s", out)
	}
}
