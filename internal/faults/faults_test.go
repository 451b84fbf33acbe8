package faults

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as the programs run inside the namespaces:
// FAULTS_HELPER=serve listens on the address in FAULTS_ADDR and answers
// "ok" on every connection; FAULTS_HELPER=dial connects to FAULTS_ADDR and
// exits 0 when it got the answer within a second; FAULTS_HELPER=node acts
// as a `twinmesh serve` (logs "node ready", serves "ok" on its --http).
func TestMain(m *testing.M) {
	switch os.Getenv("FAULTS_HELPER") {
	case "serve":
		serve(os.Getenv("FAULTS_ADDR"))
	case "dial":
		if err := dial(os.Getenv("FAULTS_ADDR"), time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0)
	case "node":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		httpAddr := fs.String("http", "", "")
		data := fs.String("data", "", "")
		fs.String("mqtt", "", "")
		fs.String("gossip", "", "")
		fs.String("remote", "", "")
		fs.String("join", "", "")
		fs.String("node-name", "", "")
		fs.Int("replicas", 0, "")
		fs.String("api-token", "", "")
		if err := fs.Parse(os.Args[2:]); err != nil {
			os.Exit(2)
		}
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			os.Exit(1)
		}
		_ = os.WriteFile(filepath.Join(*data, "started"), []byte(time.Now().String()), 0o644)
		fmt.Fprintf(os.Stderr, "level=INFO msg=\"node ready\" data=%s\n", *data)
		accept(ln)
	}
	os.Exit(m.Run())
}

func serve(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	accept(ln)
}

func accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		_, _ = c.Write([]byte("ok\n"))
		c.Close()
	}
}

func dial(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ok\n" {
		return fmt.Errorf("answer %q", line)
	}
	return nil
}

// gate keeps these tests out of `go test ./...` until the fault-injection
// suite is switched on (see internal/jepsen).
func gate(t *testing.T) {
	t.Helper()
	if os.Getenv("TWINMESH_JEPSEN") != "1" {
		t.Skip("fault-injection tests run with TWINMESH_JEPSEN=1 (make jepsen)")
	}
	Require(t)
}

func newNetwork(t *testing.T, n int) *Network {
	t.Helper()
	nw, err := New(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nw.Close() })
	return nw
}

