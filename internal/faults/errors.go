package faults

import "errors"

// Sentinel errors; functions wrap them with detail.
var (
	// ErrUnavailable: this process cannot make network namespaces (not
	// root, or `ip netns`, `tc` or `nft` missing). Available wraps it with
	// the reason.
	ErrUnavailable = errors.New("network namespaces unavailable")
	// ErrNoSubnet: every 10.77.X.0/24 subnet is held by a live run.
	ErrNoSubnet = errors.New("no free 10.77.X.0/24 subnet")
	// ErrNotReady: a node process exited, or did not log "node ready" in
	// time.
	ErrNotReady = errors.New("node not ready")
	// ErrNotRunning: the node has no running process (never started, or
	// killed and not started again).
	ErrNotRunning = errors.New("node not running")
	// ErrNoNetem: the kernel has no tc netem (sch_netem), so Degrade
	// cannot add a fixed delay; loss and rate caps still work.
	ErrNoNetem = errors.New("tc netem not supported by this kernel")
	// ErrNoSnapshot: RestoreSnapshot before any Snapshot.
	ErrNoSnapshot = errors.New("no snapshot of the data folder")
)
