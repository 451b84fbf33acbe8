package node

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/nodeproc"
	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestVersionFromBuildInfo: `twinmesh version` shows the module version,
// the commit and its time, and whether the tree was modified (issue 18).
func TestVersionFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/twinmesh/twinmesh", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"}}}
	out := readVersion(bi, true).String()
	for _, want := range []string{"twinmesh v1.4.0\n", "commit      0123abcd (with uncommitted changes)", "commit time 2026-12-01T10:00:00Z", "go          go1."} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
	if out := readVersion(nil, false).String(); !strings.Contains(out, "commit      unknown") {
		t.Errorf("without build info:\n%s", out)
	}
}

// TestCommandHelp: every command answers -h with exit status 0 and a usage
// line that names its arguments (token's DEVICE_ID).
func TestCommandHelp(t *testing.T) {
	for cmd, want := range map[string]string{
		"version":           "usage: twinmesh version",
		"token":             "usage: twinmesh token [--data DIR] [--ttl 1h] [--hub-host HOST] [--secondary] DEVICE_ID",
		"serve":             "usage: twinmesh serve [flags]",
		"backup":            "usage: twinmesh backup [--data DIR] --out FILE",
		"check":             "usage: twinmesh check [--data DIR]",
		"compact":           "usage: twinmesh compact [--data DIR]",
		"bench":             "usage: twinmesh bench [flags]",
		"connection-string": "usage: twinmesh connection-string [--data DIR] [--policy NAME] --host HOST",
		"stream proxy":      "usage: twinmesh stream proxy --node URL --token T --device D --name N --listen 127.0.0.1:2222",
		"stream agent":      "usage: twinmesh stream agent --mqtt HOST:PORT --device D --key K --allow N=127.0.0.1:22[,…]",
	} {
		t.Run(cmd, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Main(append(strings.Fields(cmd), "-h"), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d\n%s%s", code, stdout.String(), stderr.String())
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, want) {
				t.Fatalf("-h output lacks %q:\n%s", want, out)
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "twinmesh ") {
		t.Fatalf("version: exit %d %q %q", code, stdout.String(), stderr.String())
	}
}

// TestVersionOfTheBinary: a binary built from this work tree names its
// commit (the environment here may set GOFLAGS=-buildvcs=false, so the
// test asks for the stamp, as `make build` does).
func TestVersionOfTheBinary(t *testing.T) {
	testutil.RequireTool(t, "git")
	bin := filepath.Join(t.TempDir(), "twinmesh")
	build := exec.Command("go", "build", "-buildvcs=true", "-ldflags", "-X github.com/twinmesh/twinmesh/api/node.BuildTime=2026-12-02T10:00:00Z", "-o", bin, "./cmd/twinmesh")
	build.Dir = testutil.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	head, err := exec.Command("git", "-C", testutil.RepoRoot(), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("git rev-parse: %v", err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "commit      "+strings.TrimSpace(string(head))) ||
		!strings.Contains(string(out), "build time  2026-12-02T10:00:00Z") {
		t.Fatalf("twinmesh version (HEAD %s): %v\n%s", head, err, out)
	}
}

// TestEnvAndConfigErrorsNameTheType: a bad value in a variable or the
// config file says what the flag expects, not just "parse error".
func TestEnvAndConfigErrorsNameTheType(t *testing.T) {
	for _, tc := range []struct{ env, value, want string }{
		{"TWINMESH_REPLICAS", "abc", `TWINMESH_REPLICAS="abc": --replicas must be an integer`},
		{"TWINMESH_IDLE_TIMEOUT", "soon", "--idle-timeout must be a duration such as 30s"},
		{"TWINMESH_DEVICE_RATE", "fast", "--device-rate must be a number"},
		{"TWINMESH_PPROF", "maybe", "--pprof must be true or false"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			var c serveConfig
			err := parseLayered(serveFlags(&c, &bytes.Buffer{}), nil, &c.Config)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	cfg := filepath.Join(t.TempDir(), "twinmesh.yaml")
	if err := os.WriteFile(cfg, []byte("max-depth: deep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var c serveConfig
	err := parseLayered(serveFlags(&c, &bytes.Buffer{}), []string{"--config", cfg}, &c.Config)
	if err == nil || !strings.Contains(err.Error(), `max-depth: "deep": --max-depth must be an integer`) {
		t.Fatalf("config file error %v", err)
	}
}

// TestSoloGossip: without --join and --gossip, a node gossips on a free
// port; any way of naming either keeps the configured address.
func TestSoloGossip(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		args      []string
		want      string
	}{
		{"alone", "", nil, "127.0.0.1:0"},
		{"--gossip", "", []string{"--gossip", "127.0.0.1:7946"}, "127.0.0.1:7946"},
		{"--join", "", []string{"--join", "10.0.0.1:7946"}, "127.0.0.1:7946"},
		{"TWINMESH_GOSSIP", "10.0.0.2:7946", nil, "10.0.0.2:7946"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("TWINMESH_GOSSIP", tc.env)
			}
			var c serveConfig
			fs := serveFlags(&c, &bytes.Buffer{})
			if err := parseLayered(fs, tc.args, &c.Config); err != nil {
				t.Fatal(err)
			}
			solo := c.soloGossip(fs)
			if c.Gossip != tc.want || solo != (tc.want == "127.0.0.1:0") {
				t.Fatalf("gossip %q (solo %v), want %q", c.Gossip, solo, tc.want)
			}
		})
	}
}

// TestTwoSoloNodesOnOneHost: two nodes started with neither --gossip nor
// --join run side by side, and say where they gossip.
func TestTwoSoloNodesOnOneHost(t *testing.T) {
	bin := testutil.Binary(t)
	var gossip []string
	for _, name := range []string{"solo-a", "solo-b"} {
		data := filepath.Join(t.TempDir(), name)
		p, err := nodeproc.Start(bin, data, []string{"serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "", "--coap", "",
			"--remote", "127.0.0.1:0", "--node-name", name}, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Kill)
		if !strings.Contains(p.Logs(), "no --join or --gossip: gossip on a free port") {
			t.Errorf("%s does not say where it gossips:\n%s", name, p.Logs())
		}
		gossip = append(gossip, p.Addr("gossip"))
	}
	if gossip[0] == gossip[1] || gossip[0] == defaultGossip || gossip[1] == defaultGossip {
		t.Fatalf("gossip addresses %v", gossip)
	}
}
