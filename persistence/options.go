package persistence

import (
	"fmt"
	"log/slog"
	"time"
)

// Options configures Open. The zero value of every field means its default;
// a nil *Options means all defaults.
type Options struct {
	// MaxBatch is the maximum number of Commit requests applied in one
	// bbolt transaction. Default 1000.
	MaxBatch int

	// MaxWait is the longest the first request of a batch waits for company
	// before the batch is committed, counted from when the committer is free
	// to start the batch (requests that queued up during the previous commit
	// are company already). Default 2ms; a negative value means never wait
	// (commit what is queued at once).
	MaxWait time.Duration

	// QueueSize bounds the submit queue. Commit blocks (until its context is
	// done) while the queue is full. Default 4*MaxBatch.
	QueueSize int

	// NoSync skips fsync on commit. Acknowledged writes can be lost on a
	// crash: tests and benchmarks only.
	NoSync bool

	// LockTimeout is how long Open waits for the file lock held by another
	// process before returning ErrLocked. Default 2s.
	LockTimeout time.Duration

	// Logger receives migrations and batch failures. Default: discard.
	Logger *slog.Logger

	// Observer, if set, is called by the committer goroutine after each
	// committed transaction with the number of requests and ops it committed
	// (requests refused by a fence are not counted) and its duration
	// including fsync. It must be safe to call from another
	// goroutine and must not block (it delays the next commit) nor call
	// Commit or Close (which would wait for the committer forever).
	Observer func(requests, ops int, d time.Duration)

	// logIdle replaces moveIdle (tests hold records in the ingest log).
	logIdle time.Duration
	// noIngestLog appends telemetry straight to the telemetry bucket, as
	// before the ingest log (benchmarks compare the two).
	noIngestLog bool
}

// DefaultOptions returns the defaults Open uses for a nil *Options.
func DefaultOptions() Options {
	o := Options{}
	_ = o.validate()
	return o
}

// validate fills zero values with defaults and rejects bad ones.
func (o *Options) validate() error {
	if o.MaxBatch < 0 || o.QueueSize < 0 || o.LockTimeout < 0 {
		return fmt.Errorf("%w: options: MaxBatch, QueueSize and LockTimeout must not be negative", ErrInvalid)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 1000
	}
	if o.MaxWait == 0 {
		o.MaxWait = 2 * time.Millisecond
	}
	if o.QueueSize == 0 {
		o.QueueSize = 4 * o.MaxBatch
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
