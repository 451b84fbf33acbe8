package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, returning the
// paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "twinmesh test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestMQTTOverTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	n := testutil.Start(t, t.TempDir(), "--mqtt", "", "--mqtts", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	if n.Addr("mqtt") != "" || n.Addr("mqtts") == "" {
		t.Fatalf("listeners %v", n.Addrs())
	}
	api := n.Client()
	d := register(t, api, "tls-1", "")
	o := paho.NewClientOptions().AddBroker("ssl://" + n.Addr("mqtts")).SetClientID(d.ID).
		SetUsername("hub.test/" + d.ID + "/?api-version=2021-04-12").SetPassword(token(t, d.ID, d.Primary, time.Hour)).
		SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}).SetAutoReconnect(false)
	c := paho.NewClient(o)
	must(t, c.Connect())
	defer c.Disconnect(50)
	must(t, c.Publish("devices/tls-1/messages/events/", 1, false, `{"secure":true}`))
	if twinOf(t, api, "tls-1").Telemetry["secure"]["value"] != true {
		t.Fatal("telemetry over TLS not stored")
	}
	// A client that does not trust the certificate cannot connect.
	o2 := paho.NewClientOptions().AddBroker("ssl://" + n.Addr("mqtts")).SetClientID(d.ID).SetAutoReconnect(false).
		SetTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12})
	if tok := paho.NewClient(o2).Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		t.Fatal("untrusted TLS connection succeeded")
	}
}

func TestMosquittoClients(t *testing.T) {
	sub := testutil.RequireTool(t, "mosquitto_sub")
	pub := testutil.RequireTool(t, "mosquitto_pub")
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	host, port, _ := net.SplitHostPort(n.Addr("mqtt"))
	for _, version := range []string{"mqttv311", "mqttv5"} {
		t.Run(version, func(t *testing.T) {
			rx := register(t, api, "rx-"+version, "")
			tx := register(t, api, "tx-"+version, "")
			args := func(d device) []string {
				return []string{"-h", host, "-p", port, "-V", version, "-i", d.ID,
					"-u", "hub.test/" + d.ID + "/?api-version=2021-04-12", "-P", token(t, d.ID, d.Primary, time.Hour)}
			}
			// Cloud-to-device to mosquitto_sub: queue one message, then subscribe.
			api.MustDo(t, "POST", "/api/v1/devices/"+rx.ID+"/messages", `{"payload":"from the cloud"}`, 202)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, sub, append(args(rx), "-t", "devices/"+rx.ID+"/messages/devicebound/#", "-q", "1", "-C", "1", "-W", "15", "-v")...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "from the cloud") {
				t.Fatalf("mosquitto_sub: %v\n%s", err, out)
			}
			// Telemetry from mosquitto_pub at QoS 1.
			out, err = exec.CommandContext(ctx, pub, append(args(tx), "-t", "devices/"+tx.ID+"/messages/events/", "-q", "1", "-m", `{"level":3}`)...).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_pub: %v\n%s", err, out)
			}
			if twinOf(t, api, tx.ID).Telemetry["level"]["value"] != 3.0 {
				t.Fatal("mosquitto telemetry not in twin")
			}
			// A forged password is refused.
			bad := args(tx)
			bad[len(bad)-1] = "SharedAccessSignature sr=x%2Fdevices%2F" + tx.ID + "&sig=AAAA&se=9999999999"
			if out, err := exec.CommandContext(ctx, pub, append(bad, "-t", "devices/"+tx.ID+"/messages/events/", "-m", "x")...).CombinedOutput(); err == nil {
				t.Fatalf("forged token accepted:\n%s", out)
			}
		})
	}
}

