package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/api/query"
	"github.com/twinmesh/twinmesh/persistence"
)

// dbStore is the jobs bucket of a real bbolt store, as actors.System
// serves it on a node alone.
type dbStore struct{ db *persistence.DB }

func (s dbStore) JobDoc(key string) ([]byte, error) { return s.db.GetDoc(persistence.BucketJobs, key) }
func (s dbStore) JobDocs(prefix, after string, limit int) ([]persistence.Doc, error) {
	return s.db.DocPage(persistence.BucketJobs, prefix, after, limit)
}
func (s dbStore) CommitJobDocs(ctx context.Context, docs map[string][]byte) error {
	var ops []persistence.Op
	for k, v := range docs {
		if v == nil {
			ops = append(ops, persistence.DeleteDoc(persistence.BucketJobs, k))
			continue
		}
		ops = append(ops, persistence.PutDoc(persistence.BucketJobs, k, v))
	}
	return s.db.Commit(ctx, ops...)
}

// memTwin is a twin of memFleet.
type memTwin struct {
	version       int64
	desired, tags map[string]any
}

// memFleet is a fleet of twins in memory with the grain's patch rules: a
// patch conditional on a version, a patch that changes nothing bumps
// nothing. It records every patch that changed a twin and every method
// call.
type memFleet struct {
	mu      sync.Mutex
	twins   map[string]*memTwin
	patched map[string]int
	invoked map[string]int
	// beforePatch, when set, runs before a patch (another writer).
	beforePatch func(id string, t *memTwin)
}

func newFleet(n int) *memFleet {
	f := &memFleet{twins: map[string]*memTwin{}, patched: map[string]int{}, invoked: map[string]int{}}
	for i := range n {
		f.twins[fmt.Sprintf("d%03d", i)] = &memTwin{version: 1, desired: map[string]any{}, tags: map[string]any{"site": "a"}}
	}
	return f
}

func (f *memFleet) Select(_ context.Context, cond, after string, limit int) ([]string, string, error) {
	q, err := ParseCondition(cond)
	if err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for i := range len(f.twins) {
		id := fmt.Sprintf("d%03d", i)
		t := f.twins[id]
		if id <= after || !q.Match(map[string]any{"deviceId": id, "tags": t.tags}) {
			continue
		}
		ids = append(ids, id)
		if len(ids) == limit {
			return ids, id, nil
		}
	}
	return ids, "", nil
}

func (f *memFleet) GetTwin(_ context.Context, id string) (json.RawMessage, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.twins[id]
	if !ok {
		return nil, 0, errcode.New(errcode.NotFound, "no twin %s", id)
	}
	doc, _ := json.Marshal(map[string]any{"desired": t.desired, "tags": t.tags})
	return doc, t.version, nil
}

func (f *memFleet) PatchTwin(_ context.Context, id string, desired, tags json.RawMessage, ifVersion int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.twins[id]
	if f.beforePatch != nil {
		f.beforePatch(id, t)
	}
	if t.version != ifVersion {
		return 0, errcode.New(errcode.Precondition, "twin %s is at version %d, not %d", id, t.version, ifVersion)
	}
	changed := false
	for _, sp := range []struct {
		sec   *map[string]any
		patch json.RawMessage
	}{{&t.desired, desired}, {&t.tags, tags}} {
		if len(sp.patch) == 0 {
			continue
		}
		var p any
		if err := json.Unmarshal(sp.patch, &p); err != nil {
			return 0, err
		}
		next := twin.MergePatch(*sp.sec, p).(map[string]any)
		if !jsonEqual(next, *sp.sec) {
			*sp.sec, changed = next, true
		}
	}
	if changed {
		t.version++
		f.patched[id]++
	}
	return t.version, nil
}

func (f *memFleet) InvokeMethod(_ context.Context, id, method string, payload []byte) (int, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invoked[id]++
	if id == "d001" {
		return 0, nil, errcode.New(errcode.NotConnected, "device %s is not connected", id)
	}
	return 200, []byte(`{"ok":true}`), nil
}

