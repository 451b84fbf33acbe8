package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/internal/loadgen"
)

// benchWorkerCommand is the hidden command `bench --connect-only` runs in
// each of its worker processes (this binary, re-executed): a process may
// open at most RLIMIT_NOFILE sockets, so a large population is spread over
// several. The job comes as one JSON line on stdin; status lines go to
// stdout; "check" on stdin pings every session; EOF closes them and exits.
const benchWorkerCommand = "__bench-worker"

// workerJob is what a worker process opens and holds.
type workerJob struct {
	Brokers     []string          `json:"brokers"`
	Sources     []string          `json:"sources,omitempty"`
	First       int               `json:"first"`
	Sessions    []loadgen.Session `json:"sessions"`
	Rate        float64           `json:"rate"`
	Timeout     time.Duration     `json:"timeout"`
	MaxFailures int               `json:"maxFailures"`
}

// workerLine is one status line of a worker.
type workerLine struct {
	Status *loadgen.HoldStatus `json:"status,omitempty"`
	Opened bool                `json:"opened,omitempty"`
	Alive  *int                `json:"alive,omitempty"`
	Err    string              `json:"err,omitempty"`
}

// benchWorkerMain runs a worker process (see benchWorkerCommand).
func benchWorkerMain(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) int {
	in := bufio.NewReader(stdin)
	var job workerJob
	line, err := in.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &job)
	}
	if err == nil && len(job.Brokers) == 0 {
		err = errors.New("no broker")
	}
	var mu sync.Mutex
	enc := json.NewEncoder(stdout)
	emit := func(l workerLine) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(l)
	}
	if err != nil {
		emit(workerLine{Err: "bad job: " + err.Error()})
		fmt.Fprintf(stderr, "bench worker: %v\n", err)
		return 2
	}
	var sources []net.IP
	for _, s := range job.Sources {
		sources = append(sources, net.ParseIP(s))
	}
	h, st := loadgen.Open(ctx, loadgen.HoldConfig{Brokers: job.Brokers, Sources: sources, Sessions: job.Sessions, First: job.First,
		Rate: job.Rate, Timeout: job.Timeout, MaxFailures: job.MaxFailures,
		Progress: func(s loadgen.HoldStatus) { emit(workerLine{Status: &s}) }})
	defer h.Close()
	emit(workerLine{Status: &st, Opened: true})
	for {
		cmd, err := in.ReadString('\n')
		if strings.TrimSpace(cmd) == "check" {
			alive := h.Check(ctx, 10*time.Second)
			emit(workerLine{Alive: &alive})
		}
		if err != nil {
			return 0 // stdin closed: the parent is done (or gone)
		}
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// benchWorker is one worker process and what it last reported.
type benchWorker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed when the reader goroutine ended

	mu     sync.Mutex
	status loadgen.HoldStatus
	opened bool
	alive  chan int
	err    error
}

// startBenchWorker starts a worker process with its job.
func startBenchWorker(ctx context.Context, exe string, job workerJob, stderr io.Writer) (*benchWorker, error) {
	cmd := exec.CommandContext(ctx, exe, benchWorkerCommand)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bench worker %s: %w", exe, err)
	}
	w := &benchWorker{cmd: cmd, stdin: stdin, done: make(chan struct{}), alive: make(chan int, 1)}
	go w.read(out)
	b, _ := json.Marshal(job)
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		w.stop()
		return nil, fmt.Errorf("bench worker job: %w", err)
	}
	return w, nil
}

// read follows the worker's status lines until it exits.
func (w *benchWorker) read(out io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l workerLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		w.mu.Lock()
		if l.Status != nil {
			w.status = *l.Status
		}
		w.opened = w.opened || l.Opened
		if l.Err != "" && w.err == nil {
			w.err = errors.New(l.Err)
		}
		w.mu.Unlock()
		if l.Alive != nil {
			select {
			case w.alive <- *l.Alive:
			default:
			}
		}
	}
	w.mu.Lock()
	if !w.opened && w.err == nil {
		w.err = errors.New("bench worker exited before it opened its sessions")
	}
	w.opened = true
	w.mu.Unlock()
}

// state returns the worker's last status and whether it is done opening
// (or gone).
func (w *benchWorker) state() (loadgen.HoldStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	if w.err != nil && s.FirstError == "" {
		s.FirstError = w.err.Error()
	}
	return s, w.opened
}

// check asks the worker to ping its sessions and returns how many answered.
func (w *benchWorker) check(ctx context.Context) (int, error) {
	if _, err := io.WriteString(w.stdin, "check\n"); err != nil {
		return 0, fmt.Errorf("bench worker: %w", err)
	}
	select {
	case n := <-w.alive:
		return n, nil
	case <-w.done:
		return 0, errors.New("bench worker exited during the check")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// stop closes the worker's stdin (it closes its sessions and exits) and
// waits for it, killing it after 30 s.
func (w *benchWorker) stop() {
	_ = w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
	}
	_ = w.cmd.Wait()
}
