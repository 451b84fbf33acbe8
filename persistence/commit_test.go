package persistence

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// batchStats records what Observer reports.
type batchStats struct {
	mu       sync.Mutex
	commits  int
	requests int
	ops      int
	maxReqs  int
}

func (s *batchStats) observe(requests, ops int, _ time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits++
	s.requests += requests
	s.ops += ops
	s.maxReqs = max(s.maxReqs, requests)
}

func (s *batchStats) snapshot() (commits, requests, ops, maxReqs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits, s.requests, s.ops, s.maxReqs
}

// TestGroupCommitConcurrent: 200 goroutines commit with real fsync; every
// acknowledged write survives a reopen and commits were shared.
func TestGroupCommitConcurrent(t *testing.T) {
	const writers, perWriter = 200, 5
	var st batchStats
	path := filepath.Join(t.TempDir(), "twinmesh.db")
	db, err := Open(path, &Options{Observer: st.observe})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := fmt.Sprintf("w%03d-%d", w, i)
				errs <- db.Commit(ctx, PutTwin(id, []byte(`{"id":"`+id+`"}`)),
					AppendTelemetry(id, TelemetryRecord{TS: t0, Points: map[string]any{"i": float64(i)}}))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Commit: %v", err)
		}
	}
	commits, requests, ops, maxReqs := st.snapshot()
	t.Logf("%d requests in %d commits (max %d per commit)", requests, commits, maxReqs)
	if requests != writers*perWriter || ops != 2*writers*perWriter {
		t.Fatalf("Observer saw %d requests, %d ops; want %d, %d", requests, ops, writers*perWriter, 2*writers*perWriter)
	}
	if maxReqs <= 1 || commits >= requests {
		t.Fatalf("no group commit: %d requests in %d commits, max %d", requests, commits, maxReqs)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, err := db.CountTwins(); n != writers*perWriter || err != nil {
		t.Fatalf("after reopen: %d twins, %v", n, err)
	}
	for w := range writers {
		id := fmt.Sprintf("w%03d-%d", w, perWriter-1)
		if doc, err := db.GetTwin(id); err != nil || string(doc) != `{"id":"`+id+`"}` {
			t.Fatalf("twin %s after reopen: %s, %v", id, doc, err)
		}
	}
}

// TestBadRequestIsolated: a request that bbolt refuses (a doc with an empty
// key) fails alone; the other requests of its batch commit.
func TestBadRequestIsolated(t *testing.T) {
	const n = 11
	var st batchStats
	// The batch leaves only when all n requests are in: MaxBatch = n and a
	// MaxWait far longer than the test.
	db := openTemp(t, &Options{NoSync: true, MaxBatch: n, MaxWait: time.Hour, Observer: st.observe})
	ctx := context.Background()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if i == n/2 {
				errs[i] = db.Commit(ctx, PutDoc(BucketRules, "good-in-bad", []byte(`1`)), PutDoc(BucketRules, "", []byte(`{}`)))
				return
			}
			errs[i] = db.Commit(ctx, PutDoc(BucketRules, fmt.Sprintf("k%02d", i), []byte(`1`)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i == n/2 {
			if !errors.Is(err, berrors.ErrKeyRequired) {
				t.Errorf("bad request: err = %v, want ErrKeyRequired", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("request %d failed with the bad one: %v", i, err)
		} else if _, err := db.GetDoc(BucketRules, fmt.Sprintf("k%02d", i)); err != nil {
			t.Errorf("request %d acknowledged but not stored: %v", i, err)
		}
	}
	if _, err := db.GetDoc(BucketRules, "good-in-bad"); !errors.Is(err, ErrNotFound) {
		t.Error("a request is not atomic: its good op was stored")
	}
	commits, requests, _, _ := st.snapshot()
	if requests != n-1 || commits > 2 {
		t.Errorf("retry used %d commits for %d requests; want at most 2 (before and after the bad one)", commits, requests)
	}
}

// TestCommitBatchSplit drives commitBatch directly with bad requests at
// chosen positions.
func TestCommitBatchSplit(t *testing.T) {
	cases := []struct {
		name string
		bad  []int
		size int
	}{
		{"none", nil, 5},
		{"first", []int{0}, 5},
		{"middle", []int{2}, 5},
		{"last", []int{4}, 5},
		{"several", []int{0, 2, 3, 6}, 7},
		{"all", []int{0, 1, 2}, 3},
		{"alone", []int{0}, 1},
		{"panicking op", []int{1}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var st batchStats
			db := openTemp(t, &Options{NoSync: true, Observer: st.observe})
			isBad := map[int]bool{}
			for _, i := range c.bad {
				isBad[i] = true
			}
			batch := make([]*request, c.size)
			for i := range batch {
				key := fmt.Sprintf("k%d", i)
				op := PutTwin(key, []byte(`1`))
				switch {
				case isBad[i] && c.name == "panicking op":
					op.apply = func(*bbolt.Tx) error { panic("bug") }
				case isBad[i]:
					op = PutTwin("", []byte(`1`))
				}
				batch[i] = &request{ops: []Op{op}, done: make(chan error, 1)}
			}
			db.commitBatch(batch)
			for i, r := range batch {
				err := <-r.done
				if isBad[i] != (err != nil) {
					t.Errorf("request %d: err = %v, bad = %v", i, err, isBad[i])
				}
				_, gerr := db.GetTwin(fmt.Sprintf("k%d", i))
				if isBad[i] == (gerr == nil) {
					t.Errorf("request %d: stored = %v, bad = %v", i, gerr == nil, isBad[i])
				}
			}
			if _, requests, _, _ := st.snapshot(); requests != c.size-len(c.bad) {
				t.Errorf("Observer saw %d committed requests, want %d", requests, c.size-len(c.bad))
			}
		})
	}
}

func TestCommitAfterClose(t *testing.T) {
	db := openTemp(t, nil)
	commit(t, db, PutTwin("a", []byte(`1`)))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	ctx := context.Background()
	if err := db.Commit(ctx, PutTwin("b", []byte(`1`))); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v, want ErrClosed", err)
	}
	if err := db.Commit(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("empty Commit after Close = %v, want ErrClosed", err)
	}
	if _, err := db.GetTwin("a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetTwin after Close = %v, want ErrClosed", err)
	}
	if _, err := db.PruneTelemetry(ctx, time.Now()); !errors.Is(err, ErrClosed) {
		t.Fatalf("PruneTelemetry after Close = %v, want ErrClosed", err)
	}
}

