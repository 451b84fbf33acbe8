package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Prefix starts the name of every namespace, link and state file this
// package makes; leftovers of crashed runs are recognised by it.
const Prefix = "tmj"

// Fixed ports every node binds on its own address.
const (
	PortHTTP   = 8080
	PortMQTT   = 1883
	PortGossip = 7946
	PortRemote = 7950
)

// Network is one run's private network: a hub namespace with a bridge, one
// namespace per node and a veth from the root namespace. Its methods are
// safe for concurrent use; faults are applied in the order the calls
// happen.
type Network struct {
	id     string // e.g. "tmj1a2b"
	subnet int    // X in 10.77.X.0/24
	state  string // state file
	nodes  []*Node

	mu      sync.Mutex
	blocked map[int]map[int]bool // blocked[to][from]: packets from → to are dropped
	loss    map[int]float64      // share of packets a node's sends to other nodes that are dropped
	shaped  map[int]bool         // nodes with a tc qdisc from Degrade
}

// Available reports whether this process can build a Network: it must be
// root and `ip netns`, `tc` and `nft` must work. The error wraps
// ErrUnavailable.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root (uid %d)", ErrUnavailable, os.Geteuid())
	}
	for _, tool := range []string{"ip", "tc", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not installed (Debian package %s)", ErrUnavailable, tool, map[string]string{"ip": "iproute2", "tc": "iproute2", "nft": "nftables"}[tool])
		}
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		return fmt.Errorf("%w: ip netns list: %v: %s", ErrUnavailable, err, bytes.TrimSpace(out))
	}
	return nil
}

// Require skips the test when Available fails, or fails it when CI=true
// (CI must have what these tests need).
func Require(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: the fault-injection tests must run; run as root with iproute2 and nftables installed)", err)
	}
	t.Skipf("skipping: %v (needs root, iproute2 and nftables)", err)
}

// New builds a network for n nodes, after removing what crashed earlier
// runs left behind. Close removes it; call Close even when New fails
// half-way (New cleans up after itself in that case).
func New(ctx context.Context, n int) (*Network, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("faults: %d nodes: want 1 to 200", n)
	}
	dir := stateDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("faults: state folder: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, err
	}
	removeLeftovers(ctx, dir)
	nw, err := claim(dir)
	unlock()
	if err != nil {
		return nil, err
	}
	nw.blocked = map[int]map[int]bool{}
	nw.loss = map[int]float64{}
	nw.shaped = map[int]bool{}
	if err := nw.build(ctx, n); err != nil {
		_ = nw.Close()
		return nil, err
	}
	return nw, nil
}

func stateDir() string {
	if f, err := os.CreateTemp("/run", ".twinmesh-faults-probe-"); err == nil {
		f.Close()
		os.Remove(f.Name())
		return "/run/twinmesh-faults"
	}
	return filepath.Join(os.TempDir(), "twinmesh-faults")
}

// lockFile takes an exclusive flock on path; the returned func releases it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("faults: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("faults: lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// runState is what a state file holds: "pid subnet".
type runState struct {
	id     string
	pid    int
	subnet int
}

func readStates(dir string) []runState {
	ents, _ := os.ReadDir(dir)
	var out []runState
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), Prefix) {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw))
		st := runState{id: e.Name()}
		if len(f) == 2 {
			st.pid, _ = strconv.Atoi(f[0])
			st.subnet, _ = strconv.Atoi(f[1])
		}
		out = append(out, st)
	}
	return out
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removeLeftovers tears down every run whose owner is gone, and every
// namespace or root link with the prefix that no state file claims.
func removeLeftovers(ctx context.Context, dir string) {
	live := map[string]bool{}
	for _, st := range readStates(dir) {
		if alive(st.pid) { // this process's own runs included
			live[st.id] = true
			continue
		}
		teardown(ctx, st.id)
		os.Remove(filepath.Join(dir, st.id))
	}
	for _, ns := range listNetns(ctx) {
		if id := runOf(ns); id != "" && !live[id] {
			teardown(ctx, id)
		}
	}
	out, _ := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		if id := runOf(name); id != "" && !live[id] {
			_ = exec.CommandContext(ctx, "ip", "link", "del", name).Run()
		}
	}
}

