package faults

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NodeConfig is how a node's `twinmesh serve` runs. Listeners bind the
// fixed ports on the node's own address; the rest comes from here.
type NodeConfig struct {
	// Binary is the twinmesh executable.
	Binary string
	// Data is the node's data folder (--data); it must not be shared.
	Data string
	// Log is a file every incarnation's output is appended to; default
	// Data + ".log" (beside the data folder, so restoring a snapshot keeps
	// it).
	Log string
	// Name is --node-name; default "nI".
	Name string
	// Join lists gossip addresses for --join; default every node of the
	// network (this one included, which lets the first node start alone).
	Join []string
	// Replicas is --replicas; 0 leaves the binary's default.
	Replicas int
	// APIToken is --api-token; empty lets the node generate one.
	APIToken string
	// Extra flags appended to the command line.
	Extra []string
	// ReadyTimeout bounds the wait for "node ready"; default 60 s.
	ReadyTimeout time.Duration
}

// Node is one member of the network: its namespace and, while it runs, its
// `twinmesh serve` process. Methods are safe for concurrent use.
type Node struct {
	nw    *Network
	index int

	mu          sync.Mutex
	cfg         NodeConfig
	configured  bool
	proc        *proc
	paused      bool
	incarnation int
	snapshot    string
}

// Index returns the node's 1-based index.
func (n *Node) Index() int { return n.index }

// Name returns the node name (--node-name).
func (n *Node) Name() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cfg.Name != "" {
		return n.cfg.Name
	}
	return "n" + strconv.Itoa(n.index)
}

// Addr returns the node's IP address.
func (n *Node) Addr() string { return n.nw.Addr(n.index).String() }

func (n *Node) hostPort(p int) string { return net.JoinHostPort(n.Addr(), strconv.Itoa(p)) }

// HTTPURL returns the base URL of the node's REST API.
func (n *Node) HTTPURL() string { return "http://" + n.hostPort(PortHTTP) }

// MQTTAddr returns host:port of the node's MQTT listener.
func (n *Node) MQTTAddr() string { return n.hostPort(PortMQTT) }

// GossipAddr returns host:port of the node's memberlist listener.
func (n *Node) GossipAddr() string { return n.hostPort(PortGossip) }

// LogPath returns the file the node's output is appended to.
func (n *Node) LogPath() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logPath()
}

func (n *Node) logPath() string {
	if n.cfg.Log != "" {
		return n.cfg.Log
	}
	return strings.TrimRight(n.cfg.Data, "/") + ".log"
}

// Incarnation counts the starts of the node's process (1 after the first).
func (n *Node) Incarnation() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.incarnation
}

// Running reports whether the node's process is alive (paused counts).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil && !n.proc.exited()
}

// LastExit describes how the last process ended ("exit status 1",
// "signal: killed"), or "" while it runs or before it ever ran.
func (n *Node) LastExit() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil || !n.proc.exited() || n.proc.cmd.ProcessState == nil {
		return ""
	}
	return n.proc.cmd.ProcessState.String()
}

// Paused reports whether the process is stopped by Pause.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused && n.proc != nil && !n.proc.exited()
}

// PID returns the process ID, or 0 when the node does not run.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil || n.proc.exited() {
		return 0
	}
	return n.proc.cmd.Process.Pid
}

func (n *Node) args() []string {
	c := n.cfg
	join := c.Join
	if len(join) == 0 {
		for _, m := range n.nw.nodes {
			join = append(join, m.GossipAddr())
		}
	}
	name := c.Name
	if name == "" {
		name = "n" + strconv.Itoa(n.index)
	}
	a := []string{"serve", "--data", c.Data, "--node-name", name,
		"--http", n.hostPort(PortHTTP), "--mqtt", n.hostPort(PortMQTT),
		"--gossip", n.hostPort(PortGossip), "--remote", n.hostPort(PortRemote),
		"--join", strings.Join(join, ",")}
	if c.Replicas > 0 {
		a = append(a, "--replicas", strconv.Itoa(c.Replicas))
	}
	if c.APIToken != "" {
		a = append(a, "--api-token", c.APIToken)
	}
	return append(a, c.Extra...)
}

// Start starts the node with cfg and waits until it logs "node ready".
// The error wraps ErrNotReady when the process exits or times out first
// (the process is then killed).
func (n *Node) Start(ctx context.Context, cfg NodeConfig) error {
	n.mu.Lock()
	n.cfg = cfg
	n.configured = true
	n.mu.Unlock()
	return n.Restart(ctx)
}