// TestCloseDrains: requests queued when Close is called are committed and
// answered; concurrent commits get nil or ErrClosed, never hang.
func TestCloseDrains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "twinmesh.db")
	db, err := Open(path, &Options{NoSync: true, MaxWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	var ok, closed atomic.Int32
	var wg sync.WaitGroup
	started := make(chan struct{}, n)
	for i := range n {
		wg.Go(func() {
			started <- struct{}{}
			err := db.Commit(context.Background(), PutTwin(fmt.Sprint(i), []byte(`1`)))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrClosed):
				closed.Add(1)
			default:
				t.Errorf("Commit: %v", err)
			}
		})
	}
	for range n {
		<-started
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	db, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count, _ := db.CountTwins()
	t.Logf("%d committed, %d refused", ok.Load(), closed.Load())
	if int(ok.Load()) != count || ok.Load()+closed.Load() != n {
		t.Fatalf("%d acknowledged, %d stored, %d refused", ok.Load(), count, closed.Load())
	}
}

func TestCommitContext(t *testing.T) {
	t.Run("done before queueing", func(t *testing.T) {
		db := openTemp(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := db.Commit(ctx, PutTwin("a", []byte(`1`))); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db2, err := Open(db.Path(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db2.Close()
		if _, err := db2.GetTwin("a"); !errors.Is(err, ErrNotFound) {
			t.Fatal("a request cancelled before queueing was written")
		}
	})
	t.Run("done while queued: returns, may still commit", func(t *testing.T) {
		// The batch waits an hour for company, so the request is queued but
		// not committed when its context ends; Close then commits it.
		db := openTemp(t, &Options{NoSync: true, MaxWait: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, 1)
		go func() { res <- db.Commit(ctx, PutTwin("a", []byte(`1`))) }()
		waitFor(t, func() bool { return db.enqueued.Load() == 1 })
		cancel()
		if err := <-res; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db2, err := Open(db.Path(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db2.Close()
		if _, err := db2.GetTwin("a"); err != nil {
			t.Fatalf("the queued write was dropped: %v", err)
		}
	})
	t.Run("queue full blocks until the deadline", func(t *testing.T) {
		db := openTemp(t, &Options{NoSync: true, MaxBatch: 1, QueueSize: 1, MaxWait: -1})
		tx, err := db.Bolt().Begin(true) // stall the committer on the writer lock
		if err != nil {
			t.Fatal(err)
		}
		res := make(chan error, 2)
		go func() { res <- db.Commit(context.Background(), PutTwin("a", []byte(`1`))) }()
		waitFor(t, func() bool { return db.enqueued.Load() == 1 && db.QueueLen() == 0 }) // a is in the committer
		go func() { res <- db.Commit(context.Background(), PutTwin("b", []byte(`1`))) }()
		waitFor(t, func() bool { return db.enqueued.Load() == 2 && db.QueueLen() == 1 }) // b fills the queue
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := db.Commit(ctx, PutTwin("c", []byte(`1`))); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Commit on a full queue = %v, want DeadlineExceeded", err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := <-res; err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.GetTwin("c"); !errors.Is(err, ErrNotFound) {
			t.Fatal("c was written although it never got into the queue")
		}
	})
}

// waitFor polls cond (a condition, not a sleep) for up to 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReadsDuringCommits exercises readers against the committer under -race.
func TestReadsDuringCommits(t *testing.T) {
	db := openTemp(t, nil)
	commit(t, db, PutEntity(Entity{ID: "root", Kind: "site"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				id := fmt.Sprintf("e%d-%d", w, i)
				if err := db.Commit(ctx, PutEntity(Entity{ID: id, Kind: "device", Parent: "root"}), PutTwin(id, []byte(`{}`))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if _, err := db.Subtree("root"); err != nil {
					t.Error(err)
					return
				}
				if _, _, err := db.ListEntities(EntityFilter{Under: "root"}, "", 10); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if kids, _ := db.Children("root"); len(kids) != 200 {
		t.Fatalf("%d children", len(kids))
	}
}
