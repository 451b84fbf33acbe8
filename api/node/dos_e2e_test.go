package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// Issue 12, attack 1: with its file descriptors exhausted by idle HTTP
// keep-alive connections, the node used to stop accepting MQTT connections
// for good (mochi's accept loop returned on the first "too many open
// files") while /readyz said ready. Now /readyz reports the failing
// listener, and once the connections are gone devices connect again.
func TestMQTTListenerSurvivesFDExhaustion(t *testing.T) {
	// The real binary under a 256-descriptor limit.
	wrapper := filepath.Join(t.TempDir(), "twinmesh-ulimit")
	script := fmt.Sprintf("#!/bin/sh\nulimit -n 256\nexec %q \"$@\"\n", testutil.Binary(t))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	n := testutil.StartBinary(t, wrapper, t.TempDir())
	c := n.Client()
	d := register(t, c, "fd-dev", `{}`)
	pass := token(t, d.ID, d.Primary, time.Hour)
	user := "hub.test/" + d.ID + "/?api-version=2021-04-12"

	// One keep-alive connection that is surely served, then 300 more.
	first, err := net.Dial("tcp", n.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	rd := bufio.NewReader(first)
	if st := rawGet(t, first, rd, "/healthz"); st != 200 {
		t.Fatalf("healthz: %d", st)
	}
	var hold []net.Conn
	defer func() {
		for _, h := range hold {
			h.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		h, err := net.DialTimeout("tcp", n.Addr("http"), 2*time.Second)
		if err != nil {
			break // the backlog is full: exhausted enough
		}
		_, _ = io.WriteString(h, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		hold = append(hold, h)
	}
	time.Sleep(500 * time.Millisecond)
	if cl, err := connect("tcp://"+n.Addr("mqtt"), d.ID, user, pass); err == nil {
		cl.Disconnect(0)
		t.Log("an MQTT connection got through while the descriptors were exhausted (the limit was not reached)")
	}
	st, body := 0, ""
	testutil.Eventually(t, 10*time.Second, "readyz to report the MQTT listener", func() bool {
		st, body = rawGetBody(t, first, rd, "/readyz")
		return st == 503 && strings.Contains(body, "mqtt listener")
	})
	for _, h := range hold {
		h.Close()
	}
	hold = nil
	testutil.Eventually(t, 20*time.Second, "an MQTT device to connect after the connections closed", func() bool {
		cl, err := connect("tcp://"+n.Addr("mqtt"), d.ID, user, pass)
		if err != nil {
			return false
		}
		cl.Disconnect(0)
		return true
	})
	testutil.Eventually(t, 10*time.Second, "readyz 200", func() bool {
		st, _ := rawGetBody(t, first, rd, "/readyz")
		return st == 200
	})
	if !strings.Contains(n.Logs(), "MQTT listener cannot accept connections") {
		t.Error("the accept failure was not logged")
	}
}

// rawGet sends GET path on a kept-alive connection and returns the status.
func rawGet(t *testing.T, c net.Conn, rd *bufio.Reader, path string) int {
	st, _ := rawGetBody(t, c, rd, path)
	return st
}

func rawGetBody(t *testing.T, c net.Conn, rd *bufio.Reader, path string) (int, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, string(b)
}

// Issue 12, attack 2: sockets that never send CONNECT, or half of one,
// were kept open forever. They are closed after --mqtt-connect-timeout.
func TestIdleMQTTSocketsAreClosed(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--mqtt-connect-timeout", "1s")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", n.Addr("mqtt"))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			_, _ = c.Write([]byte{0x10, 0x20, 0x00}) // the start of a CONNECT
		}
		conns = append(conns, c)
	}
	start := time.Now()
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 16))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d still open after %v", i, time.Since(start).Round(time.Millisecond))
		}
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("idle connections closed after %v, want about 1 s", el)
	}
	// A real device still connects.
	c := n.Client()
	d := register(t, c, "idle-dev", `{}`)
	cl, err := connect("tcp://"+n.Addr("mqtt"), d.ID, "hub.test/"+d.ID+"/?api-version=2021-04-12", token(t, d.ID, d.Primary, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cl.Disconnect(0)
	if m := string(c.MustDo(t, "GET", "/metrics", nil, 200)); !strings.Contains(m, "twinmesh_mqtt_pending_connections 0") {
		t.Errorf("pending connections not back to 0:\n%s", grepLines(m, "twinmesh_mqtt_pending"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