// Restart starts the node again with the configuration of its last Start,
// on the same data folder; a process that still runs is killed first.
func (n *Node) Restart(ctx context.Context) error {
	n.Kill()
	n.mu.Lock()
	if !n.configured {
		n.mu.Unlock()
		return fmt.Errorf("faults: n%d: Restart before Start", n.index)
	}
	if err := os.MkdirAll(n.cfg.Data, 0o700); err != nil {
		n.mu.Unlock()
		return err
	}
	n.incarnation++
	inc := n.incarnation
	args := append([]string{"netns", "exec", n.nw.nsName(n.index), n.cfg.Binary}, n.args()...)
	logPath := n.logPath()
	timeout := n.cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	n.mu.Unlock()

	p, err := startProc(args, logPath, fmt.Sprintf("faults: %s incarnation %d", n.Name(), inc))
	if err != nil {
		return fmt.Errorf("faults: start n%d: %w", n.index, err)
	}
	n.mu.Lock()
	n.proc = p
	n.paused = false
	n.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.ready:
		return nil
	case <-p.done:
		return fmt.Errorf("faults: n%d: %w: exited (%v) before ready; log in %s", n.index, ErrNotReady, p.cmd.ProcessState, logPath)
	case <-t.C:
		n.Kill()
		return fmt.Errorf("faults: n%d: %w after %v; log in %s", n.index, ErrNotReady, timeout, logPath)
	case <-ctx.Done():
		n.Kill()
		return ctx.Err()
	}
}

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil || n.proc.exited() {
		return fmt.Errorf("faults: n%d: %w", n.index, ErrNotRunning)
	}
	if err := n.proc.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("faults: n%d: %v: %w", n.index, sig, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return nil
}

// Pause stops the process with SIGSTOP (a GC pause or a frozen VM, as far
// as the other nodes can tell).
func (n *Node) Pause() error { return n.signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (n *Node) Resume() error { return n.signal(syscall.SIGCONT) }

// Kill sends SIGKILL and waits until the process is gone; a no-op when it
// does not run.
func (n *Node) Kill() {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return
	}
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
}

// Stop sends SIGTERM (and SIGCONT, should the process be paused) and waits
// up to timeout for a clean exit, then kills it. It returns the exit code
// (-1 when killed).
func (n *Node) Stop(timeout time.Duration) int {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil || p.exited() {
		return -1
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		n.Kill()
		return -1
	}
}

func (n *Node) snapshotDir() string { return strings.TrimRight(n.cfg.Data, "/") + ".snapshot" }

// Snapshot copies the data folder aside. A running process is paused for
// the copy (a crash-consistent image, as after SIGKILL) and resumed after,
// unless it was paused already.
func (n *Node) Snapshot() error {
	wasPaused := n.Paused()
	running := n.Running()
	if running && !wasPaused {
		if err := n.Pause(); err != nil {
			return err
		}
		defer func() { _ = n.Resume() }()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	dst := n.snapshotDir()
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := copyDir(n.cfg.Data, dst); err != nil {
		return fmt.Errorf("faults: snapshot n%d: %w", n.index, err)
	}
	n.snapshot = dst
	return nil
}

// HasSnapshot reports whether Snapshot was taken.
func (n *Node) HasSnapshot() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.snapshot != ""
}

// RestoreSnapshot kills the process and replaces the data folder with the
// copy Snapshot took (which stays, for another restore). Restart the node
// after.
func (n *Node) RestoreSnapshot() error {
	n.Kill()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.snapshot == "" {
		return fmt.Errorf("faults: n%d: %w", n.index, ErrNoSnapshot)
	}
	if err := os.RemoveAll(n.cfg.Data); err != nil {
		return err
	}
	if err := copyDir(n.snapshot, n.cfg.Data); err != nil {
		return fmt.Errorf("faults: restore n%d: %w", n.index, err)
	}
	return nil
}

func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

// proc is one incarnation of a node process. Its output goes line by line
// to the log file; ready closes at the first "node ready" line, done when
// the process has exited and its output is drained.
type proc struct {
	cmd   *exec.Cmd
	ready chan struct{}
	done  chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func startProc(args []string, logPath, header string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "### %s %s: ip %s\n", time.Now().UTC().Format(time.RFC3339Nano), header, strings.Join(args, " "))
	cmd := exec.Command("ip", args...)
	// The node dies with the test: a test binary killed by its timeout
	// leaves no cluster behind (New removes the namespaces later).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	for _, e := range os.Environ() {
		// The node reads TWINMESH_<FLAG> variables: keep the test's own
		// settings away from it.
		if !strings.HasPrefix(e, "TWINMESH_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		logf.Close()
		return nil, err
	}
	pw.Close()
	p := &proc{cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer logf.Close()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		signalled := false
		for sc.Scan() {
			// Unbuffered: the log file is read while the node runs.
			_, _ = logf.Write(append(sc.Bytes(), '\n'))
			if !signalled && strings.Contains(sc.Text(), `msg="node ready"`) {
				signalled = true
				close(p.ready)
			}
		}
		_ = cmd.Wait()
		fmt.Fprintf(logf, "### %s exited: %v\n", time.Now().UTC().Format(time.RFC3339Nano), cmd.ProcessState)
	}()
	return p, nil
}
