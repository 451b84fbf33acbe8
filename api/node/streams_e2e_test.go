package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/protocols/streams/streamclient"
)

// Device streams through the binary (issue 16, CONTRACT section 11): a
// real node, `twinmesh stream agent` as the device, `twinmesh stream
// proxy` as the service, curl as the user, and an HTTP server on the
// device's side.

// tool is a `twinmesh stream …` process whose stderr is kept.
type tool struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
}

func startTool(t *testing.T, args ...string) *tool {
	t.Helper()
	tl := &tool{cmd: exec.Command(testutil.Binary(t), args...), done: make(chan struct{})}
	pipe, err := tl.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tl.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(tl.done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			tl.mu.Lock()
			tl.logs.WriteString(sc.Text() + "\n")
			tl.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = tl.cmd.Process.Kill()
		<-tl.done
		_ = tl.cmd.Wait()
	})
	return tl
}

func (tl *tool) Logs() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.logs.String()
}

// waitLog waits for a log line matching re and returns its submatches.
func (tl *tool) waitLog(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	testutil.Eventually(t, 30*time.Second, "log line "+re, func() bool {
		m = rx.FindStringSubmatch(tl.Logs())
		return m != nil
	})
	return m
}

// deviceWeb is the HTTP server on the device's side: /big is a 50 MB
// file, /hold answers once release is called, /endless never ends.
type deviceWeb struct {
	addr     string
	big      []byte
	sum      string
	mu       sync.Mutex
	held     int
	released chan struct{}
	once     sync.Once
}

func (d *deviceWeb) release() { d.once.Do(func() { close(d.released) }) }

func startDeviceWeb(t *testing.T) *deviceWeb {
	t.Helper()
	d := &deviceWeb{big: make([]byte, 50<<20), released: make(chan struct{})}
	rand.New(rand.NewSource(16)).Read(d.big)
	s := sha256.Sum256(d.big)
	d.sum = hex.EncodeToString(s[:])
	mux := http.NewServeMux()
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "big", time.Time{}, bytes.NewReader(d.big))
	})
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.held++
		d.mu.Unlock()
		select {
		case <-d.released:
			fmt.Fprintln(w, "released")
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("GET /endless", func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(buf); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond) // about 12 MB/s: the transfer is still running when disabled
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		d.release()
		_ = srv.Close()
	})
	d.addr = l.Addr().String()
	return d
}

// curlSum fetches url with curl and returns the SHA-256 of what arrived.
func curlSum(t *testing.T, url string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "got")
	cmd := exec.Command(testutil.RequireTool(t, "curl"), "-sS", "--fail", "-o", out, url)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("curl %s: %v\n%s", url, err, b)
	}
	sum, err := exec.Command("sha256sum", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(sum))[0]
}

// manualDevice is a device played by the test over MQTT: it hands the
// stream requests it gets to the test, which answers them.
type manualDevice struct {
	cl   paho.Client
	reqs chan streamclient.Request
}

func connectManual(t *testing.T, n *testutil.Node, d device) *manualDevice {
	t.Helper()
	m := &manualDevice{cl: connectDevice(t, n, d), reqs: make(chan streamclient.Request, 8)}
	must(t, m.cl.Subscribe(streamclient.RequestFilter, 0, func(_ paho.Client, msg paho.Message) {
		req, err := streamclient.ParseRequest(msg.Topic(), msg.Payload())
		if err != nil {
			t.Errorf("stream request: %v", err)
			return
		}
		m.reqs <- req
	}))
	return m
}

func (m *manualDevice) next(t *testing.T) streamclient.Request {
	t.Helper()
	select {
	case r := <-m.reqs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no stream request reached the device")
		return streamclient.Request{}
	}
}

func (m *manualDevice) answer(t *testing.T, req streamclient.Request, status int) {
	t.Helper()
	must(t, m.cl.Publish(streamclient.ResponseTopic(status, req.RID), 0, false, []byte{}))
}

// connectBack dials a request's URL with token; it returns the HTTP status
// of a refusal, or 101 and the connection.
func connectBack(t *testing.T, url, token string) (int, *websocket.Conn) {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	ws, res, err := websocket.DefaultDialer.Dial(url, h)
	if err == nil {
		t.Cleanup(func() { _ = ws.Close() })
		return 101, ws
	}
	if res == nil {
		t.Fatalf("connect back to %s: %v", url, err)
	}
	return res.StatusCode, nil
}

// dialResult is the outcome of a service's Dial, for the cases run on a
// goroutine.
type dialResult struct {
	ws  *websocket.Conn
	err error
}