// runOf returns the run ID of a name made by this package ("tmj1a2b-n3" →
// "tmj1a2b"), or "".
func runOf(name string) string {
	if !strings.HasPrefix(name, Prefix) {
		return ""
	}
	id, _, ok := strings.Cut(name, "-")
	if !ok || len(id) != len(Prefix)+4 {
		return ""
	}
	return id
}

func listNetns(ctx context.Context) []string {
	out, _ := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// teardown kills what runs in the run's namespaces and deletes them and
// the root end of its veth. Errors are ignored: it removes what exists.
func teardown(ctx context.Context, id string) {
	for _, ns := range listNetns(ctx) {
		if runOf(ns) != id {
			continue
		}
		out, _ := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGCONT)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = exec.CommandContext(ctx, "ip", "netns", "del", ns).Run()
	}
	_ = exec.CommandContext(ctx, "ip", "link", "del", id+"-h").Run()
}

// claim picks a run ID and a free subnet and writes the state file.
func claim(dir string) (*Network, error) {
	used := map[int]bool{}
	ids := map[string]bool{}
	for _, st := range readStates(dir) {
		used[st.subnet] = true
		ids[st.id] = true
	}
	var b [2]byte
	id := ""
	for id == "" || ids[id] {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		id = Prefix + hex.EncodeToString(b[:])
	}
	for x := 1; x < 255; x++ {
		if used[x] {
			continue
		}
		path := filepath.Join(dir, id)
		if err := os.WriteFile(path, []byte(fmt.Sprintf("%d %d\n", os.Getpid(), x)), 0o644); err != nil {
			return nil, fmt.Errorf("faults: state file: %w", err)
		}
		return &Network{id: id, subnet: x, state: path}, nil
	}
	return nil, ErrNoSubnet
}

func run(ctx context.Context, stdin string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (nw *Network) hub() string { return nw.id + "-hub" }

// build makes the hub, the bridge, the host veth and n node namespaces.
func (nw *Network) build(ctx context.Context, n int) error {
	hub := nw.hub()
	host := nw.id + "-h"
	steps := [][]string{
		{"ip", "netns", "add", hub},
		{"ip", "-n", hub, "link", "set", "lo", "up"},
		{"ip", "-n", hub, "link", "add", "name", "br0", "type", "bridge"},
		{"ip", "-n", hub, "link", "set", "br0", "up"},
		{"ip", "link", "add", "name", host, "type", "veth", "peer", "name", "hp", "netns", hub},
		{"ip", "-n", hub, "link", "set", "hp", "master", "br0", "up"},
		{"ip", "addr", "add", nw.HostAddr().String() + "/24", "dev", host},
		{"ip", "link", "set", host, "up"},
	}
	for i := 1; i <= n; i++ {
		ns := nw.nsName(i)
		port := "p" + strconv.Itoa(i)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", hub, "link", "add", "name", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", hub, "link", "set", port, "master", "br0", "up"},
			[]string{"ip", "-n", ns, "addr", "add", nw.Addr(i).String() + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := run(ctx, "", s[0], s[1:]...); err != nil {
			return fmt.Errorf("faults: build network: %w", err)
		}
	}
	for i := 1; i <= n; i++ {
		nw.nodes = append(nw.nodes, &Node{nw: nw, index: i})
	}
	return nil
}

// Close kills every process left in the run's namespaces and removes the
// namespaces, links and state file. It is idempotent.
func (nw *Network) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nw.nodes {
		n.Kill()
	}
	teardown(ctx, nw.id)
	os.Remove(nw.state)
	return nil
}

// ID returns the run ID ("tmj1a2b"), the prefix of every name the run uses.
func (nw *Network) ID() string { return nw.id }

// Size returns the number of nodes.
func (nw *Network) Size() int { return len(nw.nodes) }

// Node returns node i, 1-based.
func (nw *Network) Node(i int) *Node { return nw.nodes[i-1] }

// HostAddr is the root namespace's address on the network (10.77.X.1):
// the test's connections to the nodes come from it.
func (nw *Network) HostAddr() netip.Addr { return netip.AddrFrom4([4]byte{10, 77, byte(nw.subnet), 1}) }

