package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// coapTwin is what the CoAP tests read of a twin.
type coapTwin struct {
	Desired    map[string]any            `json:"desired"`
	Reported   map[string]any            `json:"reported"`
	Telemetry  map[string]map[string]any `json:"telemetry"`
	Connection struct {
		State, Protocol string
	} `json:"connection"`
}

func coapTwinOf(t *testing.T, c *testutil.Client, id string) coapTwin {
	t.Helper()
	var d coapTwin
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins/"+id, nil, 200), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// coapClient runs coap-client-openssl (Debian libcoap3-bin) with args and
// returns what it printed.
func coapClient(t *testing.T, args ...string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "coap-client-openssl")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client-openssl %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestCoAPWithLibcoapClient speaks to the binary with a client no one here
// wrote: libcoap's coap-client-openssl, over plain CoAP with a SAS token
// and over DTLS with the device's pre-shared key.
func TestCoAPWithLibcoapClient(t *testing.T) {
	testutil.RequireTool(t, "coap-client-openssl")
	n := testutil.Start(t, t.TempDir(), "--coaps", "127.0.0.1:0")
	api := n.Client()
	d := register(t, api, "thermo-1", "")
	plain := "coap://" + n.Addr("coap") + "/devices/thermo-1"
	secure := "coaps://" + n.Addr("coaps") + "/devices/thermo-1"
	sasOpt := "15,sas=" + token(t, "thermo-1", d.Primary, time.Hour) // option 15 is Uri-Query

	t.Run("telemetry and the twin over plain CoAP", func(t *testing.T) {
		coapClient(t, "-m", "post", "-t", "json", "-e", `{"temperature":21.5}`, "-O", sasOpt, plain+"/messages/events")
		if tw := coapTwinOf(t, api, "thermo-1"); tw.Telemetry["temperature"]["value"] != 21.5 {
			t.Fatalf("telemetry %v", tw.Telemetry)
		}
		out := coapClient(t, "-m", "patch", "-t", "json", "-e", `{"firmware":"1.0.0"}`, "-O", sasOpt, plain+"/twin/reported")
		if !strings.Contains(out, `{"$version":1}`) {
			t.Fatalf("reported patch answered %q", out)
		}
		if out := coapClient(t, "-m", "get", "-O", sasOpt, plain+"/twin"); !strings.Contains(out, `"firmware":"1.0.0"`) {
			t.Fatalf("twin %q", out)
		}
		coapClient(t, "-N", "-m", "post", "-t", "json", "-e", `{"humidity":40}`, "-O", sasOpt, plain+"/messages/events")
		testutil.Eventually(t, 10*time.Second, "the NON message stored", func() bool {
			return coapTwinOf(t, api, "thermo-1").Telemetry["humidity"]["value"] == 40.0
		})
		if tw := coapTwinOf(t, api, "thermo-1"); tw.Connection.State != "connected" || tw.Connection.Protocol != "coap" {
			t.Fatalf("connection %+v", tw.Connection)
		}
	})
	t.Run("refusals carry a diagnostic", func(t *testing.T) {
		if out := coapClient(t, "-m", "get", plain+"/twin"); !strings.Contains(out, "4.01") {
			t.Fatalf("no token answered %q", out)
		}
		if out := coapClient(t, "-m", "get", "-O", sasOpt, "coap://"+n.Addr("coap")+"/devices/other/twin"); !strings.Contains(out, "4.03") {
			t.Fatalf("another device's twin answered %q", out)
		}
	})
	t.Run("DTLS with the pre-shared key", func(t *testing.T) {
		coapClient(t, "-m", "post", "-t", "json", "-e", `{"temperature":22.5}`, "-u", "thermo-1", "-k", d.Primary, secure+"/messages/events")
		tw := coapTwinOf(t, api, "thermo-1")
		if tw.Telemetry["temperature"]["value"] != 22.5 {
			t.Fatalf("telemetry %v", tw.Telemetry)
		}
		testutil.Eventually(t, 10*time.Second, "shown as coaps", func() bool { return coapTwinOf(t, api, "thermo-1").Connection.Protocol == "coaps" })
		start := time.Now()
		out := coapClient(t, "-m", "get", "-u", "thermo-1", "-k", "not-the-key", secure+"/twin")
		if strings.Contains(out, "firmware") || time.Since(start) > 10*time.Second {
			t.Fatalf("a wrong key got %q after %v", out, time.Since(start))
		}
		// The wrong key made the node offer the other key to this
		// address: the secondary works at once.
		if out := coapClient(t, "-m", "get", "-u", "thermo-1", "-k", d.Secondary, secure+"/twin"); !strings.Contains(out, "firmware") {
			t.Fatalf("the secondary key got %q", out)
		}
	})
	t.Run("observe desired and cloud-to-device messages", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var obs bytes.Buffer // read after the client exits
		// The secondary key: the one the device last completed a
		// handshake with, which the node offers first.
		cmd := exec.CommandContext(ctx, "coap-client-openssl", "-m", "get", "-s", "4", "-u", "thermo-1", "-k", d.Secondary, secure+"/twin/desired")
		cmd.Stdout, cmd.Stderr = &obs, &obs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 5*time.Second, "the observation", func() bool { return scrapeMetric(t, n, "twinmesh_coap_observers") == 1 })
		api.MustDo(t, "PATCH", "/api/v1/twins/thermo-1", `{"desired":{"setpoint":22}}`, 200)
		_ = cmd.Wait()
		if out := obs.String(); !strings.Contains(out, `{"$version":0}`) || !strings.Contains(out, `"setpoint":22`) {
			t.Fatalf("the observer saw %q", out)
		}
		var m struct{ MessageID string }
		_ = json.Unmarshal(api.MustDo(t, "POST", "/api/v1/devices/thermo-1/messages", `{"payload":{"hello":"device"}}`, 202), &m)
		out := coapClient(t, "-m", "get", "-s", "1", "-O", sasOpt, plain+"/messages/devicebound")
		if !strings.Contains(out, `"messageId":"`+m.MessageID+`"`) || !strings.Contains(out, `"payload":{"hello":"device"}`) {
			t.Fatalf("devicebound %q", out)
		}
		coapClient(t, "-m", "delete", "-O", sasOpt, plain+"/messages/devicebound/"+m.MessageID)
		if out := string(api.MustDo(t, "GET", "/api/v1/devices/thermo-1/messages", nil, 200)); !strings.Contains(out, `"delivered"`) {
			t.Fatalf("inbox after DELETE: %s", out)
		}
	})
	t.Run("block-wise both ways", func(t *testing.T) {
		blob := strings.Repeat("0123456789", 300)
		coapClient(t, "-b", "64", "-m", "patch", "-t", "json", "-e", `{"blob":"`+blob+`"}`, "-O", sasOpt, plain+"/twin/reported")
		if got := coapTwinOf(t, api, "thermo-1").Reported["blob"]; got != blob {
			t.Fatalf("a block-wise reported patch arrived as %d bytes", len(fmt.Sprint(got)))
		}
		if out := coapClient(t, "-b", "64", "-m", "get", "-O", sasOpt, plain+"/twin"); !strings.Contains(out, blob) {
			t.Fatalf("a block-wise twin read gave %d bytes", len(out))
		}
	})
}