func dialAsync(d *streamclient.Dialer, device, name string) chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		ws, err := d.Dial(context.Background(), device, name)
		ch <- dialResult{ws, err}
	}()
	return ch
}

func statusOf(err error) int {
	var se *streamclient.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

func TestStreamsThroughTheBinary(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--stream-accept-timeout", "2s", "--stream-token-ttl", "1s",
		"--stream-max-per-device", "5")
	c := n.Client()
	web := startDeviceWeb(t)
	dev := register(t, c, "st-dev", `{}`)
	agent := startTool(t, "stream", "agent", "--mqtt", n.Addr("mqtt"), "--device", dev.ID, "--key", dev.Primary,
		"--hub-host", "hub.test", "--allow", "web="+web.addr)
	agent.waitLog(t, `waiting for stream requests`)
	proxy := startTool(t, "stream", "proxy", "--node", n.URL(), "--token", n.Token, "--device", dev.ID,
		"--name", "web", "--listen", "127.0.0.1:0")
	local := "http://" + proxy.waitLog(t, `listener=proxy addr=(\S+)`)[1]
	dialer := &streamclient.Dialer{Node: n.URL(), Token: n.Token}

	t.Run("curl fetches 50 MB through stream proxy, intact", func(t *testing.T) {
		start := time.Now()
		if got := curlSum(t, local+"/big"); got != web.sum {
			t.Fatalf("sha256 %s, want %s", got, web.sum)
		}
		t.Logf("50 MiB in %v", time.Since(start).Round(time.Millisecond))
		testutil.Eventually(t, 5*time.Second, "the node to log the stream", func() bool {
			return regexp.MustCompile(`msg="stream closed" .*device=st-dev name=web who="admin token" bytes_to_device=\d+ bytes_to_service=5242\d{4} duration=`).
				MatchString(n.Logs())
		})
	})

	t.Run("five concurrent streams to one device; a sixth is over the limit (429)", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 5)
		for i := 0; i < 5; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := exec.Command("curl", "-sS", "--fail", "--max-time", "20", local+"/hold").CombinedOutput()
				if err == nil && string(out) != "released\n" {
					err = fmt.Errorf("answer %q", out)
				}
				if err != nil {
					errs <- fmt.Errorf("%v: %s", err, out)
				}
			}()
		}
		// Each curl connection is a stream of its own: five requests
		// held at the device's server at once are five open streams.
		testutil.Eventually(t, 10*time.Second, "five requests held at the device", func() bool {
			web.mu.Lock()
			defer web.mu.Unlock()
			return web.held == 5
		})
		_, err := dialer.Dial(context.Background(), dev.ID, "web")
		web.release()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if statusOf(err) != 429 {
			t.Fatalf("a sixth stream: err %v, want 429 (--stream-max-per-device 5)", err)
		}
		// The five streams end after curl has its answer; the next
		// subtests need them released, or they meet the limit too.
		closed := regexp.MustCompile(`msg="stream closed" .*device=st-dev `)
		testutil.Eventually(t, 10*time.Second, "the five held streams to close", func() bool {
			return len(closed.FindAllString(n.Logs(), -1)) >= 6
		})
	})

	t.Run("a stream name the agent does not allow is refused (403)", func(t *testing.T) {
		_, err := dialer.Dial(context.Background(), dev.ID, "ssh")
		if statusOf(err) != 403 {
			t.Fatalf("err %v, want 403", err)
		}
		agent.waitLog(t, `stream refused: name not allowed.* name=ssh`)
	})

	offline := register(t, c, "st-offline", `{}`)
	t.Run("a device that is not connected: 404 before the upgrade", func(t *testing.T) {
		if _, err := dialer.Dial(context.Background(), offline.ID, "web"); statusOf(err) != 404 {
			t.Fatalf("err %v, want 404", err)
		}
		if _, err := dialer.Dial(context.Background(), "st-nobody", "web"); statusOf(err) != 404 {
			t.Fatalf("unknown device: err %v, want 404", err)
		}
	})

	c.MustDo(t, "PUT", "/api/v1/entities/st-b", `{"kind":"building"}`, 201)
	c.MustDo(t, "PUT", "/api/v1/entities/st-other", `{"kind":"building"}`, 201)
	d2 := register(t, c, "st-manual-2", `{"parent":"st-b"}`)
	d3 := register(t, c, "st-manual-3", `{}`)
	m2, m3 := connectManual(t, n, d2), connectManual(t, n, d3)

	t.Run("a device that does not answer: 504", func(t *testing.T) {
		start := time.Now()
		res := dialAsync(dialer, d2.ID, "ssh")
		m2.next(t) // received, never answered
		r := <-res
		if statusOf(r.err) != 504 {
			t.Fatalf("err %v, want 504", r.err)
		}
		if d := time.Since(start); d < 2*time.Second || d > 5*time.Second {
			t.Fatalf("504 after %v, want about --stream-accept-timeout (2s)", d)
		}
	})

	t.Run("an expired token is refused (401) and the service gets 504", func(t *testing.T) {
		res := dialAsync(dialer, d2.ID, "ssh")
		req := m2.next(t)
		m2.answer(t, req, 200)
		time.Sleep(1200 * time.Millisecond) // past --stream-token-ttl
		if st, _ := connectBack(t, req.URL, req.Token); st != 401 {
			t.Fatalf("connect back with an expired token: %d, want 401", st)
		}
		if r := <-res; statusOf(r.err) != 504 {
			t.Fatalf("service: err %v, want 504", r.err)
		}
	})

	t.Run("another device's token is refused (401); the token works once", func(t *testing.T) {
		res2 := dialAsync(dialer, d2.ID, "ssh")
		res3 := dialAsync(dialer, d3.ID, "ssh")
		req2, req3 := m2.next(t), m3.next(t)
		m2.answer(t, req2, 200)
		m3.answer(t, req3, 200)
		if st, _ := connectBack(t, req2.URL, req3.Token); st != 401 {
			t.Fatalf("d3's token on d2's stream: %d, want 401", st)
		}
		st, devWS := connectBack(t, req2.URL, req2.Token)
		if st != 101 {
			t.Fatalf("d2's own token: %d, want 101", st)
		}
		if st, _ := connectBack(t, req2.URL, req2.Token); st != 401 {
			t.Fatalf("the token a second time: %d, want 401", st)
		}
		r2 := <-res2
		if r2.err != nil {
			t.Fatalf("service side of d2's stream: %v", r2.err)
		}
		// Bytes both ways, then the device closes: so does the service.
		if err := r2.ws.WriteMessage(websocket.BinaryMessage, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, b, err := devWS.ReadMessage(); err != nil || string(b) != "ping" {
			t.Fatalf("device read %q %v", b, err)
		}
		if err := devWS.WriteMessage(websocket.BinaryMessage, []byte("pong")); err != nil {
			t.Fatal(err)
		}
		if _, b, err := r2.ws.ReadMessage(); err != nil || string(b) != "pong" {
			t.Fatalf("service read %q %v", b, err)
		}
		_ = devWS.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
		_ = r2.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := r2.ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("service after the device closed: %v, want a normal close", err)
		}
		// d3 never connects back: 504.
		if r3 := <-res3; statusOf(r3.err) != 504 {
			t.Fatalf("d3: err %v, want 504", r3.err)
		}
	})

	t.Run("operator tokens: in scope opens, revoked closes; out of scope or a viewer: 403", func(t *testing.T) {
		mint := func(role, under string) (string, string) {
			var tok struct{ Token, ID string }
			body := fmt.Sprintf(`{"role":%q,"under":%q,"ttl":"1h","name":"on-call"}`, role, under)
			if err := json.Unmarshal(c.MustDo(t, "POST", "/api/v1/tokens", body, 201), &tok); err != nil {
				t.Fatal(err)
			}
			return tok.Token, tok.ID
		}
		as := func(tok string) *streamclient.Dialer { return &streamclient.Dialer{Node: n.URL(), Token: tok} }
		outside, _ := mint("operator", "st-other")
		if _, err := as(outside).Dial(context.Background(), d2.ID, "ssh"); statusOf(err) != 403 {
			t.Fatalf("operator outside the scope: err %v, want 403", err)
		}
		viewer, _ := mint("viewer", "st-b")
		if _, err := as(viewer).Dial(context.Background(), d2.ID, "ssh"); statusOf(err) != 403 {
			t.Fatalf("viewer: err %v, want 403", err)
		}
		op, opID := mint("operator", "st-b")
		res := dialAsync(as(op), d2.ID, "ssh")
		req := m2.next(t)
		m2.answer(t, req, 200)
		st, devWS := connectBack(t, req.URL, req.Token)
		if st != 101 {
			t.Fatalf("connect back: %d", st)
		}
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.ws.Close()
		c.MustDo(t, "DELETE", "/api/v1/tokens/"+opID, nil, 204)
		for side, ws := range map[string]*websocket.Conn{"service": r.ws, "device": devWS} {
			_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err := ws.ReadMessage()
			if ce, ok := err.(*websocket.CloseError); !ok || ce.Text != "token revoked" {
				t.Fatalf("%s after the token was revoked: %v, want a close \"token revoked\"", side, err)
			}
		}
		testutil.Eventually(t, 5*time.Second, "the node to log who", func() bool {
			return regexp.MustCompile(`msg="stream closed" .*device=st-manual-2 name=ssh who="on-call \(token ` + opID + `\)".*reason="token revoked"`).MatchString(n.Logs())
		})
	})

	t.Run("disabling the device ends a transfer in progress", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", local+"/endless", nil)
		res, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if _, err := io.CopyN(io.Discard, res.Body, 1<<20); err != nil {
			t.Fatalf("transfer: %v", err)
		}
		disabled := time.Now()
		c.MustDo(t, "PATCH", "/api/v1/devices/"+dev.ID, `{"status":"disabled"}`, 200)
		more, err := io.Copy(io.Discard, res.Body)
		if ctx.Err() != nil {
			t.Fatalf("the transfer went on for 20 s after the device was disabled (%d bytes)", more)
		}
		t.Logf("transfer ended %v after the device was disabled (%v, %d more bytes)", time.Since(disabled).Round(time.Millisecond), err, more)
		testutil.Eventually(t, 5*time.Second, "the node to log why", func() bool {
			return regexp.MustCompile(`msg="stream closed" .*device=st-dev .*reason="device disabled"`).MatchString(n.Logs())
		})
	})

	// Every outcome above was counted.
	body := string(c.MustDo(t, "GET", "/metrics", nil, 200))
	for _, result := range []string{"opened", "refused", "timeout", "not_connected", "limit"} {
		if !regexp.MustCompile(`(?m)^twinmesh_streams_total\{result="` + result + `"\} [1-9]`).MatchString(body) {
			t.Errorf("twinmesh_streams_total{result=%q} missing or zero", result)
		}
	}
	if !regexp.MustCompile(`(?m)^twinmesh_stream_bytes_total\{direction="to_service"\} [1-9]`).MatchString(body) {
		t.Error("twinmesh_stream_bytes_total{direction=\"to_service\"} missing or zero")
	}
}

