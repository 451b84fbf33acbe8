// Package nodeproc runs a `twinmesh serve` process and learns what it bound:
// it parses the "listening" log lines, waits for "node ready" and reads the
// admin token. The load generator and the process-level tests share it.
package nodeproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a running node.
type Proc struct {
	Cmd   *exec.Cmd
	Data  string
	Token string

	mu    sync.Mutex
	addrs map[string]string
	logs  bytes.Buffer
	done  chan struct{}
}

var listenRE = regexp.MustCompile(`msg=listening listener=(\w+) addr=(\S+)`)

// maxLog bounds the log kept in memory.
const maxLog = 4 << 20

// Start runs bin with args (which must include `serve --data data`) and
// waits up to timeout for the node to be ready.
func Start(bin, data string, args []string, timeout time.Duration) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TWINMESH_API_TOKEN=")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, Data: data, addrs: map[string]string{}, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			if p.logs.Len() < maxLog {
				p.logs.WriteString(line + "\n")
			}
			if m := listenRE.FindStringSubmatch(line); m != nil {
				p.addrs[m[1]] = m[2]
			}
			p.mu.Unlock()
			if !signalled && strings.Contains(line, `msg="node ready"`) {
				signalled = true
				close(ready)
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-p.done:
		return nil, fmt.Errorf("twinmesh exited before ready:\n%s", p.Logs())
	case <-time.After(timeout):
		p.Kill()
		return nil, fmt.Errorf("twinmesh not ready after %v:\n%s", timeout, p.Logs())
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("admin token: %w", err)
	}
	p.Token = strings.TrimSpace(string(tok))
	return p, nil
}

// Logs returns what the process logged so far.
func (p *Proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Addr returns the bound address of a listener ("http", "mqtt", …).
func (p *Proc) Addr(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[name]
}

// Addrs returns every bound listener.
func (p *Proc) Addrs() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.addrs))
	for k, v := range p.addrs {
		out[k] = v
	}
	return out
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	select {
	case <-p.done: // exited and waited for
	default:
		// Not ProcessState: the reader goroutine's Wait writes it.
		_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// ErrStopTimeout is returned by Stop when SIGTERM did not end the process.
var ErrStopTimeout = errors.New("twinmesh did not stop after SIGTERM")

// Stop sends SIGTERM and waits up to timeout (then SIGKILLs); it returns the
// exit code.
func (p *Proc) Stop(timeout time.Duration) (int, error) {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		p.Kill()
		return -1, ErrStopTimeout
	}
}
