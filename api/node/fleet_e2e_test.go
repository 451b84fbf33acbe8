package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// fleetQuery runs a query through all its pages on a real node and returns
// every item.
func fleetQuery(t *testing.T, c *testutil.Client, q string, pageSize int) []map[string]any {
	t.Helper()
	var out []map[string]any
	tok := ""
	for {
		st, h, body, err := c.Do(context.Background(), "POST", "/api/v1/query", map[string]any{"query": q, "pageSize": pageSize}, "x-ms-continuation", tok)
		if err != nil || st != 200 {
			t.Fatalf("query %q: %d %s %v", q, st, body, err)
		}
		var p struct {
			Items        []map[string]any `json:"items"`
			Continuation string           `json:"continuation"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		if h.Get("x-ms-continuation") != p.Continuation {
			t.Fatalf("header %q, body %q", h.Get("x-ms-continuation"), p.Continuation)
		}
		out = append(out, p.Items...)
		if p.Continuation == "" {
			return out
		}
		tok = p.Continuation
	}
}

func column(items []map[string]any, name string) []any {
	out := []any{}
	for _, it := range items {
		out = append(out, it[name])
	}
	return out
}

// TestFleetOperations drives CONTRACT section 9 through the binary: device
// listing and deletion, twin replacement, 405, and queries over twins that
// a real MQTT device reports into, before and after a restart.
func TestFleetOperations(t *testing.T) {
	data := t.TempDir()
	cert, key := localhostCert(t)
	n := testutil.Start(t, data, "--https", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
	c := n.Client()
	ctx := context.Background()
	c.MustDo(t, "PUT", "/api/v1/entities/b1", map[string]any{"kind": "building"}, 201)
	c.MustDo(t, "PUT", "/api/v1/entities/b2", map[string]any{"kind": "building"}, 201)
	var devs []device
	for i := range 6 {
		parent := []string{"b1", "b2"}[i%2]
		d := register(t, c, fmt.Sprintf("fd%d", i), `{"parent":"`+parent+`","tags":{"site":"`+parent+`","n":`+fmt.Sprint(i)+`}}`)
		devs = append(devs, d)
	}

	// A real device reports its firmware and stays connected.
	dc := connectDevice(t, n, devs[0])
	// It answers direct methods with what it was sent.
	must(t, dc.Subscribe("$iothub/methods/POST/#", 0, func(cl paho.Client, m paho.Message) {
		_, rid, _ := strings.Cut(m.Topic(), "$rid=")
		cl.Publish("$iothub/methods/res/200/?$rid="+rid, 0, false, `{"echo":`+string(m.Payload())+`}`)
	}))
	must(t, dc.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 1, false, `{"fw":"1.4"}`))
	testutil.Eventually(t, 10*time.Second, "fd0 reported fw", func() bool {
		return len(fleetQuery(t, c, "SELECT deviceId FROM devices WHERE properties.reported.fw = '1.4' AND connectionState = 'Connected'", 10)) == 1
	})

	t.Run("query", func(t *testing.T) {
		got := column(fleetQuery(t, c, "SELECT deviceId FROM devices WHERE tags.site = 'b2' AND kind = 'device'", 2), "deviceId")
		if want := []any{"fd1", "fd3", "fd5"}; !reflect.DeepEqual(got, want) {
			t.Errorf("site b2: %v, want %v", got, want)
		}
		got = column(fleetQuery(t, c, "SELECT deviceId FROM devices WHERE UNDER('b1') AND NOT IS_DEFINED(properties.reported.fw)", 1), "deviceId")
		if want := []any{"fd2", "fd4"}; !reflect.DeepEqual(got, want) {
			t.Errorf("under b1 without fw: %v, want %v", got, want)
		}
		rows := fleetQuery(t, c, "SELECT connectionState, COUNT() AS n FROM devices WHERE kind = 'device' GROUP BY connectionState", 100)
		if want := []map[string]any{{"connectionState": "Connected", "n": 1.0}, {"connectionState": "Disconnected", "n": 5.0}}; !reflect.DeepEqual(rows, want) {
			t.Errorf("group by connectionState: %v, want %v", rows, want)
		}
		body := c.MustDo(t, "POST", "/api/v1/query", map[string]any{"query": "SELECT * FROM devices WHERE tags.n >"}, 400)
		var e struct {
			Error struct{ Position int } `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error.Position != 37 {
			t.Errorf("parse error answer %s, want position 37", body)
		}
	})

	t.Run("devices, twins, 405", func(t *testing.T) {
		c.MustDo(t, "PATCH", "/api/v1/devices/fd3", map[string]any{"status": "disabled"}, 200)
		var page struct {
			Items []struct{ ID string } `json:"items"`
			Next  string                `json:"next"`
		}
		if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/devices?under=b2&status=enabled&limit=1", nil, 200), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != 1 || page.Items[0].ID != "fd1" || page.Next == "" {
			t.Fatalf("first page %+v", page)
		}
		if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/devices?under=b2&status=enabled&limit=1&cursor="+page.Next, nil, 200), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != 1 || page.Items[0].ID != "fd5" {
			t.Fatalf("second page %+v", page)
		}

		st, h, _, err := c.Do(ctx, "GET", "/api/v1/twins/fd2", nil)
		if err != nil || st != 200 {
			t.Fatal(st, err)
		}
		c.MustDo(t, "PUT", "/api/v1/twins/fd2", map[string]any{"desired": map[string]any{"mode": "eco"}, "tags": map[string]any{"site": "b9"}}, 200, "If-Match", h.Get("ETag"))
		c.MustDo(t, "PUT", "/api/v1/twins/fd2", map[string]any{"desired": map[string]any{}}, 412, "If-Match", h.Get("ETag"))
		got := column(fleetQuery(t, c, "SELECT deviceId FROM devices WHERE tags.site = 'b9' AND properties.desired.mode = 'eco' AND NOT IS_DEFINED(tags.n)", 10), "deviceId")
		if !reflect.DeepEqual(got, []any{"fd2"}) {
			t.Errorf("after PUT: %v", got)
		}

		c.MustDo(t, "DELETE", "/api/v1/devices/fd4", nil, 204)
		c.MustDo(t, "GET", "/api/v1/twins/fd4", nil, 404)
		st, h, _, err = c.Do(ctx, "DELETE", "/api/v1/twins/fd2", nil)
		if err != nil || st != 405 || h.Get("Allow") != "GET, HEAD, PATCH, PUT" {
			t.Fatalf("DELETE /twins/fd2: %d Allow %q %v", st, h.Get("Allow"), err)
		}
	})

	t.Run("IoT Hub service API", func(t *testing.T) { iotHubQuery(t, n, data, cert) })
	t.Run("Azure IoT service SDK", func(t *testing.T) { iotHubSDK(t, n, data, cert, devs[0].Primary) })

	t.Run("README", func(t *testing.T) {
		testutil.RequireTool(t, "curl")
		testutil.RequireTool(t, "bash")
		block := readmeBlock(t, "checked by\n`TestFleetOperations`")
		script := strings.NewReplacer("localhost:8080", n.Addr("http"), "data/admin.token", filepath.Join(data, "admin.token")).Replace(block)
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, "bash", "-e", "-o", "pipefail", "-c", script)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the README's commands failed: %v\n%s", err, out)
		}
		// Each "# → …" comment is what the command before it prints.
		for _, l := range strings.Split(block, "\n") {
			if _, want, ok := strings.Cut(l, "# → "); ok && strings.HasPrefix(strings.TrimSpace(l), "#") {
				if !strings.Contains(string(out), want) {
					t.Errorf("output lacks %s:\n%s", want, out)
				}
			}
		}
		exported, err := os.ReadFile(filepath.Join(cmd.Dir, "plant.ndjson"))
		if err != nil || strings.Count(string(exported), "\n") != 5 || !strings.Contains(string(exported), `"desired":{"fw":"2.1"}`) {
			t.Errorf("plant.ndjson (%v):\n%s", err, exported)
		}
	})

	// After a restart the same queries answer from the store.
	n.Stop()
	n2 := testutil.Start(t, data)
	c2 := n2.Client()
	got := column(fleetQuery(t, c2, "SELECT deviceId, status FROM devices WHERE kind = 'device' AND status = 'disabled' OR deviceId = 'fd0'", 1), "deviceId")
	if !reflect.DeepEqual(got, []any{"fd0", "fd3"}) {
		t.Errorf("after restart: %v", got)
	}
}

