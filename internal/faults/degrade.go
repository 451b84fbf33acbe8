package faults

// Packet loss, delay and rate caps on the nodes' links.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Degradation is what Degrade does to the packets a node sends to other
// nodes.
type Degradation struct {
	// Loss is the share of packets dropped, 0 to 1 (nftables numgen).
	Loss float64
	// Rate caps the bandwidth in bytes per second (tc htb); 0 for none.
	// Queueing behind the cap delays packets when the link is busy.
	Rate int64
	// Delay, with ±Jitter, is added to every packet (tc netem). Kernels
	// without sch_netem refuse it: see DelaySupported.
	Delay, Jitter time.Duration
}

func (d Degradation) String() string {
	var parts []string
	if d.Loss > 0 {
		parts = append(parts, fmt.Sprintf("loss %.1f%%", d.Loss*100))
	}
	if d.Rate > 0 {
		parts = append(parts, fmt.Sprintf("rate %d B/s", d.Rate))
	}
	if d.Delay > 0 {
		p := "delay " + d.Delay.String()
		if d.Jitter > 0 {
			p += " ±" + d.Jitter.String()
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

var (
	delayOnce sync.Once
	delayErr  error
)

// DelaySupported reports whether the kernel has tc netem (sch_netem);
// without it Degrade refuses a Delay with an error wrapping ErrNoNetem.
func DelaySupported() error {
	delayOnce.Do(func() {
		ns := fmt.Sprintf("%sprobe-%d", Prefix, os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		defer func() { _ = run(ctx, "", "ip", "netns", "del", ns) }()
		for _, s := range [][]string{
			{"ip", "netns", "add", ns},
			{"ip", "-n", ns, "link", "add", "name", "v0", "type", "veth", "peer", "name", "v1"},
			{"ip", "-n", ns, "link", "set", "v0", "up"},
			{"tc", "-n", ns, "qdisc", "add", "dev", "v0", "root", "netem", "delay", "1ms"},
		} {
			if err := run(ctx, "", s[0], s[1:]...); err != nil {
				delayErr = fmt.Errorf("%w: %v", ErrNoNetem, err)
				return
			}
		}
	})
	return delayErr
}

func usec(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) + "us" }

// Degrade applies d to the packets the listed nodes send to other nodes
// (not to the test's connections), replacing what an earlier Degrade did
// to them.
func (nw *Network) Degrade(ctx context.Context, nodes []int, d Degradation) error {
	if d.Delay > 0 {
		if err := DelaySupported(); err != nil {
			return err
		}
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var errs []error
	for _, i := range nodes {
		if d.Loss > 0 {
			nw.loss[i] = d.Loss
		} else {
			delete(nw.loss, i)
		}
		if err := nw.shape(ctx, i, d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := nw.apply(ctx, nodes); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// shape sets node i's egress qdisc: htb with a default class for the test's
// traffic and class 1:2 (rate-capped, with netem under it for a delay) for
// packets to other nodes, chosen by u32 filters on their addresses.
func (nw *Network) shape(ctx context.Context, i int, d Degradation) error {
	ns := nw.nsName(i)
	if nw.shaped[i] {
		_ = run(ctx, "", "tc", "-n", ns, "qdisc", "del", "dev", "eth0", "root")
		delete(nw.shaped, i)
	}
	if d.Rate <= 0 && d.Delay <= 0 {
		return nil
	}
	rate := "10gbit"
	if d.Rate > 0 {
		rate = strconv.FormatInt(d.Rate*8, 10) + "bit"
	}
	steps := [][]string{
		{"tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1", "r2q", "1000"},
		{"tc", "-n", ns, "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit"},
		{"tc", "-n", ns, "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:2", "htb", "rate", rate},
	}
	if d.Delay > 0 {
		netem := []string{"tc", "-n", ns, "qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "20:", "netem", "delay", usec(d.Delay)}
		if d.Jitter > 0 {
			netem = append(netem, usec(d.Jitter), "distribution", "normal")
		}
		steps = append(steps, netem)
	}
	for j := range nw.nodes {
		if peer := j + 1; peer != i {
			steps = append(steps, []string{"tc", "-n", ns, "filter", "add", "dev", "eth0", "parent", "1:0", "protocol", "ip",
				"prio", "1", "u32", "match", "ip", "dst", nw.Addr(peer).String() + "/32", "flowid", "1:2"})
		}
	}
	nw.shaped[i] = true
	for _, s := range steps {
		if err := run(ctx, "", s[0], s[1:]...); err != nil {
			return fmt.Errorf("faults: tc on n%d: %w", i, err)
		}
	}
	return nil
}

// HealDegrade removes every Degrade.
func (nw *Network) HealDegrade(ctx context.Context) error {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var touched []int
	for i := range nw.loss {
		touched = append(touched, i)
	}
	var errs []error
	for i := range nw.shaped {
		if err := run(ctx, "", "tc", "-n", nw.nsName(i), "qdisc", "del", "dev", "eth0", "root"); err != nil {
			errs = append(errs, err)
		}
	}
	nw.shaped = map[int]bool{}
	nw.loss = map[int]float64{}
	if err := nw.apply(ctx, touched); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
