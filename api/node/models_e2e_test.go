package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

const thermostatModel = "dtmi:twinmesh:example:Thermostat;1"

// mqtt5Publish connects as an MQTT 5 client, publishes one QoS 1 message
// and returns the PUBACK's reason code and reason string: the two things
// an MQTT 5 device reads when a publish is refused, exactly as sent
// (paho.mqtt.golang speaks 3.1.1 only; mosquitto_pub prints both, in
// prose).
func mqtt5Publish(t *testing.T, addr, id, user, password, topic, payload string) (byte, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	send := func(pk packets.Packet, enc func(*packets.Packet, *bytes.Buffer) error) {
		var b bytes.Buffer
		if err := enc(&pk, &b); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(conn)
	read := func() (packets.FixedHeader, []byte) {
		hb, err := r.ReadByte()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var fh packets.FixedHeader
		if err := fh.Decode(hb); err != nil {
			t.Fatal(err)
		}
		n, _, err := packets.DecodeLength(r)
		if err != nil {
			t.Fatal(err)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			t.Fatal(err)
		}
		fh.Remaining = n
		return fh, body
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(password)}}, (*packets.Packet).ConnectEncode)
	fh, body := read()
	ack := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
	if err := ack.ConnackDecode(body); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connack 0x%x: %v", ack.ReasonCode, err)
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, PacketID: 7,
		TopicName: topic, Payload: []byte(payload)}, (*packets.Packet).PublishEncode)
	for {
		fh, body := read()
		if fh.Type != packets.Puback {
			continue
		}
		pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
		if err := pk.PubackDecode(body); err != nil {
			t.Fatal(err)
		}
		return pk.ReasonCode, pk.Properties.ReasonString
	}
}