func newManager(t *testing.T, f *memFleet) (*Manager, *[]Job) {
	t.Helper()
	db, err := persistence.Open(filepath.Join(t.TempDir(), "t.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var mu sync.Mutex
	var events []Job
	m := New(Config{Store: dbStore{db}, Fleet: f, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Publish: func(_ string, doc json.RawMessage) {
		var j Job
		_ = json.Unmarshal(doc, &j)
		mu.Lock()
		events = append(events, j)
		mu.Unlock()
	}})
	return m, &events
}

// TestRun: a twin update over a fleet, in waves, to completion; a method
// job with a device that fails.
func TestRun(t *testing.T) {
	ctx := context.Background()
	f := newFleet(300)
	m, events := newManager(t, f)
	j, err := m.Create(ctx, Spec{Type: TypeUpdateTwin, Condition: "tags.site = 'a'", MaxConcurrency: 7,
		TwinPatch: &TwinPatch{Desired: json.RawMessage(`{"fw":"2.0"}`), Tags: json.RawMessage(`{"ring":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.run(ctx, j.JobID); err != nil {
		t.Fatal(err)
	}
	got, err := m.Get(j.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusCompleted || got.Progress != (Progress{Total: 300, Succeeded: 300}) {
		t.Fatalf("job %+v", got)
	}
	for id, tw := range f.twins {
		if tw.version != 2 || f.patched[id] != 1 || tw.desired["fw"] != "2.0" {
			t.Fatalf("twin %s: %+v, patched %d times", id, tw, f.patched[id])
		}
	}
	outs, next, err := m.Devices(j.JobID, "d100", 10)
	if err != nil || len(outs) != 10 || outs[0].DeviceID != "d101" || next != "d110" || outs[0].Version != 2 {
		t.Fatalf("outcomes page %+v next %q: %v", outs, next, err)
	}
	if len(*events) < 300/7 {
		t.Errorf("%d events, want one per wave at least", len(*events))
	}

	mj, err := m.Create(ctx, Spec{Type: TypeInvokeMethod, Condition: "deviceId IN ['d000', 'd001']", Method: &Method{Name: "ping"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.run(ctx, mj.JobID); err != nil {
		t.Fatal(err)
	}
	outs, _, _ = m.Devices(mj.JobID, "", 10)
	if len(outs) != 2 || outs[0].Status != DeviceSucceeded || string(outs[0].Result) != `{"status":200,"payload":{"ok":true}}` ||
		outs[1].Status != DeviceFailed || outs[1].Error == "" {
		t.Fatalf("method outcomes %+v", outs)
	}
}

// TestResume: a run that finds a device's intent left by a run that
// stopped never applies the update twice, nor invokes a method again.
func TestResume(t *testing.T) {
	patch := &TwinPatch{Desired: json.RawMessage(`{"fw":"2.0"}`)}
	for _, tc := range []struct {
		name string
		typ  string
		// twin is the device's twin when the job resumes; the intent is
		// at version 1.
		twin        memTwin
		wantStatus  string
		wantVersion int64
		wantPatched int
		wantErr     error
	}{
		{"patch did not happen", TypeUpdateTwin, memTwin{version: 1, desired: map[string]any{}}, DeviceSucceeded, 2, 1, nil},
		{"patch happened", TypeUpdateTwin, memTwin{version: 2, desired: map[string]any{"fw": "2.0"}}, DeviceSucceeded, 2, 0, nil},
		{"patch happened, then a report", TypeUpdateTwin, memTwin{version: 5, desired: map[string]any{"fw": "2.0"}}, DeviceSucceeded, 5, 0, nil},
		{"another writer changed it", TypeUpdateTwin, memTwin{version: 3, desired: map[string]any{"fw": "1.9"}}, DeviceFailed, 1, 0, ErrInterrupted},
		{"method under way", TypeInvokeMethod, memTwin{version: 1}, DeviceFailed, 1, 0, ErrInterrupted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFleet(2)
			tw := tc.twin
			tw.tags = map[string]any{"site": "a"}
			f.twins["d000"] = &tw
			m, _ := newManager(t, f)
			spec := Spec{JobID: "j1", Type: tc.typ, Condition: "tags.site = 'a'", TwinPatch: patch}
			if tc.typ == TypeInvokeMethod {
				spec.TwinPatch, spec.Method = nil, &Method{Name: "reboot"}
			}
			if _, err := m.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			// As a run that stopped after the intent of d000 leaves it.
			j, _ := m.load("j1")
			now := time.Now().UTC()
			j.Status, j.StartedTime, j.Selection = StatusRunning, &now, Selection{Done: true}
			j.Progress = Progress{Total: 2, Pending: 2}
			intent, _ := json.Marshal(Outcome{DeviceID: "d000", Status: DeviceRunning, Version: 1})
			pending, _ := json.Marshal(Outcome{DeviceID: "d001", Status: DevicePending})
			if err := m.save(ctx, &j, map[string][]byte{outcomeKey("j1", "d000"): intent, outcomeKey("j1", "d001"): pending}); err != nil {
				t.Fatal(err)
			}
			if err := m.run(ctx, "j1"); err != nil {
				t.Fatal(err)
			}
			outs, _, _ := m.Devices("j1", "", 10)
			o := outs[0]
			if o.Status != tc.wantStatus || o.Version != tc.wantVersion || f.patched["d000"] != tc.wantPatched || f.invoked["d000"] != 0 {
				t.Errorf("outcome %+v, patched %d, invoked %d; want %s at %d, patched %d", o, f.patched["d000"], f.invoked["d000"],
					tc.wantStatus, tc.wantVersion, tc.wantPatched)
			}
			if tc.wantErr != nil && o.Error != tc.wantErr.Error() {
				t.Errorf("error %q, want %q", o.Error, tc.wantErr)
			}
			if got, _ := m.Get("j1"); got.Status != StatusCompleted || got.Progress.Pending != 0 || got.Progress.Total != 2 {
				t.Errorf("job %+v", got)
			}
		})
	}
}

// TestOvertaken: a patch that another writer overtakes is applied to the
// new version, or counted done when the twin already holds it.
func TestOvertaken(t *testing.T) {
	ctx := context.Background()
	f := newFleet(2)
	f.beforePatch = func(id string, t *memTwin) {
		if f.patched[id] == 0 && t.version == 1 {
			t.version++ // a report came first
			if id == "d001" {
				t.desired = map[string]any{"fw": "2.0"} // and set the same
			}
		}
	}
	m, _ := newManager(t, f)
	j, err := m.Create(ctx, Spec{Type: TypeUpdateTwin, Condition: "tags.site = 'a'", TwinPatch: &TwinPatch{Desired: json.RawMessage(`{"fw":"2.0"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.run(ctx, j.JobID); err != nil {
		t.Fatal(err)
	}
	outs, _, _ := m.Devices(j.JobID, "", 10)
	if outs[0].Status != DeviceSucceeded || outs[0].Version != 3 || f.patched["d000"] != 1 ||
		outs[1].Status != DeviceSucceeded || outs[1].Version != 2 || f.patched["d001"] != 0 {
		t.Fatalf("outcomes %+v, patched %v", outs, f.patched)
	}
}

// TestCancel: a job cancelled before it runs ends cancelled and touches
// nothing; a finished job is answered as it is.
func TestCancel(t *testing.T) {
	ctx := context.Background()
	f := newFleet(3)
	m, _ := newManager(t, f)
	later := time.Now().Add(time.Hour)
	j, err := m.Create(ctx, Spec{Type: TypeUpdateTwin, Condition: "tags.site = 'a'", StartTime: &later,
		TwinPatch: &TwinPatch{Tags: json.RawMessage(`{"x":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.Cancel(ctx, j.JobID); err != nil || got.Status != StatusCancelled {
		t.Fatalf("cancel: %+v %v", got, err)
	}
	if err := m.run(ctx, j.JobID); err != nil {
		t.Fatal(err)
	}
	stored, _ := m.load(j.JobID)
	if stored.Status != StatusCancelled || stored.EndTime == nil || len(f.patched) != 0 {
		t.Fatalf("stored %+v, patched %v", stored, f.patched)
	}
	if _, err := m.Get("nope"); errcode.Of(err) != errcode.NotFound {
		t.Errorf("unknown job: %v", err)
	}
}

// TestManagerRun: the Run loop starts a created job and stops with its
// context.
func TestManagerRun(t *testing.T) {
	f := newFleet(20)
	m, _ := newManager(t, f)
	m.cfg.Poll = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	j, err := m.Create(ctx, Spec{Type: TypeUpdateTwin, Condition: "tags.site = 'a'", TwinPatch: &TwinPatch{Desired: json.RawMessage(`{"a":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := m.Get(j.JobID)
		if got.Status == StatusCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not completed: %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestValidate(t *testing.T) {
	patch := &TwinPatch{Desired: json.RawMessage(`{"a":1}`)}
	for _, tc := range []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"update", Spec{Type: TypeUpdateTwin, Condition: "tags.a = 1", TwinPatch: patch}, true},
		{"method", Spec{Type: TypeInvokeMethod, Condition: "tags.a = 1", Method: &Method{Name: "m"}}, true},
		{"no type", Spec{Condition: "tags.a = 1", TwinPatch: patch}, false},
		{"unknown type", Spec{Type: "x", Condition: "tags.a = 1", TwinPatch: patch}, false},
		{"no condition", Spec{Type: TypeUpdateTwin, TwinPatch: patch}, false},
		{"aggregate", Spec{Type: TypeUpdateTwin, Condition: "tags.a = 1 GROUP BY tags.a", TwinPatch: patch}, false},
		{"no patch", Spec{Type: TypeUpdateTwin, Condition: "tags.a = 1"}, false},
		{"patch not an object", Spec{Type: TypeUpdateTwin, Condition: "tags.a = 1", TwinPatch: &TwinPatch{Desired: json.RawMessage(`[1]`)}}, false},
		{"method on update", Spec{Type: TypeUpdateTwin, Condition: "tags.a = 1", TwinPatch: patch, Method: &Method{Name: "m"}}, false},
		{"no method name", Spec{Type: TypeInvokeMethod, Condition: "tags.a = 1", Method: &Method{}}, false},
		{"timeout", Spec{Type: TypeInvokeMethod, Condition: "tags.a = 1", Method: &Method{Name: "m", TimeoutSeconds: 1}}, false},
		{"concurrency", Spec{Type: TypeUpdateTwin, Condition: "tags.a = 1", TwinPatch: patch, MaxConcurrency: 101}, false},
		{"job id", Spec{JobID: "a/b", Type: TypeUpdateTwin, Condition: "tags.a = 1", TwinPatch: patch}, false},
	} {
		err := tc.spec.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestContained(t *testing.T) {
	doc := map[string]any{"a": 1.0, "b": map[string]any{"c": "x", "d": []any{1.0}}}
	for _, tc := range []struct {
		patch string
		want  bool
	}{
		{`{}`, true},
		{`{"a":1}`, true},
		{`{"a":2}`, false},
		{`{"b":{"c":"x"}}`, true},
		{`{"b":{"d":[1]}}`, true},
		{`{"b":{"e":null}}`, true},
		{`{"b":{"c":null}}`, false},
		{`{"z":null}`, true},
		{`{"z":{}}`, false},
		{`{"a":{"x":1}}`, false},
	} {
		got, err := contained(doc, json.RawMessage(tc.patch))
		if err != nil || got != tc.want {
			t.Errorf("contained(%s) = %v, %v; want %v", tc.patch, got, err, tc.want)
		}
		// The property contained stands for: the merge patch changes nothing.
		var p any
		_ = json.Unmarshal([]byte(tc.patch), &p)
		if same := jsonEqual(twin.MergePatch(doc, p), doc); same != tc.want {
			t.Errorf("merge of %s changes nothing: %v, contained says %v", tc.patch, same, tc.want)
		}
	}
}

// FuzzParseCondition: any condition parses or fails with a bad request or
// a syntax error positioned inside it.
func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{"tags.a = 1", "", "tags.a = = 1", "deviceId IN ['a'] AND NOT IS_DEFINED(tags.x)", "1 GROUP BY tags.a", "UNDER('b1')"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cond string) {
		_, err := ParseCondition(cond)
		var se *query.SyntaxError
		switch {
		case err == nil:
		case errors.As(err, &se):
			if se.Pos < 1 || se.Pos > len(cond)+1 {
				t.Fatalf("%q: position %d outside the condition", cond, se.Pos)
			}
		case errcode.Of(err) != errcode.BadRequest:
			t.Fatalf("%q: %v", cond, err)
		}
	})
}

// TestRetention: a finished job and its outcomes go once the retention
// has passed since it ended; a running one, or a young one, stays.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	f := newFleet(300)
	m, _ := newManager(t, f)
	now := time.Now()
	m.cfg.Now = func() time.Time { return now }
	m.cfg.Retention = time.Hour
	old, err := m.Create(ctx, Spec{Type: TypeUpdateTwin, Condition: "tags.site = 'a'", TwinPatch: &TwinPatch{Desired: json.RawMessage(`{"a":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.run(ctx, old.JobID); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	young, err := m.Create(ctx, Spec{Type: TypeUpdateTwin, Condition: "deviceId = 'd001'", TwinPatch: &TwinPatch{Desired: json.RawMessage(`{"b":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.run(ctx, young.JobID); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	m.startDue(ctx, &wg)
	wg.Wait()
	if _, err := m.Get(old.JobID); !errors.Is(err, errcode.ErrNotFound) {
		t.Fatalf("expired job: %v, want NotFound", err)
	}
	if docs, err := m.cfg.Store.JobDocs(outcomePrefix(old.JobID), "", 10); err != nil || len(docs) != 0 {
		t.Fatalf("outcomes of the expired job: %d left, %v", len(docs), err)
	}
	if got, err := m.Get(young.JobID); err != nil || got.Status != StatusCompleted {
		t.Fatalf("young job: %+v, %v", got, err)
	}
	if outs, _, err := m.Devices(young.JobID, "", 10); err != nil || len(outs) != 1 {
		t.Fatalf("young job's outcomes: %+v, %v", outs, err)
	}
}