// TestCoAPOffLoopbackNeedsInsecure: a plain CoAP listener off loopback
// carries SAS tokens in clear; the node refuses to start without
// --coap-insecure, and starts with it.
func TestCoAPOffLoopbackNeedsInsecure(t *testing.T) {
	out, err := exec.Command(testutil.Binary(t), "serve", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--mqtt", "",
		"--gossip", "127.0.0.1:0", "--remote", "127.0.0.1:0", "--coap", "0.0.0.0:0").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--coap-insecure") {
		t.Fatalf("serve --coap 0.0.0.0:0: %v\n%s", err, out)
	}
	n := testutil.Start(t, t.TempDir(), "--coap", "0.0.0.0:0", "--coap-insecure")
	if n.Addr("coap") == "" {
		t.Fatalf("no coap listener:\n%s", n.Logs())
	}
}

// scrapeMetric reads one unlabelled metric of the node's /metrics.
func scrapeMetric(t *testing.T, n *testutil.Node, name string) float64 {
	t.Helper()
	_, _, out, err := n.Client().Do(context.Background(), "GET", "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// dialCoAP opens a go-coap client to addr that retransmits a confirmable
// request up to 12 times from 100 ms on, doubling (over 20 % loss each
// way an exchange fails 36 % of the time: 13 attempts make losing one of a
// few hundred messages unlikely), checking its timers every 50 ms.
func dialCoAP(t *testing.T, addr string, opts ...udp.Option) *udpclient.Conn {
	t.Helper()
	stop := make(chan struct{})
	co, err := udp.Dial(addr, append([]udp.Option{options.WithErrors(func(error) {}), options.WithPeriodicRunner(periodic.New(stop, 50*time.Millisecond)),
		options.WithTransmission(1, 100*time.Millisecond, 12)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Close(); close(stop) })
	return co
}

func sasQuery(tok string) message.Option {
	return message.Option{ID: message.URIQuery, Value: []byte("sas=" + tok)}
}

// TestCoAPLossyLink: go-coap clients send confirmable telemetry to the
// binary through a UDP proxy that drops 20 % of the datagrams and
// duplicates 10 %, both ways; every message is stored exactly once.
// Observation and block-wise transfer cross the same link.
func TestCoAPLossyLink(t *testing.T) {
	const devices, perDevice = 4, 30
	n := testutil.Start(t, t.TempDir(), "--device-rate", "100000", "--device-burst", "100000")
	api := n.Client()
	p := testutil.NewUDPProxy(t, n.Addr("coap"), 0.2, 0.1, 20)
	keys := map[string]string{}
	for i := 0; i < devices; i++ {
		id := fmt.Sprintf("lossy-%d", i)
		keys[id] = register(t, api, id, "").Primary
	}
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for id, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co := dialCoAP(t, p.Addr())
			tok := token(t, id, key, time.Hour)
			for i := 0; i < perDevice; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				res, err := co.Post(ctx, "/devices/"+id+"/messages/events", message.AppJSON,
					strings.NewReader(fmt.Sprintf(`{"seq":%d}`, i)), sasQuery(tok))
				cancel()
				if err != nil || res.Code() != codes.Changed {
					errs <- fmt.Errorf("%s message %d: %v %v", id, i, res, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for id := range keys {
		var hist struct {
			Items []struct {
				Points map[string]float64 `json:"points"`
			} `json:"items"`
		}
		if err := json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/"+id+"/telemetry?limit=10000", nil, 200), &hist); err != nil {
			t.Fatal(err)
		}
		seen := map[int]int{}
		for _, it := range hist.Items {
			seen[int(it.Points["seq"])]++
		}
		for i := 0; i < perDevice; i++ {
			if seen[i] != 1 {
				t.Fatalf("%s: message %d stored %d times (%d records)", id, i, seen[i], len(hist.Items))
			}
		}
		if len(hist.Items) != perDevice {
			t.Fatalf("%s: %d records, want %d", id, len(hist.Items), perDevice)
		}
	}
	t.Logf("%d datagrams relayed, %d dropped, %d duplicated", p.Relayed.Load(), p.Dropped.Load(), p.Duplicated.Load())

	t.Run("observe and block-wise", func(t *testing.T) {
		// Several changes of a 3 KB desired document, each notified with
		// its first block and an ETag while the observer may still be
		// fetching the blocks of the one before (RFC 7959 section 2.6):
		// the observer ends with the last document.
		id, key := "lossy-0", keys["lossy-0"]
		o := observeBlockwise(t, p.Addr(), "/devices/"+id+"/twin/desired", sasQuery(token(t, id, key, time.Hour)))
		var last string
		for i := 0; i < 3; i++ {
			last = strings.Repeat(fmt.Sprint(i), 3000) // over one datagram: the notification goes block-wise
			api.MustDo(t, "PATCH", "/api/v1/twins/"+id, `{"desired":{"blob":"`+last+`"}}`, 200)
			time.Sleep(300 * time.Millisecond)
		}
		testutil.Eventually(t, 60*time.Second, "the last desired document", func() bool {
			return strings.Contains(o.last(), last)
		})
	})
}

// TestCoAPDisableEndsDTLSSession: disabling a device over REST closes its
// DTLS session at once.
func TestCoAPDisableEndsDTLSSession(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--coaps", "127.0.0.1:0")
	api := n.Client()
	d := register(t, api, "dtls-1", "")
	c, err := net.Dial("udp", n.Addr("coaps"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := piondtls.ClientWithOptions(dtlsnet.PacketConnFromConn(c), c.RemoteAddr(),
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(d.Primary), nil }),
		piondtls.WithPSKIdentityHint([]byte("dtls-1")), piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	co := coapdtls.Client(conn, options.WithErrors(func(error) {}), options.WithCloseSocket())
	defer co.Close()
	res, err := co.Post(ctx, "/devices/dtls-1/messages/events", message.AppJSON, strings.NewReader(`{"a":1}`))
	if err != nil || res.Code() != codes.Changed {
		t.Fatalf("%v %v", res, err)
	}
	api.MustDo(t, "PATCH", "/api/v1/devices/dtls-1", `{"status":"disabled"}`, 200)
	select {
	case <-co.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the DTLS session of a disabled device is still open")
	}
	testutil.Eventually(t, 10*time.Second, "shown disconnected", func() bool {
		return coapTwinOf(t, api, "dtls-1").Connection.State == "disconnected"
	})
}

// TestCoAPTokenQuery: `twinmesh token --coap-query` prints the query a
// CoAP URI carries, which the node accepts once a client decodes it.
func TestCoAPTokenQuery(t *testing.T) {
	data := t.TempDir()
	n := testutil.Start(t, data)
	register(t, n.Client(), "q-1", "")
	out, err := exec.Command(testutil.Binary(t), "token", "--data", data, "q-1", "--coap-query").CombinedOutput()
	if err != nil {
		t.Fatalf("token --coap-query: %v\n%s", err, out)
	}
	q := strings.TrimSpace(string(out))
	if !strings.HasPrefix(q, "sas=SharedAccessSignature%20sr%3D") || strings.ContainsAny(q, " &") {
		t.Fatalf("query %q", q)
	}
	opt, err := url.PathUnescape(q) // what a client makes of the URI query
	if err != nil {
		t.Fatal(err)
	}
	co := dialCoAP(t, n.Addr("coap"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := co.Get(ctx, "/devices/q-1/twin", message.Option{ID: message.URIQuery, Value: []byte(opt)})
	if err != nil || res.Code() != codes.Content {
		t.Fatalf("GET with the printed query: %v %v", res, err)
	}
}

// TestCoAPReobserveAfterRestart: observations live in the node's memory.
// After a restart on the same port the old one hears nothing more; the
// client registers again (as RFC 7641 asks once Max-Age passes) and is
// notified again.
func TestCoAPReobserveAfterRestart(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	_ = pc.Close()
	data := t.TempDir()
	n := testutil.Start(t, data, "--coap", addr)
	d := register(t, n.Client(), "obs-1", "")
	co := dialCoAP(t, addr)
	tok := sasQuery(token(t, "obs-1", d.Primary, time.Hour))
	var mu sync.Mutex
	var got []string
	observe := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := co.Observe(ctx, "/devices/obs-1/twin/desired", func(m *pool.Message) {
			b, _ := m.ReadBody()
			mu.Lock()
			got = append(got, string(b))
			mu.Unlock()
		}, tok); err != nil {
			t.Fatal(err)
		}
	}
	seen := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range got {
			if strings.Contains(g, s) {
				return true
			}
		}
		return false
	}
	observe()
	n.Client().MustDo(t, "PATCH", "/api/v1/twins/obs-1", `{"desired":{"before":1}}`, 200)
	testutil.Eventually(t, 10*time.Second, "a notification before the restart", func() bool { return seen(`"before":1`) })
	if code := n.Stop(); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	n = testutil.Start(t, data, "--coap", addr)
	n.Client().MustDo(t, "PATCH", "/api/v1/twins/obs-1", `{"desired":{"after":1}}`, 200)
	time.Sleep(time.Second) // long enough for a notification to come, if one did
	if seen(`"after":1`) {
		t.Fatal("a notification reached the observation of the previous run")
	}
	observe()
	testutil.Eventually(t, 10*time.Second, "the current desired on re-registration", func() bool { return seen(`"after":1`) })
	n.Client().MustDo(t, "PATCH", "/api/v1/twins/obs-1", `{"desired":{"again":1}}`, 200)
	testutil.Eventually(t, 10*time.Second, "a notification after re-registering", func() bool { return seen(`"again":1`) })
}
