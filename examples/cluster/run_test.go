package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

var nodes = []string{"n1", "n2", "n3"}

// TestRunScript runs run.sh with random ports, checks that n1, n2 and n3
// form one cluster (every node sees three alive members), then stops them
// with `run.sh stop` and checks every process is gone after a clean exit.
func TestRunScript(t *testing.T) {
	testutil.RequireTool(t, "bash")
	bin := testutil.Build(t, "./cmd/twinmesh")
	base := t.TempDir()
	script := filepath.Join(testutil.RepoRoot(), "examples", "cluster", "run.sh")
	env := append(os.Environ(), "TWINMESH_BIN="+bin, "PORTS=random", "BASE="+base,
		"TWINMESH_API_TOKEN=", "READY_TIMEOUT=90")

	cmd := exec.Command("bash", script)
	cmd.Dir = testutil.RepoRoot()
	cmd.Env = env
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	exited := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	t.Cleanup(func() { cleanup(t, script, env, base, cmd, done) })

	testutil.Eventually(t, 4*time.Minute, "run.sh to print \"cluster ready\"", func() bool {
		if exited() {
			t.Fatalf("run.sh exited before the cluster was ready (%v):\n%s", waitErr, out.String())
		}
		return strings.Contains(out.String(), "cluster ready")
	})
	urls := table(t, out.String(), base)

	last := map[string]string{}
	defer func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("last GET /api/v1/cluster on %s: %s", n, last[n])
			}
			t.Logf("run.sh output:\n%s", out.String())
		}
	}()
	// n1 first (its token file is the one the README points at), then the
	// other two: a join is seen from both sides.
	for _, n := range nodes {
		tok, err := os.ReadFile(filepath.Join(base, n, "admin.token"))
		if err != nil {
			t.Fatal(err)
		}
		c := &testutil.Client{Base: urls[n], Token: strings.TrimSpace(string(tok)), HTTP: &http.Client{Timeout: 10 * time.Second}}
		testutil.Eventually(t, 60*time.Second, n+" to see three alive members", func() bool {
			st, _, body, err := c.Do(context.Background(), "GET", "/api/v1/cluster", nil)
			last[n] = strconv.Itoa(st) + " " + string(body)
			if err != nil {
				last[n] = err.Error()
			}
			return err == nil && st == http.StatusOK && threeAlive(body, n)
		})
	}

	pids := map[string]int{}
	for _, n := range nodes {
		b, err := os.ReadFile(filepath.Join(base, n, "pid"))
		if err != nil {
			t.Fatalf("pid file of %s: %v", n, err)
		}
		if pids[n], err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatalf("pid file of %s: %v", n, err)
		}
	}

	stop := exec.Command("bash", script, "stop")
	stop.Env = env
	if b, err := stop.CombinedOutput(); err != nil {
		t.Fatalf("run.sh stop: %v\n%s", err, b)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("run.sh still running 60 s after run.sh stop:\n%s", out.String())
	}
	if waitErr != nil {
		t.Fatalf("run.sh: %v (a node did not exit cleanly):\n%s", waitErr, out.String())
	}
	for _, n := range nodes {
		pid := pids[n]
		testutil.Eventually(t, 10*time.Second, n+" (pid "+strconv.Itoa(pid)+") to be gone", func() bool {
			return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
		})
		if _, err := os.Stat(filepath.Join(base, n, "pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pid file of %s left behind (%v)", n, err)
		}
		log, err := os.ReadFile(filepath.Join(base, n, "node.log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(log), "msg=stopped") {
			t.Errorf("%s did not log a clean stop:\n%s", n, log)
		}
	}
}

// table parses run.sh's node table: "nX http://host:port mqtt gossip token".
func table(t *testing.T, out, base string) map[string]string {
	t.Helper()
	urls := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 5 || !strings.HasPrefix(f[1], "http://") {
			continue
		}
		for _, n := range nodes {
			if f[0] != n {
				continue
			}
			if strings.HasSuffix(f[1], ":0") || strings.HasSuffix(f[2], ":0") || strings.HasSuffix(f[3], ":0") {
				t.Fatalf("%s: unbound address in %q", n, line)
			}
			if want := filepath.Join(n, "admin.token"); !strings.HasSuffix(f[4], want) {
				t.Fatalf("%s: token file %q, want …/%s", n, f[4], want)
			}
			urls[n] = f[1]
		}
	}
	if len(urls) != len(nodes) {
		t.Fatalf("node table incomplete (%v):\n%s", urls, out)
	}
	return urls
}

// threeAlive reports whether a GET /api/v1/cluster body names self and
// lists n1, n2 and n3 alive.
func threeAlive(body []byte, self string) bool {
	var v struct {
		Self    string `json:"self"`
		Members []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"members"`
	}
	if json.Unmarshal(body, &v) != nil || v.Self != self {
		return false
	}
	alive := map[string]bool{}
	for _, m := range v.Members {
		if m.State == "alive" {
			alive[m.Name] = true
		}
	}
	return len(v.Members) == len(nodes) && alive["n1"] && alive["n2"] && alive["n3"]
}

// cleanup leaves nothing running when the test failed half-way: run.sh stop,
// SIGTERM to the foreground script, and SIGKILL to whatever is left.
func cleanup(t *testing.T, script string, env []string, base string, cmd *exec.Cmd, done <-chan struct{}) {
	select {
	case <-done:
		return
	default:
	}
	stop := exec.Command("bash", script, "stop")
	stop.Env = append(env, "STOP_TIMEOUT=20")
	_ = stop.Run()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(40 * time.Second):
	}
	t.Logf("run.sh did not exit; killing it and its nodes")
	for _, n := range nodes {
		if b, err := os.ReadFile(filepath.Join(base, n, "pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_ = cmd.Process.Kill()
	<-done
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