// iotHubQuery runs POST /devices/query on the node's --https listener as
// the Azure IoT service SDKs send it, with a SAS token signed with a policy
// key from `twinmesh connection-string`.
func iotHubQuery(t *testing.T, n *testutil.Node, data, certFile string) {
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	addr := n.Addr("https")
	connStr := func(policy string) (host, keyName, key string) {
		out, err := exec.Command(testutil.Binary(t), "connection-string", "--data", data, "--policy", policy, "--host", addr).Output()
		if err != nil {
			t.Fatalf("connection-string: %v", err)
		}
		for _, part := range strings.Split(strings.TrimSpace(string(out)), ";") {
			k, v, _ := strings.Cut(part, "=")
			switch k {
			case "HostName":
				host = v
			case "SharedAccessKeyName":
				keyName = v
			case "SharedAccessKey":
				key = v
			}
		}
		if host != addr || keyName != policy || key == "" {
			t.Fatalf("connection string %q", out)
		}
		return host, keyName, key
	}
	sign := func(host, keyName, key string, ttl time.Duration) string {
		tok, err := sas.Sign(host, key, time.Now().Add(ttl))
		if err != nil {
			t.Fatal(err)
		}
		return tok + "&skn=" + keyName
	}
	post := func(auth, cont string, max int, q string) (int, http.Header, []byte) {
		body, _ := json.Marshal(map[string]string{"query": q})
		req, _ := http.NewRequest("POST", "https://"+addr+"/devices/query?api-version=2021-04-12", strings.NewReader(string(body)))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("x-ms-max-item-count", fmt.Sprint(max))
		if cont != "" {
			req.Header.Set("x-ms-continuation", cont)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, out
	}
	h, k, key := connStr("registryRead")
	auth := sign(h, k, key, time.Hour)
	var ids []any
	cont := ""
	for pages := 1; ; pages++ {
		st, h, out := post(auth, cont, 2, "SELECT * FROM devices WHERE kind = 'device' AND tags.site = 'b2'")
		var items []map[string]any
		if st != 200 || json.Unmarshal(out, &items) != nil {
			t.Fatalf("query: %d %s", st, out)
		}
		for _, it := range items {
			ids = append(ids, it["deviceId"])
		}
		if cont = h.Get("x-ms-continuation"); cont == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 2", pages)
			}
			break
		}
	}
	if want := []any{"fd1", "fd3", "fd5"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("devices of site b2 over the IoT Hub API: %v, want %v", ids, want)
	}
	for _, tc := range []struct {
		path   string
		status int
		say    string
	}{
		{"/twins/fd1", 200, `"deviceId":"fd1"`},
		{"/devices/fd1", 200, `"primaryKey"`},
		{"/twins/nope", 404, "ErrorCode:DeviceNotFound"},
		{"/twins/b1", 404, "ErrorCode:DeviceNotFound"}, // a building is no device
		{"/jobs/v2/j1", 404, "ErrorCode:JobNotFound"},
	} {
		req, _ := http.NewRequest("GET", "https://"+addr+tc.path+"?api-version=2021-04-12", nil)
		req.Header.Set("Authorization", auth)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || !strings.Contains(string(out), tc.say) {
			t.Errorf("GET %s: %d %s, want %d saying %q", tc.path, res.StatusCode, out, tc.status, tc.say)
		}
	}
	for _, tc := range []struct {
		name, auth string
		status     int
		say        string
	}{
		{"no token", "", 401, "IotHubUnauthorizedAccess"},
		{"a policy without RegistryRead", func() string { h, k, key := connStr("service"); return sign(h, k, key, time.Hour) }(), 401, "RegistryRead"},
		{"a forged key", sign(addr, "registryRead", "AAECAwQFBgcICQoLDA0ODw==", time.Hour), 401, "signature"},
		{"expired", sign(addr, "registryRead", "AAECAwQFBgcICQoLDA0ODw==", -time.Hour), 401, "expired"},
		{"a malformed query", auth, 400, "ErrorCode:ArgumentInvalid;syntax error at position 29"},
	} {
		q := "SELECT * FROM devices"
		if tc.status == 400 {
			q = "SELECT * FROM devices WHERE ="
		}
		st, _, out := post(tc.auth, "", 10, q)
		if st != tc.status || !strings.Contains(string(out), tc.say) {
			t.Errorf("%s: %d %s, want %d saying %q", tc.name, st, out, tc.status, tc.say)
		}
	}
}

