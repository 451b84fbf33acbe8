package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/protocols/streams/streamclient"
)

// TestEchoThroughAStream builds the example, runs it as a device of a real
// node, and talks to its echo service through a stream opened with
// streamclient.Dialer, the service side of the same package.
func TestEchoThroughAStream(t *testing.T) {
	bin := testutil.Build(t, "./examples/stream-device")
	n := testutil.Start(t, t.TempDir())
	var d struct{ PrimaryKey string }
	if err := json.Unmarshal(n.Client().MustDo(t, "PUT", "/api/v1/devices/echo-1", `{}`, 201), &d); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--mqtt", n.Addr("mqtt"), "--device", "echo-1", "--key", d.PrimaryKey)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	testutil.Eventually(t, 15*time.Second, "the device to be ready", func() bool { return strings.Contains(out.String(), "ready") })

	dialer := &streamclient.Dialer{Node: n.URL(), Token: n.Token}
	ws, err := dialer.Dial(ctx, "echo-1", "echo")
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	defer ws.Close()
	msg := bytes.Repeat([]byte("hello through a stream "), 1000)
	if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		t.Fatal(err)
	}
	var got []byte
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < len(msg) {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("the echo differs")
	}
	if _, err := dialer.Dial(ctx, "echo-1", "shell"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a name the device does not serve: %v, want 403", err)
	}
}

// lockedBuffer is written by exec's copying goroutine and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