// TestQoS1TelemetrySurvivesSIGKILL: every PUBACKed message is in the warm
// store after the node is killed right after the last PUBACK.
func TestQoS1TelemetrySurvivesSIGKILL(t *testing.T) {
	data := t.TempDir()
	// 300 messages back to back exceed the default rate limit (burst 200,
	// then 100/s) as soon as a PUBACK takes under ~3 ms; a throttled MQTT
	// 3.1.1 publish gets no PUBACK at all, which is not what this tests.
	n := testutil.Start(t, data, "--device-rate", "100000", "--device-burst", "100000")
	api := n.Client()
	d := register(t, api, "dur-1", "")
	c := connectDevice(t, n, d)
	const msgs = 300
	for i := 0; i < msgs; i++ {
		must(t, c.Publish("devices/dur-1/messages/events/", 1, false, fmt.Sprintf(`{"seq":%d}`, i)))
	}
	before := twinOf(t, api, "dur-1").Version
	n.Kill()
	n2 := testutil.Start(t, data)
	var hist struct {
		Items []struct {
			Points map[string]any `json:"points"`
		}
	}
	_ = json.Unmarshal(n2.Client().MustDo(t, "GET", "/api/v1/twins/dur-1/telemetry?limit=1000", nil, 200), &hist)
	seen := map[int]bool{}
	for _, it := range hist.Items {
		seen[int(it.Points["seq"].(float64))] = true
	}
	for i := 0; i < msgs; i++ {
		if !seen[i] {
			t.Fatalf("PUBACKed message %d missing after SIGKILL (have %d)", i, len(seen))
		}
	}
	// The twin document is flushed lazily; the grain replays the warm store
	// at activation, so values and version are exactly as acknowledged.
	if tw := twinOf(t, n2.Client(), "dur-1"); tw.Telemetry["seq"]["value"] != float64(msgs-1) || tw.Version != before {
		t.Fatalf("twin after restart: version %d (want %d), seq %v", tw.Version, before, tw.Telemetry["seq"])
	}
}