// TestModelsThroughTheBinary: a model registered over REST; devices that
// name it with model-id in their MQTT user name (mosquitto_pub, a raw MQTT
// 5 client, and the Azure IoT device SDK for Node's modelId option); valid
// data accepted, invalid telemetry, reported and desired patches and
// method calls refused with the reason, counted and published.
func TestModelsThroughTheBinary(t *testing.T) {
	pub := testutil.RequireTool(t, "mosquitto_pub")
	nodeJS := testutil.RequireTool(t, "node")
	sdkDir, _ := filepath.Abs("testdata/pnp-device")
	if _, err := os.Stat(filepath.Join(sdkDir, "node_modules", "azure-iot-device-mqtt")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the Azure IoT device SDK is not installed in %s (scripts/test-deps.sh installs it): %v", sdkDir, err)
		}
		t.Skipf("the Azure IoT device SDK is not installed (run scripts/test-deps.sh)")
	}
	cert, key := localhostCert(t)
	n := testutil.Start(t, t.TempDir(), "--mqtts", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
	api := n.Client()
	model, err := os.ReadFile("../../actors/dtdl/testdata/thermostat-v3.json")
	if err != nil {
		t.Fatal(err)
	}
	api.MustDo(t, "PUT", "/api/v1/models/"+url.PathEscape(thermostatModel), model, 201)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A dashboard watching validation events.
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+n.Addr("http")+"/api/v1/ws?access_token="+url.QueryEscape(n.Token), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]any{"id": 1, "op": "subscribe", "entity": "mq-1", "events": []string{"validation"}}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var reply map[string]any
	if err := ws.ReadJSON(&reply); err != nil || reply["ok"] != true {
		t.Fatalf("subscribe: %v %v", reply, err)
	}

	// mosquitto_pub (MQTT 5) names the model in its user name.
	d := register(t, api, "mq-1", "")
	host, port, _ := net.SplitHostPort(n.Addr("mqtt"))
	user := "hub.test/mq-1/?api-version=2021-04-12&model-id=" + url.QueryEscape(thermostatModel)
	args := []string{"-h", host, "-p", port, "-V", "mqttv5", "-i", d.ID, "-u", user, "-P", token(t, d.ID, d.Primary, time.Hour),
		"-t", "devices/mq-1/messages/events/", "-q", "1"}
	if out, err := exec.CommandContext(ctx, pub, append(args, "-m", `{"temperature":21.5}`)...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	tw := twinOf(t, api, d.ID)
	if tw.Telemetry["temperature"]["value"] != 21.5 {
		t.Fatalf("valid telemetry not stored: %v", tw.Telemetry)
	}
	var withModel struct{ ModelID string }
	_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/mq-1", nil, 200), &withModel)
	if withModel.ModelID != thermostatModel {
		t.Fatalf("twin modelId %q", withModel.ModelID)
	}
	out, _ := exec.CommandContext(ctx, pub, append(args, "-m", `{"temperature":"hot"}`)...).CombinedOutput()
	if !strings.Contains(string(out), "Payload format invalid") {
		t.Fatalf("mosquitto_pub of invalid telemetry:\n%s", out)
	}
	// An MQTT 5 device reads why in the PUBACK's reason string.
	code, reason := mqtt5Publish(t, n.Addr("mqtt"), d.ID, user, token(t, d.ID, d.Primary, time.Hour), "devices/mq-1/messages/events/", `{"temperature":"hot"}`)
	if code != packets.ErrPayloadFormatInvalid.Code || reason != `telemetry does not match model `+thermostatModel+`: $.temperature: want double, got the string "hot"` {
		t.Fatalf("PUBACK 0x%x %q", code, reason)
	}
	if tw := twinOf(t, api, d.ID); tw.Telemetry["temperature"]["value"] != 21.5 {
		t.Fatalf("invalid telemetry stored: %v", tw.Telemetry)
	}
	var ev struct {
		Type, Entity string
		Data         struct{ Model, Kind, Reason string }
	}
	if err := ws.ReadJSON(&ev); err != nil || ev.Type != "validation" || ev.Entity != "mq-1" || ev.Data.Kind != "telemetry" ||
		ev.Data.Model != thermostatModel || !strings.Contains(ev.Data.Reason, "$.temperature: want double") {
		t.Fatalf("validation event %+v: %v", ev, err)
	}

	// A desired patch over the WebSocket API is refused like over REST.
	if err := ws.WriteJSON(map[string]any{"id": 2, "op": "patch", "entity": "mq-1", "desired": map[string]any{"enabled": "yes"}}); err != nil {
		t.Fatal(err)
	}
	for {
		var r struct {
			ID    int
			OK    bool
			Type  string
			Error struct{ Code, Message string }
		}
		if err := ws.ReadJSON(&r); err != nil {
			t.Fatal(err)
		}
		if r.Type == "validation" {
			continue // the refusal's own event
		}
		if r.ID != 2 || r.OK || r.Error.Code != "bad_request" || !strings.Contains(r.Error.Message, "$.enabled: want boolean") {
			t.Fatalf("WebSocket patch reply %+v", r)
		}
		break
	}
	// The twin a WebSocket get returns names the model, as REST's does.
	if err := ws.WriteJSON(map[string]any{"id": 3, "op": "get", "entity": "mq-1"}); err != nil {
		t.Fatal(err)
	}
	for {
		var r struct {
			ID   int
			OK   bool
			Type string
			Twin struct {
				ModelID string `json:"modelId"`
			}
		}
		if err := ws.ReadJSON(&r); err != nil {
			t.Fatal(err)
		}
		if r.Type != "" {
			continue // an event
		}
		if r.ID != 3 || !r.OK || r.Twin.ModelID != thermostatModel {
			t.Fatalf("WebSocket get reply %+v, want modelId %s", r, thermostatModel)
		}
		break
	}

	// Twin reported patches over MQTT: res/400 with the reason.
	c := connectDevice(t, n, d)
	var box inbox
	subscribe(t, c, &box, "$iothub/twin/res/#")
	must(t, c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r1", 1, false, `{"mode":"turbo"}`))
	m := box.wait(t, "res/400", topicHas("$iothub/twin/res/400/?$rid=r1"))
	if !strings.Contains(string(m.Payload()), `$.mode: want one of \"off\", \"heat\", \"eco\", got the string \"turbo\"`) {
		t.Fatalf("res/400 body %s", m.Payload())
	}
	must(t, c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r2", 1, false, `{"mode":"eco"}`))
	box.wait(t, "res/204", topicHas("$iothub/twin/res/204/?$rid=r2"))
	metrics := string(api.MustDo(t, "GET", "/metrics", nil, 200))
	for _, kind := range []string{"telemetry", "reported"} {
		if !strings.Contains(metrics, fmt.Sprintf(`twinmesh_model_validation_failures_total{device="mq-1",kind=%q,model=%q}`, kind, thermostatModel)) {
			t.Errorf("no %s failures counted for mq-1", kind)
		}
	}

	// CoAP: a device registered with its model; 4.00 with the reason.
	cd := register(t, api, "coap-1", `{"modelId":"`+thermostatModel+`"}`)
	co := dialCoAP(t, n.Addr("coap"))
	ctok := sasQuery(token(t, cd.ID, cd.Primary, time.Hour))
	for _, c := range []struct {
		path, body string
		want       codes.Code
	}{
		{"/devices/coap-1/messages/events", `{"temperature":19.5}`, codes.Changed},
		{"/devices/coap-1/messages/events", `{"temperature":"cold"}`, codes.BadRequest},
		{"/devices/coap-1/twin/reported", `{"serialNumber":"C-1"}`, codes.Changed},
		{"/devices/coap-1/twin/reported", `{"serialNumber":1}`, codes.BadRequest},
	} {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := co.Post(cctx, c.path, message.AppJSON, strings.NewReader(c.body), ctok)
		ccancel()
		if err != nil || res.Code() != c.want {
			t.Fatalf("CoAP POST %s %s: %v %v, want %v", c.path, c.body, res, err, c.want)
		}
		if c.want == codes.BadRequest {
			body, _ := res.ReadBody()
			if !strings.Contains(string(body), "does not match model "+thermostatModel) {
				t.Fatalf("CoAP refusal body %q", body)
			}
		}
	}
	if tw := twinOf(t, api, "coap-1"); tw.Telemetry["temperature"]["value"] != 19.5 || tw.Reported["serialNumber"] != "C-1" {
		t.Fatalf("CoAP device twin: %+v", tw)
	}

	// The Azure IoT device SDK for Node with its ModelId option, over MQTT/TLS.
	s := register(t, api, "sdk-1", "")
	_, tlsPort, _ := net.SplitHostPort(n.Addr("mqtts"))
	cmd := exec.CommandContext(ctx, nodeJS, "device.js")
	cmd.Dir = sdkDir
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+cert, "MODEL_ID="+thermostatModel,
		"CONN=HostName=localhost:"+tlsPort+";DeviceId=sdk-1;SharedAccessKey="+s.Primary)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan map[string]any, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var o map[string]any
			if json.Unmarshal(sc.Bytes(), &o) == nil {
				lines <- o
			}
		}
	}()
	next := func(step string) map[string]any {
		t.Helper()
		for {
			select {
			case o, ok := <-lines:
				if !ok {
					t.Fatalf("device exited before %s; stderr:\n%s", step, stderr.String())
				}
				if o["step"] == "fatal" {
					t.Fatalf("device: %v", o["error"])
				}
				if o["step"] == step {
					return o
				}
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s; stderr:\n%s", step, stderr.String())
			}
		}
	}
	next("telemetry")
	if o := next("reported-valid"); o["ok"] != true {
		t.Fatalf("valid reported patch refused: %v", o)
	}
	if o := next("reported-invalid"); o["ok"] != false {
		t.Fatalf("invalid reported patch accepted: %v", o)
	}
	next("ready")
	var sdkTwin struct {
		ModelID   string                    `json:"modelId"`
		Reported  map[string]any            `json:"reported"`
		Telemetry map[string]map[string]any `json:"telemetry"`
	}
	_ = json.Unmarshal(api.MustDo(t, "GET", "/api/v1/twins/sdk-1", nil, 200), &sdkTwin)
	if sdkTwin.ModelID != thermostatModel || sdkTwin.Reported["serialNumber"] != "SN-1" || sdkTwin.Reported["enabled"] != nil ||
		sdkTwin.Telemetry["state"]["value"] != "heating" {
		t.Fatalf("twin of the SDK device: %+v", sdkTwin)
	}
	// Desired patches and method calls from the cloud side.
	api.MustDo(t, "PATCH", "/api/v1/twins/sdk-1", `{"desired":{"targetTemperature":"warm"}}`, 400)
	api.MustDo(t, "PATCH", "/api/v1/twins/sdk-1", `{"desired":{"targetTemperature":19.5,"mode":"heat"}}`, 200)
	// The SDK first emits the desired properties it read with the twin.
	for o := next("desired"); o["delta"].(map[string]any)["mode"] != "heat"; o = next("desired") {
		if d := o["delta"].(map[string]any); d["targetTemperature"] != nil {
			t.Fatalf("the refused desired patch reached the device: %v", d)
		}
	}
	api.MustDo(t, "POST", "/api/v1/devices/sdk-1/methods/reboot", `{"payload":"soon"}`, 400)
	api.MustDo(t, "POST", "/api/v1/devices/sdk-1/methods/shutdown", `{"payload":{}}`, 400)
	got := api.MustDo(t, "POST", "/api/v1/devices/sdk-1/methods/reboot", `{"payload":5}`, 200)
	if !strings.Contains(string(got), `"rebooted":true`) {
		t.Fatalf("method result %s", got)
	}
	if o := next("method"); o["payload"] != 5.0 {
		t.Fatalf("the device saw %v; invalid calls must not reach it", o)
	}
	_ = stdin.Close()
	next("closed")
}

