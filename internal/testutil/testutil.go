// Package testutil starts real twinmesh processes for process-level tests:
// it builds the binary once, runs `twinmesh serve` on loopback with random
// ports, learns the bound addresses from the log lines, and offers a small
// REST client.
package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/nodeproc"
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

// Build compiles the package at pkg (relative to the module root, e.g.
// "./examples/plugin") into a temporary binary and returns its path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// Node is a running `twinmesh serve` process.
type Node struct {
	*nodeproc.Proc
	t testing.TB
}

// Start runs `twinmesh serve` with the data folder and extra flags; ports
// default to 127.0.0.1:0. It waits for "node ready" (or fails the test).
func Start(t testing.TB, data string, extra ...string) *Node {
	t.Helper()
	return StartBinary(t, Binary(t), data, extra...)
}

// StartBinary is Start with another twinmesh build (e.g. one with plugins).
func StartBinary(t testing.TB, bin, data string, extra ...string) *Node {
	t.Helper()
	args := []string{"serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--coap", "127.0.0.1:0",
		"--gossip", "127.0.0.1:0", "--remote", "127.0.0.1:0", "--node-name", "n-" + filepath.Base(data)}
	p, err := nodeproc.Start(bin, data, append(args, extra...), 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Proc: p, t: t}
	t.Cleanup(n.Kill)
	return n
}

// URL returns the base URL of the HTTP listener.
func (n *Node) URL() string { return "http://" + n.Addr("http") }

// Stop sends SIGTERM and waits up to 30 s for a clean exit; it returns the exit code.
func (n *Node) Stop() int {
	code, err := n.Proc.Stop(30 * time.Second)
	if err != nil {
		n.t.Errorf("%v:\n%s", err, n.Logs())
	}
	return code
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

// ErrKind shortens a client error to a stable class ("timeout", "connection
// refused", "connection reset", "EOF", else its first 80 bytes), so that
// tests and the Jepsen harness can count failures by kind.
func ErrKind(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "Client.Timeout"), strings.Contains(s, "deadline exceeded"), strings.Contains(s, "i/o timeout"):
		return "timeout"
	case strings.Contains(s, "connection refused"):
		return "connection refused"
	case strings.Contains(s, "connection reset"):
		return "connection reset"
	case strings.Contains(s, "EOF"):
		return "EOF"
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