func metric(t *testing.T, c *testutil.Client, re string) float64 {
	t.Helper()
	m := regexp.MustCompile(re + ` ([0-9.e+]+)`).FindStringSubmatch(string(c.MustDo(t, "GET", "/metrics", nil, 200)))
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func TestMQTTLimits(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--device-rate", "5", "--device-burst", "5", "--max-payload", "1024")
	api := n.Client()
	d := register(t, api, "lim-1", "")
	c := connectDevice(t, n, d)
	for i := 0; i < 50; i++ {
		c.Publish("devices/lim-1/messages/events/", 0, false, fmt.Sprintf(`{"i":%d}`, i)).Wait()
	}
	testutil.Eventually(t, 5*time.Second, "throttled count", func() bool {
		return metric(t, api, `twinmesh_mqtt_refused_total\{reason="throttled"\}`) >= 40
	})
	api.MustDo(t, "GET", "/healthz", nil, 200)
	time.Sleep(1100 * time.Millisecond) // refill the bucket
	c.Publish("devices/lim-1/messages/events/", 0, false, `{"blob":"`+strings.Repeat("x", 2000)+`"}`).Wait()
	testutil.Eventually(t, 5*time.Second, "oversize count", func() bool {
		return metric(t, api, `twinmesh_mqtt_refused_total\{reason="too_large"\}`) >= 1
	})
	var hist struct{ Items []any }
	_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/lim-1/telemetry?limit=1000", nil, 200), &hist)
	if len(hist.Items) > 7 {
		t.Fatalf("%d messages stored despite a 5/s limit", len(hist.Items))
	}
	// Deleting a device drops its session within a second.
	api.MustDo(t, "DELETE", "/api/v1/entities/lim-1", nil, 200)
	testutil.Eventually(t, time.Second, "session dropped on delete", func() bool { return !c.IsConnectionOpen() })
}

func TestMQTTConnectionLimit(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--max-connections", "2")
	api := n.Client()
	for i := 0; i < 2; i++ {
		connectDevice(t, n, register(t, api, fmt.Sprintf("c%d", i), ""))
	}
	third := register(t, api, "c2", "")
	c, err := connect("tcp://"+n.Addr("mqtt"), "c2", "hub.test/c2/?api-version=1", token(t, "c2", third.Primary, time.Hour))
	if err == nil {
		c.Disconnect(0)
		t.Fatal("a third connection was accepted with --max-connections 2")
	}
	// "Server unavailable" (3.1.1 return code 3), which device SDKs retry,
	// not "not authorized" (issue 12).
	if !errors.Is(err, pahopackets.ErrorRefusedServerUnavailable) {
		t.Fatalf("third connection refused with %v, want %v", err, pahopackets.ErrorRefusedServerUnavailable)
	}
	if v := metric(t, api, `twinmesh_mqtt_refused_total\{reason="connection_limit"\}`); v < 1 {
		t.Fatalf("connection_limit refusals = %v", v)
	}
	api.MustDo(t, "GET", "/healthz", nil, 200)
}

// Issue 12, attack 5: the rate limit was per session, so each reconnect
// got a fresh burst (1,500 messages accepted in 5.3 s where about 726 were
// allowed). It is per device now.
func TestMQTTRateLimitSurvivesReconnects(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--device-rate", "5", "--device-burst", "5")
	api := n.Client()
	d := register(t, api, "recon-1", "")
	start := time.Now()
	for s := 0; s < 10; s++ {
		c := connectDevice(t, n, d)
		for i := 0; i < 10; i++ {
			// QoS 1: a QoS 0 message sent just before a disconnect may be
			// lost (issue 12, item 9). A throttled one gets no PUBACK: the
			// short wait only paces the loop; what counts is what is stored.
			c.Publish("devices/recon-1/messages/events/", 1, false, fmt.Sprintf(`{"s":%d,"i":%d}`, s, i)).WaitTimeout(20 * time.Millisecond)
		}
		c.Disconnect(50)
	}
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond) // QoS 0 messages reach the store
	var hist struct{ Items []any }
	_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/recon-1/telemetry?limit=1000", nil, 200), &hist)
	allowed := 5 + int(5*elapsed.Seconds()) + 1
	t.Logf("%d stored in %v, %d allowed", len(hist.Items), elapsed, allowed)
	if len(hist.Items) > allowed {
		t.Fatalf("%d messages stored in %v over 10 sessions; a 5/s limit with a burst of 5 allows %d",
			len(hist.Items), elapsed.Round(time.Millisecond), allowed)
	}
}

// Issue 12, item 9: twinmesh_mqtt_connections drifted upward when a device
// reconnected while its old session was still open (a takeover): it must
// equal the open sessions.
func TestMQTTConnectionsGaugeAfterTakeovers(t *testing.T) {
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	d := register(t, api, "take-1", "")
	var last paho.Client
	for i := 0; i < 10; i++ {
		last = connectDevice(t, n, d) // takes the previous session over
	}
	testutil.Eventually(t, 5*time.Second, "one session counted", func() bool {
		return metric(t, api, `twinmesh_mqtt_connections`) == 1
	})
	last.Disconnect(50)
	testutil.Eventually(t, 5*time.Second, "no session counted", func() bool {
		return metric(t, api, `twinmesh_mqtt_connections`) == 0
	})
}

