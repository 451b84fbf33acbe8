// Package testutil starts real twinmesh processes for process-level tests:
// it builds the binary once, runs `twinmesh serve` on loopback with random
// ports, learns the bound addresses from the log lines, and offers a small
// REST client.
package testutil

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// RepoRoot returns the module root (the folder holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Binary builds ./cmd/twinmesh once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "twinmesh-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "twinmesh")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/twinmesh")
		cmd.Dir = RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Node is a running `twinmesh serve` process.
type Node struct {
	t     testing.TB
	Cmd   *exec.Cmd
	Data  string
	Addrs map[string]string // listener name → bound address (http, mqtt, mqtts, gossip, remote)
	Token string

	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
}

var listenRE = regexp.MustCompile(`msg=listening listener=(\w+) addr=(\S+)`)

// Start runs `twinmesh serve` with the data folder and extra flags; ports
// default to 127.0.0.1:0. It waits for "node ready" (or fails the test).
func Start(t testing.TB, data string, extra ...string) *Node {
	t.Helper()
	return StartBinary(t, Binary(t), data, extra...)
}

// StartBinary is Start with another twinmesh build (e.g. one with plugins).
func StartBinary(t testing.TB, bin, data string, extra ...string) *Node {
	t.Helper()
	args := []string{"serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0",
		"--gossip", "127.0.0.1:0", "--remote", "127.0.0.1:0", "--node-name", "n-" + filepath.Base(data)}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TWINMESH_API_TOKEN=")
	n := &Node{t: t, Cmd: cmd, Data: data, Addrs: map[string]string{}, done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		defer close(n.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			n.logs.WriteString(line + "\n")
			if m := listenRE.FindStringSubmatch(line); m != nil {
				n.Addrs[m[1]] = m[2]
			}
			n.mu.Unlock()
			if !signalled && strings.Contains(line, "msg=\"node ready\"") {
				signalled = true
				close(ready)
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-n.done:
		t.Fatalf("twinmesh exited before ready:\n%s", n.Logs())
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("twinmesh not ready after 60s:\n%s", n.Logs())
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	n.Token = strings.TrimSpace(string(tok))
	t.Cleanup(func() { n.Kill() })
	return n
}

// Logs returns everything the process logged so far.
func (n *Node) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.String()
}

// Addr returns the bound address of a listener.
func (n *Node) Addr(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.Addrs[name]
}

// URL returns the base URL of the HTTP listener.
func (n *Node) URL() string { return "http://" + n.Addr("http") }

// Kill sends SIGKILL and waits for the process to be gone.
func (n *Node) Kill() {
	if n.Cmd.ProcessState == nil {
		_ = n.Cmd.Process.Signal(syscall.SIGKILL)
	}
	<-n.done
}

// Stop sends SIGTERM and waits up to 30 s for a clean exit; it returns the exit code.
func (n *Node) Stop() int {
	_ = n.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		n.t.Errorf("twinmesh did not stop within 30s after SIGTERM:\n%s", n.Logs())
		n.Kill()
	}
	return n.Cmd.ProcessState.ExitCode()
}

// Client is a small JSON client for the REST API.
type Client struct {
	Base  string
	Token string
	HTTP  *http.Client
}

// Client returns a REST client authenticated with the node's admin token.
func (n *Node) Client() *Client {
	return &Client{Base: n.URL(), Token: n.Token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Do sends a request with an optional JSON body and headers, returning the
// status, the response headers and the body.
func (c *Client) Do(ctx context.Context, method, path string, body any, headers ...string) (int, http.Header, []byte, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return 0, nil, nil, err
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, out, err
}

// MustDo is Do that fails the test on a transport error or an unexpected status.
func (c *Client) MustDo(t testing.TB, method, path string, body any, want int, headers ...string) []byte {
	t.Helper()
	st, _, out, err := c.Do(context.Background(), method, path, body, headers...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if st != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, st, want, out)
	}
	return out
}

// Eventually polls cond every 20 ms until it returns true or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

// RequireTool returns the path of a command; when it is missing the test is
// skipped, except under CI=true where a missing dependency is a failure.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI (make test installs it): %v", name, err)
	}
	t.Skipf("%s not installed (run make deps)", name)
	return ""
}