// Addr returns node i's address (10.77.X.(10+i)).
func (nw *Network) Addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 77, byte(nw.subnet), byte(10 + i)})
}

func (nw *Network) nsName(i int) string { return fmt.Sprintf("%s-n%d", nw.id, i) }

// Namespace returns the name of node i's namespace, for `ip netns exec`.
func (nw *Network) Namespace(i int) string { return nw.nsName(i) }

// Command returns a command that runs name with args inside node i's
// namespace (through `ip netns exec`, which execs the program: the PID is
// the program's own).
func (nw *Network) Command(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", nw.nsName(i), name}, args...)...)
}

// Partition drops all traffic between the nodes in a and those in b, both
// ways. It adds to the faults already in force.
func (nw *Network) Partition(ctx context.Context, a, b []int) error {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			nw.block(x, y)
			nw.block(y, x)
		}
	}
	return nw.apply(ctx, append(append([]int(nil), a...), b...))
}

// Cut drops what the nodes in from send to the nodes in to (a one-way
// partition: to's packets still reach from). It adds to the faults
// already in force.
func (nw *Network) Cut(ctx context.Context, from, to []int) error {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for _, x := range from {
		for _, y := range to {
			nw.block(x, y)
		}
	}
	return nw.apply(ctx, to)
}

func (nw *Network) block(from, to int) {
	if from == to {
		return
	}
	if nw.blocked[to] == nil {
		nw.blocked[to] = map[int]bool{}
	}
	nw.blocked[to][from] = true
}

// Heal removes every partition and cut.
func (nw *Network) Heal(ctx context.Context) error {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var touched []int
	for to := range nw.blocked {
		touched = append(touched, to)
	}
	nw.blocked = map[int]map[int]bool{}
	return nw.apply(ctx, touched)
}

// Blocked returns the directed links that are cut now, as "from→to" pairs
// of node indexes, sorted.
func (nw *Network) Blocked() [][2]int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var out [][2]int
	for to, froms := range nw.blocked {
		for from := range froms {
			out = append(out, [2]int{from, to})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i][0] != out[j][0] {
			return out[i][0] < out[j][0]
		}
		return out[i][1] < out[j][1]
	})
	return out
}

// apply rewrites the nftables table of each listed node from nw.blocked
// and nw.loss, atomically per node (one nft transaction).
func (nw *Network) apply(ctx context.Context, nodes []int) error {
	done := map[int]bool{}
	var errs []error
	for _, i := range nodes {
		if done[i] {
			continue
		}
		done[i] = true
		var srcs []string
		for from := range nw.blocked[i] {
			srcs = append(srcs, nw.Addr(from).String())
		}
		sort.Strings(srcs)
		// Creating the table before deleting it makes the delete valid
		// whether or not the table existed.
		script := "table inet twinmesh_faults\ndelete table inet twinmesh_faults\n"
		var rules []string
		if len(srcs) > 0 {
			rules = append(rules, "  chain input {\n    type filter hook input priority -10; policy accept;\n"+
				"    ip saddr { "+strings.Join(srcs, ", ")+" } drop\n  }\n")
		}
		if l := nw.loss[i]; l > 0 {
			var peers []string
			for j := range nw.nodes {
				if j+1 != i {
					peers = append(peers, nw.Addr(j+1).String())
				}
			}
			random := fmt.Sprintf("numgen random mod 1000000 < %d ", int(l*1e6))
			if l >= 1 {
				random = ""
			}
			if len(peers) > 0 {
				rules = append(rules, "  chain output {\n    type filter hook output priority -10; policy accept;\n"+
					fmt.Sprintf("    ip daddr { %s } %sdrop\n  }\n", strings.Join(peers, ", "), random))
			}
		}
		if len(rules) > 0 {
			script += "table inet twinmesh_faults {\n" + strings.Join(rules, "") + "}\n"
		}
		if err := run(ctx, script, "ip", "netns", "exec", nw.nsName(i), "nft", "-f", "-"); err != nil {
			errs = append(errs, fmt.Errorf("faults: nftables on n%d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}