// Issue 12, item 3: a device could grow its twin, and its room's rollup,
// without bound by sending ever new telemetry point names. Beyond
// --max-points names, or with too many points in one message, a message is
// refused whole and counted; the twin and the rollup keep what fits.
func TestMQTTTelemetryPointLimits(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--max-points", "8", "--max-points-per-message", "5")
	api := n.Client()
	api.MustDo(t, "PUT", "/api/v1/entities/room-p", `{"kind":"room"}`, 201)
	d := register(t, api, "pts-1", `{"parent":"room-p"}`)
	c := connectDevice(t, n, d)
	pub := func(payload string) bool {
		tok := c.Publish("devices/pts-1/messages/events/", 1, false, payload)
		return tok.WaitTimeout(2*time.Second) && tok.Error() == nil
	}
	if !pub(`{"a":1,"b":2,"c":3,"d":4,"e":5}`) || !pub(`{"f":6,"g":7,"h":8}`) {
		t.Fatal("messages within the limits were not acknowledged")
	}
	if pub(`{"i":9}`) {
		t.Fatal("a ninth point name was acknowledged with --max-points 8")
	}
	if pub(`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}`) {
		t.Fatal("six points in one message were acknowledged with --max-points-per-message 5")
	}
	c = connectDevice(t, n, d) // an MQTT 3.1.1 client gets no PUBACK; start afresh
	if !pub(`{"a":10}`) {
		t.Fatal("a known point was not acknowledged after the refusals")
	}
	tw := twinOf(t, api, "pts-1")
	if len(tw.Telemetry) != 8 || tw.Telemetry["i"] != nil {
		t.Fatalf("twin telemetry has %d points: %v", len(tw.Telemetry), tw.Telemetry)
	}
	if v := metric(t, api, `twinmesh_mqtt_refused_total\{reason="too_large"\}`); v < 2 {
		t.Fatalf("too_large refusals = %v, want 2", v)
	}
	var room struct{ Rollup map[string]any }
	testutil.Eventually(t, 5*time.Second, "the room's rollup without the refused point", func() bool {
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/room-p", nil, 200), &room)
		return room.Rollup["a"] != nil && room.Rollup["i"] == nil
	})
}

// Issue 12, item 9: ten sessions of one device, each sending 200 QoS 0
// messages and DISCONNECT in one write, the next 50 ms later: every
// message the node accepted is stored or counted as dropped (the report's
// 2,000 sent and 800 stored came from a client that discarded its own
// queue on disconnect; raw packets rule the client out).
func TestMQTTQoS0AcrossQuickReconnects(t *testing.T) {
	n := testutil.Start(t, t.TempDir(), "--device-rate", "100000", "--device-burst", "100000")
	api := n.Client()
	d := register(t, api, "q0-1", "")
	pass := token(t, d.ID, d.Primary, time.Hour)
	const sessions, perSession = 10, 200
	for s := 0; s < sessions; s++ {
		var buf bytes.Buffer
		cp := pahopackets.NewControlPacket(pahopackets.Connect).(*pahopackets.ConnectPacket)
		cp.ProtocolName, cp.ProtocolVersion, cp.CleanSession, cp.Keepalive = "MQTT", 4, true, 30
		cp.ClientIdentifier, cp.UsernameFlag, cp.PasswordFlag = d.ID, true, true
		cp.Username, cp.Password = "hub.test/"+d.ID+"/?api-version=2021-04-12", []byte(pass)
		_ = cp.Write(&buf)
		for i := 0; i < perSession; i++ {
			pp := pahopackets.NewControlPacket(pahopackets.Publish).(*pahopackets.PublishPacket)
			pp.TopicName = "devices/q0-1/messages/events/"
			pp.Payload = []byte(fmt.Sprintf(`{"s":%d,"i":%d}`, s, i))
			_ = pp.Write(&buf)
		}
		_ = pahopackets.NewControlPacket(pahopackets.Disconnect).Write(&buf)
		conn, err := net.Dial("tcp", n.Addr("mqtt"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, conn) // CONNACK, then the node closes
		conn.Close()
		time.Sleep(50 * time.Millisecond)
	}
	want := float64(sessions * perSession)
	var stored int
	testutil.Eventually(t, 10*time.Second, "every accepted QoS 0 message stored or counted", func() bool {
		var hist struct{ Items []any }
		_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/q0-1/telemetry?limit=5000", nil, 200), &hist)
		stored = len(hist.Items)
		dropped := metric(t, api, `twinmesh_mqtt_qos0_dropped_total`)
		refused := metric(t, api, `twinmesh_mqtt_refused_total\{reason="store_failed"\}`)
		return float64(stored)+dropped+refused == want
	})
	t.Logf("%d of %d stored", stored, int(want))
}
