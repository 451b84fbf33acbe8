package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

type twinDoc struct {
	ID      string         `json:"id"`
	Version int64          `json:"version"`
	Desired map[string]any `json:"desired"`
	Rollup  map[string]any `json:"rollup"`
}

func getTwin(t *testing.T, c *testutil.Client, id string) twinDoc {
	t.Helper()
	var d twinDoc
	if err := json.Unmarshal(c.MustDo(t, "GET", "/api/v1/twins/"+id, nil, 200), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCrashKeepsAcknowledgedPatches is the durability contract: everything
// answered 200 survives a SIGKILL right after the last answer.
func TestCrashKeepsAcknowledgedPatches(t *testing.T) {
	data := t.TempDir()
	n := testutil.Start(t, data)
	c := n.Client()
	c.MustDo(t, "PUT", "/api/v1/entities/b1", map[string]any{"kind": "building"}, 201)
	c.MustDo(t, "PUT", "/api/v1/entities/r1", map[string]any{"kind": "room", "parent": "b1"}, 201)
	c.MustDo(t, "PUT", "/api/v1/devices/d1", map[string]any{"parent": "r1"}, 201)

	const patches = 500
	var lastVersion int64
	for i := 0; i < patches; i++ {
		body := fmt.Sprintf(`{"desired":{"p%d":%d,"last":%d}}`, i, i, i)
		out := c.MustDo(t, "PATCH", "/api/v1/twins/d1", body, 200)
		var d twinDoc
		if err := json.Unmarshal(out, &d); err != nil {
			t.Fatal(err)
		}
		if d.Version <= lastVersion {
			t.Fatalf("patch %d: version %d not above %d", i, d.Version, lastVersion)
		}
		lastVersion = d.Version
	}
	n.Kill() // SIGKILL right after the last 200 OK

	n2 := testutil.Start(t, data)
	d := getTwin(t, n2.Client(), "d1")
	if d.Version != lastVersion {
		t.Fatalf("version after restart = %d, want the acknowledged %d", d.Version, lastVersion)
	}
	for i := 0; i < patches; i++ {
		if v, ok := d.Desired[fmt.Sprintf("p%d", i)]; !ok || v != float64(i) {
			t.Fatalf("desired.p%d = %v after restart", i, v)
		}
	}
	if d.Desired["last"] != float64(patches-1) {
		t.Fatalf("desired.last = %v", d.Desired["last"])
	}
	b := getTwin(t, n2.Client(), "b1")
	if b.Rollup["devices"] != float64(1) {
		t.Fatalf("building rollup after restart = %v, want 1 device", b.Rollup)
	}
}

func TestServeExitsOnBadInput(t *testing.T) {
	bin := testutil.Binary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	unreadable := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(unreadable, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"serve", "--mqtt", "", "--coap", "", "--gossip", "127.0.0.1:0", "--remote", "127.0.0.1:0"}
	cases := []struct {
		name string
		args []string
		want string
		code int
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined", 2},
		{"bad duration", []string{"--idle-timeout", "soon"}, "invalid value", 2},
		{"http port in use", []string{"--data", t.TempDir(), "--http", busy.Addr().String()}, "address already in use", 1},
		{"data is a file", []string{"--data", unreadable, "--http", "127.0.0.1:0"}, "data folder", 1},
		{"mqtts without cert", []string{"--mqtts", "127.0.0.1:0"}, "--tls-cert", 2},
		{"https without cert", []string{"--https", "127.0.0.1:0"}, "--https needs --tls-cert", 2},
		// Issue 12, item 11: every numeric and duration flag has a range.
		{"negative retention", []string{"--telemetry-retention=-1h"}, "--telemetry-retention is -1h0m0s; it must be between 1m0s and", 2},
		{"zero retention", []string{"--telemetry-retention", "0s"}, "--telemetry-retention", 2},
		{"negative max payload", []string{"--max-payload", "-5"}, "--max-payload is -5; it must be between 1 and", 2},
		{"zero device rate", []string{"--device-rate", "0"}, "--device-rate", 2},
		{"huge replicas", []string{"--replicas", "1000"}, "--replicas is 1000", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append(append([]string{}, base...), tc.args...)...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("exit 0, want %d:\n%s", tc.code, out)
			}
			if code := cmd.ProcessState.ExitCode(); code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output does not mention %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestConfigLayers(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "twinmesh.yaml")
	if err := os.WriteFile(cfgFile, []byte("max-depth: 4\nnode-name: from-file\njoin: [a:1, b:2]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TWINMESH_NODE_NAME", "from-env")
	var c serveConfig
	fs := serveFlags(&c, os.Stderr)
	if err := parseLayered(fs, []string{"--config", cfgFile, "--max-section-bytes", "4096"}, &c.Config); err != nil {
		t.Fatal(err)
	}
	if c.MaxDepth != 4 || c.NodeName != "from-env" || c.MaxSectionBytes != 4096 || c.Join != "a:1,b:2" {
		t.Fatalf("layers: %+v", c)
	}
	if err := os.WriteFile(cfgFile, []byte("no-such-key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var c2 serveConfig
	if err := parseLayered(serveFlags(&c2, os.Stderr), []string{"--config", cfgFile}, &c2.Config); err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("unknown key accepted: %v", err)
	}
}

func TestServeGracefulShutdownAndToken(t *testing.T) {
	data := t.TempDir()
	n := testutil.Start(t, data)
	c := n.Client()
	c.MustDo(t, "PUT", "/api/v1/devices/dev-1", nil, 201)
	metrics := string(c.MustDo(t, "GET", "/metrics", nil, 200))
	for _, m := range []string{"twinmesh_commit_batch_requests_count", "twinmesh_commit_seconds_count",
		"twinmesh_grain_activations_total", "twinmesh_http_requests_total", "twinmesh_mqtt_connections"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	// While the node runs, bbolt's lock keeps `token` out of the file: it
	// asks the node instead.
	out, err := exec.Command(testutil.Binary(t), "token", "--data", data, "dev-1").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "SharedAccessSignature sr=") {
		t.Fatalf("token while running: %v %s", err, out)
	}
	if code := n.Stop(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d\n%s", code, n.Logs())
	}
	if !strings.Contains(n.Logs(), "msg=stopped") {
		t.Fatalf("no clean stop in logs:\n%s", n.Logs())
	}
	st, err := os.Stat(filepath.Join(data, "admin.token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v %v", st, err)
	}
	out, err = exec.Command(testutil.Binary(t), "token", "--data", data, "dev-1", "--ttl", "5m").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "SharedAccessSignature sr=") {
		t.Fatalf("token: %v %s", err, out)
	}
	out, err = exec.Command(testutil.Binary(t), "token", "--data", data, "nobody").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not found") {
		t.Fatalf("token for unknown device: %v %s", err, out)
	}
}
