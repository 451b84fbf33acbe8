package persistence

import "errors"

var (
	// ErrNotFound is returned by the reads when the key is absent. Callers
	// test for it with errors.Is; the error they get names what was looked up.
	ErrNotFound = errors.New("persistence: not found")

	// ErrSchemaTooNew is returned by Open and OpenReadOnly when the file was
	// written by a newer schema than this binary knows. The file is left
	// untouched.
	ErrSchemaTooNew = errors.New("persistence: schema version is newer than this binary")

	// ErrSchemaTooOld is returned by OpenReadOnly when the file still needs a
	// migration: open it once read-write (Open migrates) and retry.
	ErrSchemaTooOld = errors.New("persistence: schema version is older than this binary; open read-write to migrate")

	// ErrClosed is returned by Commit and by the reads once Close was called.
	ErrClosed = errors.New("persistence: database closed")

	// ErrReadOnly is returned by Commit and PruneTelemetry on a DB opened with
	// OpenReadOnly.
	ErrReadOnly = errors.New("persistence: database opened read-only")

	// ErrLocked is returned by Open and OpenReadOnly when another process
	// holds the file lock for longer than Options.LockTimeout (typically a
	// running `twinmesh serve` on the same data folder).
	ErrLocked = errors.New("persistence: database file is locked by another process")

	// ErrInvalid is returned (by Commit, before anything is queued, or by a
	// read) when an argument cannot be encoded as a key: an empty or
	// NUL-containing ID that is part of a composite key, a doc bucket that does
	// not exist, a telemetry timestamp outside 1970..2262. Plain empty keys are
	// left to bbolt, which refuses them inside the transaction.
	ErrInvalid = errors.New("persistence: invalid argument")

	// ErrFenced is returned by Commit when a CheckEpoch or ClaimEpoch op of
	// the request finds that a newer owner epoch of the grain was claimed or
	// written on this node: the caller is a stale owner (or is shipping a
	// stale owner's writes) and must stop writing for that grain. Nothing of
	// the request was written. The error names the grain and both epochs.
	ErrFenced = errors.New("fenced: a newer owner epoch exists")

	// ErrGap is returned by Commit when an ApplyEpoch op finds that this
	// node's copy of the grain is not the one the shipped write was made on
	// (it missed writes of the epoch, or the claim's copy): applying it
	// would leave a copy with a hole that looks complete. Nothing was
	// written; the owner sends its whole copy instead.
	ErrGap = errors.New("persistence: replica copy misses earlier writes")

	// ErrApplied is returned by Commit when an ApplyEpoch op finds the
	// shipped write already held here (a retry, or a snapshot that included
	// it). Nothing was written, and the write counts as acknowledged.
	ErrApplied = errors.New("persistence: write already applied")

	// ErrCorrupt is returned by Open, OpenReadOnly and Check when the file
	// is damaged (truncated, overwritten, a page that does not add up) or
	// empty: the node must not start on it, and an empty file is not a
	// fresh store. The error names the file; restore a replica's copy or
	// a backup (twinmesh backup).
	ErrCorrupt = errors.New("persistence: data file is damaged")

	// ErrCopyAbandoned is returned by Commit when a ContinueCopyEpoch op
	// finds that the copy its page belongs to is no longer the one under
	// way on this node (another copy started, or the owner wrote): the
	// sender stops sending that copy. Nothing of the page was written.
	ErrCopyAbandoned = errors.New("persistence: copy abandoned for a newer one")
)
