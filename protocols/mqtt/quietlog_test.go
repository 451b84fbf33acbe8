package mqtt

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Issue 12, attack 4: refused publishes were each logged with the whole
// packet. A hundred refusals of 300 KB publishes from one client now give
// one line, without the packet; other clients still get theirs.
func TestQuietHandlerLimitsMochiLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newQuietHandler(slog.NewTextHandler(&buf, nil), 10*time.Second))
	payload := strings.Repeat("x", 300<<10)
	for i := 0; i < 100; i++ {
		log.Error("error processing packet", "error", "packet too large", "client", "dev-1", "listener", "mqtt", "pk", payload)
	}
	log.Error("error processing packet", "error", "packet too large", "client", "dev-2", "pk", payload)
	log.Info("client connected", "client", "dev-3")
	out := buf.String()
	if n := strings.Count(out, "\n"); n != 2 {
		t.Fatalf("%d lines logged, want 2 (one per client):\n%.500s", n, out)
	}
	if buf.Len() > 1024 {
		t.Fatalf("%d bytes logged: the packet was not left out", buf.Len())
	}
	if !strings.Contains(out, "client=dev-1") || !strings.Contains(out, "client=dev-2") || strings.Contains(out, "dev-3") {
		t.Fatalf("unexpected lines:\n%s", out)
	}
}

// Issue 18: mochi's lines about refusals the hook logs itself (an empty
// message with "bad username or password", "error processing packet" with
// "not authorized") are dropped; another connection error keeps a message.
func TestQuietHandlerLeavesRefusalsToTheHook(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newQuietHandler(slog.NewTextHandler(&buf, nil), 10*time.Second))
	log.Warn("", "listener", "mqtt", "error", packets.ErrBadUsernameOrPassword)
	log.Warn("error processing packet", "error", packets.ErrNotAuthorized, "client", "dev-1", "listener", "mqtt", "pk", "…")
	log.Warn("", "listener", "mqtt", "error", packets.ErrNotAuthorized)
	log.Warn("", "listener", "mqtt", "error", errors.New("read connection: i/o timeout"))
	out := buf.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `msg="connection ended" listener=mqtt error="read connection: i/o timeout"`) {
		t.Fatalf("logged:\n%s", out)
	}
}