// TestStreamAcrossMembers: the service reaches n1, the device's MQTT
// session is on n2. n1 asks n2 to signal the device with n1's URL; the
// device connects back to n1, which relays: the bytes never cross the
// members.
func TestStreamAcrossMembers(t *testing.T) {
	root := t.TempDir()
	n1 := ceStart(t, "n1", "n1", filepath.Join(root, "n1"), "")
	n2 := ceStart(t, "n2", "n2", filepath.Join(root, "n2"), n1.node.Addr("gossip"))
	waitAlive(t, 60*time.Second, []*cmember{n1, n2})
	web := startDeviceWeb(t)
	d := ceRegister(t, n1, "st-far", `{}`)
	agent := startTool(t, "stream", "agent", "--mqtt", n2.node.Addr("mqtt"), "--device", d.ID, "--key", d.Primary,
		"--hub-host", "hub.test", "--allow", "web="+web.addr)
	agent.waitLog(t, `waiting for stream requests`)
	testutil.Eventually(t, 15*time.Second, "n1 to see the device connected on n2", func() bool {
		var tw struct {
			Connection struct{ State, Node string }
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, _, out, err := n1.api.Do(ctx, "GET", "/api/v1/twins/"+d.ID, nil)
		return err == nil && st == 200 && json.Unmarshal(out, &tw) == nil &&
			tw.Connection.State == "connected" && tw.Connection.Node == "n2"
	})
	proxy := startTool(t, "stream", "proxy", "--node", n1.node.URL(), "--token", n1.node.Token, "--device", d.ID,
		"--name", "web", "--listen", "127.0.0.1:0")
	local := "http://" + proxy.waitLog(t, `listener=proxy addr=(\S+)`)[1]

	if got := curlSum(t, local+"/big"); got != web.sum {
		t.Fatalf("sha256 %s, want %s", got, web.sum)
	}
	if !regexp.MustCompile(`msg="stream closed" .*device=st-far name=web .*bytes_to_service=5242\d{4}`).MatchString(n1.node.Logs()) {
		t.Fatalf("n1 did not relay the stream:\n%s", n1.node.Logs())
	}
	if strings.Contains(n2.node.Logs(), `msg="stream opened"`) {
		t.Fatal("n2 relayed a stream: the device should have connected back to n1")
	}
	dialer := &streamclient.Dialer{Node: n1.node.URL(), Token: n1.node.Token}
	if _, err := dialer.Dial(context.Background(), d.ID, "ssh"); statusOf(err) != 403 {
		t.Fatalf("a name the agent refuses, through n1: err %v, want 403", err)
	}
}