// TestReadmeModelCommands runs the README's device-model commands as they
// are written (only ports and the data folder are the test's own) and
// checks what they printed and did.
func TestReadmeModelCommands(t *testing.T) {
	for _, tool := range []string{"mosquitto_pub", "curl", "bash"} {
		testutil.RequireTool(t, tool)
	}
	data := t.TempDir()
	n := testutil.Start(t, data)
	_, mqttPort, _ := net.SplitHostPort(n.Addr("mqtt"))
	script := strings.NewReplacer("-p 1883", "-p "+mqttPort, "localhost:8080", n.Addr("http"),
		"--data ./data", "--data "+data, "data/admin.token", filepath.Join(data, "admin.token")).Replace(readmeBlock(t, "checked by TestReadmeModelCommands"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = testutil.RepoRoot()
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(testutil.Binary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s\n--- script:\n%s", err, out, script)
	}
	for _, want := range []string{`"unit":"degreeCelsius"`, `"modelId":"` + thermostatModel + `"`,
		`$.mode: want one of \"off\", \"heat\", \"eco\", got the string \"turbo\"`, "Payload format invalid",
		`$.temperature: want double, got the string "hot"`,
		`"temperature":{"value":21.5`, `"mode":"eco"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), `"hot"}`) && strings.Contains(string(out), `"value":"hot"`) {
		t.Errorf("refused telemetry stored:\n%s", out)
	}
	t.Logf("output of the README's commands:\n%s", out)
}