// startServer runs the "serve" helper in node i's namespace on port 9000.
func startServer(t *testing.T, nw *Network, i int) string {
	t.Helper()
	addr := net.JoinHostPort(nw.Addr(i).String(), "9000")
	cmd := nw.Command(context.Background(), i, os.Args[0])
	cmd.Env = append(os.Environ(), "FAULTS_HELPER=serve", "FAULTS_ADDR="+addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for dial(addr, 200*time.Millisecond) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("helper server on n%d did not answer", i)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr
}

// reach reports whether node from (0: the root namespace) can connect to
// node to's helper server.
func reach(t *testing.T, nw *Network, from, to int) bool {
	t.Helper()
	addr := net.JoinHostPort(nw.Addr(to).String(), "9000")
	if from == 0 {
		return dial(addr, time.Second) == nil
	}
	cmd := nw.Command(context.Background(), from, os.Args[0])
	cmd.Env = append(os.Environ(), "FAULTS_HELPER=dial", "FAULTS_ADDR="+addr)
	return cmd.Run() == nil
}

func TestPartitionCutHeal(t *testing.T) {
	gate(t)
	ctx := context.Background()
	nw := newNetwork(t, 3)
	for i := 1; i <= 3; i++ {
		startServer(t, nw, i)
	}
	want := func(what string, from, to int, ok bool) {
		t.Helper()
		if got := reach(t, nw, from, to); got != ok {
			t.Errorf("%s: n%d → n%d reachable = %v, want %v", what, from, to, got, ok)
		}
	}
	want("before", 1, 2, true)
	want("before", 0, 2, true)

	if err := nw.Partition(ctx, []int{1}, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	want("partition", 1, 2, false)
	want("partition", 2, 1, false)
	want("partition", 3, 1, false)
	want("partition", 2, 3, true)
	for i := 1; i <= 3; i++ {
		want("partition, from the test", 0, i, true)
	}
	if got := len(nw.Blocked()); got != 4 {
		t.Errorf("Blocked() = %v, want 4 links", nw.Blocked())
	}
	if err := nw.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	want("healed", 1, 2, true)
	want("healed", 3, 1, true)

	// One way: what n1 sends to n2 is dropped, so n1 cannot connect to n2
	// (its SYN is lost) — and n2 cannot connect to n1 either (the SYN-ACK
	// is lost): TCP needs both ways. n3 is untouched.
	if err := nw.Cut(ctx, []int{1}, []int{2}); err != nil {
		t.Fatal(err)
	}
	if b := nw.Blocked(); len(b) != 1 || b[0] != [2]int{1, 2} {
		t.Errorf("Blocked() = %v, want [[1 2]]", b)
	}
	want("cut 1→2", 1, 2, false)
	want("cut 1→2", 2, 1, false)
	want("cut 1→2", 1, 3, true)
	want("cut 1→2", 3, 2, true)
	if err := nw.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	want("healed", 1, 2, true)
}

func TestDegrade(t *testing.T) {
	gate(t)
	ctx := context.Background()
	nw := newNetwork(t, 2)
	startServer(t, nw, 1)
	startServer(t, nw, 2)
	rtt := func(from, to int) time.Duration {
		t0 := time.Now()
		if !reach(t, nw, from, to) {
			return -1
		}
		return time.Since(t0)
	}
	base := rtt(1, 2)
	if err := nw.Degrade(ctx, []int{1}, Degradation{Loss: 1}); err != nil {
		t.Fatal(err)
	}
	if reach(t, nw, 1, 2) {
		t.Error("n1 → n2 connected with 100% loss")
	}
	if !reach(t, nw, 2, 2) || !reach(t, nw, 0, 1) {
		t.Error("100% loss on n1's links to nodes cut other traffic")
	}
	if err := nw.Degrade(ctx, []int{1}, Degradation{Rate: 100 << 10}); err != nil {
		t.Fatal(err)
	}
	if d := rtt(1, 2); d < 0 {
		t.Error("n1 → n2 unreachable with only a rate cap")
	}
	if err := DelaySupported(); err != nil {
		t.Logf("delay not checked: %v", err)
		if err := nw.Degrade(ctx, []int{1}, Degradation{Delay: time.Second}); !errors.Is(err, ErrNoNetem) {
			t.Errorf("Degrade with a delay on a kernel without netem: %v, want ErrNoNetem", err)
		}
	} else {
		if err := nw.Degrade(ctx, []int{1}, Degradation{Delay: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if d := rtt(1, 2); d < base+250*time.Millisecond {
			t.Errorf("with 300ms delay n1 → n2 took %v (without: %v)", d, base)
		}
		t0 := time.Now()
		if !reach(t, nw, 0, 1) || time.Since(t0) > 200*time.Millisecond {
			t.Errorf("root → n1 took %v with a delay on n1's links to nodes", time.Since(t0))
		}
	}
	if err := nw.HealDegrade(ctx); err != nil {
		t.Fatal(err)
	}
	if d := rtt(1, 2); d < 0 || d > base+200*time.Millisecond {
		t.Errorf("after HealDegrade n1 → n2 took %v (before: %v)", d, base)
	}
	out, _ := nw.Command(ctx, 1, "nft", "list", "ruleset").CombinedOutput()
	if strings.Contains(string(out), "twinmesh_faults") {
		t.Errorf("nftables table left after HealDegrade:\n%s", out)
	}
}

func TestNodeLifecycle(t *testing.T) {
	gate(t)
	ctx := context.Background()
	nw := newNetwork(t, 1)
	n := nw.Node(1)
	data := filepath.Join(t.TempDir(), "n1")
	cfg := NodeConfig{Binary: os.Args[0], Data: data, ReadyTimeout: 10 * time.Second}
	t.Setenv("FAULTS_HELPER", "node")
	if err := n.Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(n.HTTPURL(), "http://")
	if err := dial(addr, time.Second); err != nil {
		t.Fatalf("node not serving: %v", err)
	}
	if err := n.Pause(); err != nil {
		t.Fatal(err)
	}
	if !n.Paused() {
		t.Error("Paused() = false after Pause")
	}
	if err := dial(addr, 500*time.Millisecond); err == nil {
		t.Error("a paused node answered")
	}
	if err := n.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := dial(addr, time.Second); err != nil {
		t.Errorf("resumed node: %v", err)
	}

	if err := os.WriteFile(filepath.Join(data, "state"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if n.Paused() {
		t.Error("Snapshot left the node paused")
	}
	if err := os.WriteFile(filepath.Join(data, "state"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.Kill()
	if n.Running() {
		t.Error("Running() after Kill")
	}
	if err := dial(addr, 500*time.Millisecond); err == nil {
		t.Error("a killed node answered")
	}
	if err := n.RestoreSnapshot(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(data, "state")); string(b) != "old" {
		t.Errorf("after RestoreSnapshot state = %q, want old", b)
	}
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Incarnation() != 2 {
		t.Errorf("Incarnation() = %d, want 2", n.Incarnation())
	}
	if err := dial(addr, time.Second); err != nil {
		t.Errorf("restarted node: %v", err)
	}
	logs, _ := os.ReadFile(n.LogPath())
	if c := strings.Count(string(logs), `msg="node ready"`); c != 2 {
		t.Errorf("log has %d ready lines, want 2:\n%s", c, logs)
	}
}

// A run whose owner died is removed by the next New.
func TestLeftoversRemoved(t *testing.T) {
	gate(t)
	ctx := context.Background()
	old, err := New(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = old.Close() })
	// Pretend its owner crashed: a PID that cannot be alive.
	raw, _ := os.ReadFile(old.state)
	f := strings.Fields(string(raw))
	if err := os.WriteFile(old.state, []byte("999999999 "+f[1]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	newNetwork(t, 1)
	for _, ns := range listNetns(ctx) {
		if runOf(ns) == old.ID() {
			t.Errorf("namespace %s of the dead run is still there", ns)
		}
	}
	if _, err := os.Stat(old.state); !os.IsNotExist(err) {
		t.Errorf("state file of the dead run: %v", err)
	}
}

func TestRunOf(t *testing.T) {
	for name, want := range map[string]string{
		"tmj1a2b-n3":  "tmj1a2b",
		"tmj1a2b-hub": "tmj1a2b",
		"tmj1a2b-h":   "tmj1a2b",
		"tmj1a2-n3":   "",
		"eth0":        "",
		"tmjabcd":     "",
	} {
		if got := runOf(name); got != want {
			t.Errorf("runOf(%q) = %q, want %q", name, got, want)
		}
	}
}
