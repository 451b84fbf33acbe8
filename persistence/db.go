package persistence

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DB is one node's bbolt file holding every store. Reads are safe from many
// goroutines; writes go through Commit, which group-commits them. A DB is
// created by Open (or OpenReadOnly) and must be closed with Close.
type DB struct {
	bolt     *bbolt.DB
	path     string
	opts     Options
	log      *slog.Logger
	readOnly bool

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan *request
	done   chan struct{} // closed when the committer has exited

	enqueued atomic.Uint64 // requests queued so far (tests wait on it)
	reqs     sync.Pool     // of *request

	closeOnce sync.Once
	closeErr  error

	// ilog indexes the ingest log (see ingestlog.go); committer only.
	ilog *ingestLog
}

// Open opens (or creates, mode 0600) the bbolt file at path, creates every
// bucket, migrates an older schema to SchemaVersion, and starts the committer
// goroutine. A file written by a newer schema is refused with ErrSchemaTooNew;
// a file locked by another process for longer than Options.LockTimeout with
// ErrLocked. A nil opts means DefaultOptions.
func Open(path string, opts *Options) (*DB, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	bdb, err := openBolt(path, &o, false)
	if err != nil {
		return nil, err
	}
	var from, to int
	if err := safeUpdate(bdb, func(tx *bbolt.Tx) (err error) {
		if from, to, err = migrate(tx, migrations()); err != nil {
			return err
		}
		return ensureBuckets(tx)
	}); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db := &DB{bolt: bdb, path: path, opts: o, log: o.Logger,
		queue: make(chan *request, o.QueueSize), done: make(chan struct{})}
	db.reqs.New = newRequest
	if from != to {
		db.log.Info("migrated schema", "path", path, "from", from, "to", to)
	}
	// What the last run left in the ingest log goes where reads expect it
	// first, so the log's index starts empty.
	if err := db.moveLog(); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if !o.noIngestLog {
		db.ilog = newIngestLog()
		ingestLogs.Store(bdb, db.ilog)
	}
	go db.run()
	return db, nil
}

// OpenReadOnly opens an existing file for reads only, sharing it with other
// readers (tools such as `twinmesh token`). It takes a shared lock, so it
// fails with ErrLocked after DefaultOptions().LockTimeout while a writer holds
// the file. The file must be at SchemaVersion: older gives ErrSchemaTooOld,
// newer ErrSchemaTooNew. Commit and PruneTelemetry return ErrReadOnly.
func OpenReadOnly(path string) (*DB, error) {
	return openReadOnly(path, DefaultOptions())
}

func openReadOnly(path string, o Options) (*DB, error) {
	bdb, err := openBolt(path, &o, true)
	if err != nil {
		return nil, err
	}
	if err := bdb.View(checkReadable); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db := &DB{bolt: bdb, path: path, opts: o, log: o.Logger, readOnly: true, done: make(chan struct{})}
	close(db.done)
	return db, nil
}

func openBolt(path string, o *Options, readOnly bool) (bdb *bbolt.DB, err error) {
	if st, serr := os.Stat(path); serr == nil && st.Size() == 0 {
		// bbolt would initialise it as a new store: a file emptied by a
		// crash or an operator's mistake would silently lose everything.
		return nil, fmt.Errorf("open %s: %w: the file is empty (0 bytes); restore a replica's copy or a backup, or delete it to start an empty store", path, ErrCorrupt)
	}
	// bbolt panics on some damaged files (rebuilding the freelist from a
	// page that is not one): a clear error instead.
	defer func() {
		if r := recover(); r != nil {
			bdb, err = nil, fmt.Errorf("open %s: %w (%v); restore a replica's copy or a backup", path, ErrCorrupt, r)
		}
	}()
	bdb, err = bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:  o.LockTimeout,
		NoSync:   o.NoSync,
		ReadOnly: readOnly,
		// The hashmap freelist keeps commits of large files fast, and not
		// syncing it saves a page write per commit (it is rebuilt at open).
		FreelistType:   bbolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w (waited %v)", path, ErrLocked, o.LockTimeout)
	}
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) ||
		(err != nil && strings.Contains(err.Error(), "file size too small")) { // bbolt's truncated file, not a sentinel
		return nil, fmt.Errorf("open %s: %w (%v); restore a replica's copy or a backup", path, ErrCorrupt, err)
	}
	if err != nil {
		if _, ok := errors.AsType[*fs.PathError](err); ok {
			return nil, err // "open <path>: …" already
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return bdb, nil
}

// safeUpdate is bbolt's Update that turns a panic (a damaged page met
// while the file is first read) into ErrCorrupt.
func safeUpdate(bdb *bbolt.DB, fn func(*bbolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w (%v); restore a replica's copy or a backup", ErrCorrupt, r)
		}
	}()
	return bdb.Update(fn)
}

// Close stops accepting commits, waits until every queued request is
// committed and answered, stops the committer goroutine and closes the file.
// Commits that arrive during or after Close get ErrClosed. Close is
// idempotent: later calls return the first call's result.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.mu.Lock()
		db.closed = true
		db.mu.Unlock()
		if db.queue != nil {
			close(db.queue) // no sender holds mu.RLock now, so none can send
		}
		<-db.done
		ingestLogs.Delete(db.bolt)
		db.closeErr = db.bolt.Close()
	})
	return db.closeErr
}

// Bolt returns the raw bbolt handle, for benchmarks and tools. Writing
// through it bypasses the indexes and the group commit.
func (db *DB) Bolt() *bbolt.DB { return db.bolt }

// Path returns the file path given to Open.
func (db *DB) Path() string { return db.path }

// QueueLen returns the number of requests waiting for the committer (for a
// queue-depth gauge).
func (db *DB) QueueLen() int { return len(db.queue) }

// view runs fn in a read transaction and maps a closed database to ErrClosed.
func (db *DB) view(fn func(tx *bbolt.Tx) error) error {
	err := db.bolt.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Interval between context checks in long scans.
const ctxCheckEvery = 256

var _ io.Closer = (*DB)(nil)