// iotHubSDK runs a query with the official Azure IoT service SDK for
// Node.js (npm azure-iothub, installed into .cache/npm by
// scripts/test-deps.sh) against the node's --https listener, with a
// connection string from `twinmesh connection-string` as it is.
func iotHubSDK(t *testing.T, n *testutil.Node, data, certFile, primaryKey string) {
	nodejs := testutil.RequireTool(t, "node")
	modules := filepath.Join(testutil.RepoRoot(), ".cache", "npm", "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "azure-iothub")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("npm azure-iothub is required in CI (scripts/test-deps.sh installs it): %v", err)
		}
		t.Skipf("npm azure-iothub not installed in %s (run scripts/test-deps.sh)", modules)
	}
	out, err := exec.Command(testutil.Binary(t), "connection-string", "--data", data, "--policy", "iothubowner",
		"--host", "localhost:"+portOf(t, n.Addr("https"))).Output()
	if err != nil {
		t.Fatalf("connection-string: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodejs, filepath.Join("testdata", "iothub_query.js"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "NODE_EXTRA_CA_CERTS="+certFile,
		"SERVICE_CONNECTION_STRING="+strings.TrimSpace(string(out)),
		"QUERY=SELECT * FROM devices WHERE kind = 'device' AND tags.site = 'b2'", "PAGE_SIZE=2", "DEVICE_ID=fd0", "NEW_ID=sdk-made", "METHOD_DEVICE=fd0",
		"JOB_CONDITION=deviceId IN ['fd0', 'fd1', 'fd5']")
	res, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the SDK's query failed: %v\n%s", err, res)
	}
	var got struct {
		IDs    []string `json:"ids"`
		Pages  int      `json:"pages"`
		Device struct {
			DeviceID, Status, PrimaryKey string
		} `json:"device"`
		Twin struct {
			DeviceID string         `json:"deviceId"`
			Tags     map[string]any `json:"tags"`
			Reported map[string]any `json:"reported"`
		} `json:"twin"`
		Lifecycle map[string]any `json:"lifecycle"`
		Method    map[string]any `json:"method"`
		Jobs      map[string]any `json:"jobs"`
	}
	if err := json.Unmarshal(res, &got); err != nil || !reflect.DeepEqual(got.IDs, []string{"fd1", "fd3", "fd5"}) || got.Pages != 2 {
		t.Fatalf("the SDK's query answered %s (%v)", res, err)
	}
	if got.Device.DeviceID != "fd0" || got.Device.Status != "enabled" || got.Device.PrimaryKey != primaryKey {
		t.Errorf("Registry.get answered %+v", got.Device)
	}
	if got.Twin.DeviceID != "fd0" || got.Twin.Tags["site"] != "b1" || got.Twin.Reported["fw"] != "1.4" {
		t.Errorf("Registry.getTwin answered %+v", got.Twin)
	}
	want := map[string]any{"created": "sdk-made", "hasKey": true, "site": "sdk", "fw": "3.0",
		"stale": "InvalidEtagError", "listed": true, "afterDelete": "DeviceNotFoundError"}
	if !reflect.DeepEqual(got.Lifecycle, want) {
		t.Errorf("the SDK's registry life cycle: %v, want %v", got.Lifecycle, want)
	}
	// A device without a session: 404 DeviceNotOnline, which this SDK
	// reads as a plain Error("Not found"), as from IoT Hub.
	if want := map[string]any{"status": 200.0, "payload": map[string]any{"echo": map[string]any{"a": 1.0}}, "offline": "Error"}; !reflect.DeepEqual(got.Method, want) {
		t.Errorf("the SDK's invokeDeviceMethod: %v, want %v", got.Method, want)
	}
	// JobClient: a twin update on three devices, and a method that only
	// the connected fd0 answers; an unknown job is 404 JobNotFound, which
	// this SDK reads as a plain Error, as from IoT Hub.
	stats := func(succeeded, failed float64) map[string]any {
		return map[string]any{"deviceCount": 3.0, "succeededCount": succeeded, "failedCount": failed, "runningCount": 0.0, "pendingCount": 0.0}
	}
	wantJobs := map[string]any{"twin": map[string]any{"type": "scheduleUpdateTwin", "stats": stats(3, 0)},
		"method": map[string]any{"type": "scheduleDeviceMethod", "stats": stats(1, 2)}, "missing": "Error"}
	if !reflect.DeepEqual(got.Jobs, wantJobs) {
		t.Errorf("the SDK's JobClient: %v, want %v", got.Jobs, wantJobs)
	}
	if rows := fleetQuery(t, n.Client(), "SELECT COUNT() AS n FROM devices WHERE tags.rollout = 'r1' AND properties.desired.fw = '4.0'", 10); rows[0]["n"] != 3.0 {
		t.Errorf("twins the SDK's job updated: %v, want 3", rows)
	}
}

func portOf(t *testing.T, addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
