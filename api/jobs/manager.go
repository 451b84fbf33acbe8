package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// Store is where jobs live: the jobs bucket, replicated to every member
// (actors.System implements it).
type Store interface {
	// JobDoc returns a document, or an error wrapping persistence.ErrNotFound.
	JobDoc(key string) ([]byte, error)
	// JobDocs pages the documents whose key starts with prefix, after
	// the key after, in key order.
	JobDocs(prefix, after string, limit int) ([]persistence.Doc, error)
	// CommitJobDocs writes documents atomically (on every member); a nil
	// document deletes its key.
	CommitJobDocs(ctx context.Context, docs map[string][]byte) error
}

// Fleet is what a job does to devices.
type Fleet interface {
	// Select returns, in ID order, at most limit IDs after the ID after of
	// the twins the condition selects, and the ID to go on after ("" when
	// there are no more).
	Select(ctx context.Context, condition, after string, limit int) (ids []string, next string, err error)
	// GetTwin returns a twin document ({"desired","tags",…}) and its version.
	GetTwin(ctx context.Context, id string) (json.RawMessage, int64, error)
	// PatchTwin applies merge patches if the twin is at ifVersion (an
	// error of code errcode.Precondition otherwise) and returns the new
	// version.
	PatchTwin(ctx context.Context, id string, desired, tags json.RawMessage, ifVersion int64) (int64, error)
	// InvokeMethod calls a direct method; ctx bounds the wait.
	InvokeMethod(ctx context.Context, id, method string, payload []byte) (status int, resp []byte, err error)
}

// Config configures a Manager.
type Config struct {
	Store Store
	Fleet Fleet
	// Owns reports whether this member runs the job with this ID; nil: a
	// node on its own runs every job.
	Owns func(jobID string) bool
	// Publish is handed a job's document each time its progress or
	// status changes (a WebSocket event); nil: none.
	Publish func(jobID string, doc json.RawMessage)
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Poll is how often the manager looks for jobs to start or take over
	// (default 1s).
	Poll time.Duration
	// Retention is how long a finished job (completed, failed or
	// cancelled) and its device outcomes are kept (default 30 days, as
	// IoT Hub keeps job history): every member reads the job list each
	// Poll, so finished jobs must not pile up forever.
	Retention time.Duration
	Logger    *slog.Logger
}

// Manager creates, answers and runs jobs. Its Run loop owns every runner
// goroutine it starts.
type Manager struct {
	cfg  Config
	kick chan struct{}

	mu      sync.Mutex
	running map[string]bool
	retry   map[string]time.Time // a job whose run failed is retried after
}

// New returns a Manager; Run makes it run jobs.
func New(cfg Config) *Manager {
	if cfg.Owns == nil {
		cfg.Owns = func(string) bool { return true }
	}
	if cfg.Publish == nil {
		cfg.Publish = func(string, json.RawMessage) {}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "jobs")
	return &Manager{cfg: cfg, kick: make(chan struct{}, 1), running: map[string]bool{}, retry: map[string]time.Time{}}
}

// Create stores a new job, queued; it starts at its start time.
func (m *Manager) Create(ctx context.Context, spec Spec) (Job, error) {
	if err := spec.Validate(); err != nil {
		return Job{}, err
	}
	if spec.JobID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		spec.JobID = "job-" + hex.EncodeToString(b[:])
	} else if _, err := m.cfg.Store.JobDoc(jobKey(spec.JobID)); err == nil {
		return Job{}, errcode.New(errcode.Conflict, "job %s exists", spec.JobID)
	}
	now := m.cfg.Now().UTC()
	if spec.StartTime == nil {
		spec.StartTime = &now
	}
	j := Job{Spec: spec, Status: StatusQueued, CreatedTime: now}
	if err := m.save(ctx, &j, nil); err != nil {
		return Job{}, err
	}
	select {
	case m.kick <- struct{}{}:
	default:
	}
	return j, nil
}

// Get returns a job. A job asked to stop shows as cancelled at once, even
// before its runner noticed.
func (m *Manager) Get(id string) (Job, error) {
	j, err := m.load(id)
	if err != nil {
		return j, err
	}
	if !Terminal(j.Status) && m.cancelled(id) {
		j.Status = StatusCancelled
	}
	return j, nil
}

// List returns every job, in ID order.
func (m *Manager) List() ([]Job, error) {
	jobs, err := m.stored()
	for i, j := range jobs {
		if !Terminal(j.Status) && m.cancelled(j.JobID) {
			jobs[i].Status = StatusCancelled
		}
	}
	return jobs, err
}

// stored returns every job as stored, in ID order.
func (m *Manager) stored() ([]Job, error) {
	out := []Job{}
	after := ""
	for {
		docs, err := m.cfg.Store.JobDocs("j/", after, 256)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			var j Job
			if err := json.Unmarshal(d.Val, &j); err != nil {
				return nil, errcode.New(errcode.Internal, "job %s: decode: %v", d.Key, err)
			}
			out = append(out, j)
		}
		if len(docs) < 256 {
			return out, nil
		}
		after = docs[len(docs)-1].Key
	}
}

// Devices pages a job's per-device outcomes in device ID order, after the
// device ID after; next is "" on the last page.
func (m *Manager) Devices(id, after string, limit int) (outs []Outcome, next string, err error) {
	if _, err := m.load(id); err != nil {
		return nil, "", err
	}
	if limit <= 0 || limit > 1000 {
		return nil, "", errcode.New(errcode.BadRequest, "limit must be between 1 and 1000")
	}
	startKey := ""
	if after != "" {
		startKey = outcomeKey(id, after)
	}
	docs, err := m.cfg.Store.JobDocs(outcomePrefix(id), startKey, limit+1)
	if err != nil {
		return nil, "", err
	}
	outs = make([]Outcome, 0, len(docs))
	for i, d := range docs {
		if i == limit {
			next = outs[limit-1].DeviceID
			break
		}
		var o Outcome
		if err := json.Unmarshal(d.Val, &o); err != nil {
			return nil, "", errcode.New(errcode.Internal, "job %s outcome %s: decode: %v", id, d.Key, err)
		}
		outs = append(outs, o)
	}
	return outs, next, nil
}

// Cancel asks a job to stop: no device is started after its runner sees
// the request (the devices under way finish). A finished job is answered
// as it is.
func (m *Manager) Cancel(ctx context.Context, id string) (Job, error) {
	j, err := m.load(id)
	if err != nil || Terminal(j.Status) {
		return j, err
	}
	at, _ := json.Marshal(map[string]time.Time{"at": m.cfg.Now().UTC()})
	if err := m.cfg.Store.CommitJobDocs(ctx, map[string][]byte{cancelKey(id): at}); err != nil {
		return j, err
	}
	j.Status = StatusCancelled
	if doc, err := json.Marshal(j); err == nil {
		m.cfg.Publish(id, doc)
	}
	return j, nil
}

func (m *Manager) cancelled(id string) bool {
	_, err := m.cfg.Store.JobDoc(cancelKey(id))
	return err == nil
}

func (m *Manager) load(id string) (Job, error) {
	var j Job
	doc, err := m.cfg.Store.JobDoc(jobKey(id))
	if errors.Is(err, persistence.ErrNotFound) {
		return j, errcode.New(errcode.NotFound, "job %s does not exist", id)
	}
	if err != nil {
		return j, err
	}
	if err := json.Unmarshal(doc, &j); err != nil {
		return j, errcode.New(errcode.Internal, "job %s: decode: %v", id, err)
	}
	return j, nil
}

// save commits the job with other documents of the same step, then
// publishes it.
func (m *Manager) save(ctx context.Context, j *Job, more map[string][]byte) error {
	doc, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.JobID, err)
	}
	if more == nil {
		more = map[string][]byte{}
	}
	more[jobKey(j.JobID)] = doc
	if err := m.cfg.Store.CommitJobDocs(ctx, more); err != nil {
		return err
	}
	m.cfg.Publish(j.JobID, doc)
	return nil
}

// Run starts the jobs this member owns as they fall due, and takes over
// those of members that died, until ctx ends; it then stops its runners
// and waits for them.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(m.cfg.Poll)
	defer t.Stop()
	for {
		m.startDue(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
	}
}

// retryAfter is how long a job whose run failed (a lost quorum, a store
// error) waits before it is tried again.
const retryAfter = 5 * time.Second

func (m *Manager) startDue(ctx context.Context, wg *sync.WaitGroup) {
	jobs, err := m.stored()
	if err != nil {
		m.cfg.Logger.Warn("list jobs", "err", err)
		return
	}
	now := m.cfg.Now()
	expired := 0
	for _, j := range jobs {
		id := j.JobID
		if Terminal(j.Status) && j.EndTime != nil && now.Sub(*j.EndTime) > m.cfg.Retention && m.cfg.Owns(id) && expired < expirePerPoll {
			expired++
			if err := m.expire(ctx, id); err != nil {
				m.cfg.Logger.Warn("job not expired; retrying", "job", id, "err", err)
			}
			continue
		}
		// A job cancelled before its start time is recorded as such by a
		// runner started at once.
		due := j.StartTime == nil || !j.StartTime.After(now) || m.cancelled(id)
		if Terminal(j.Status) || !due || !m.cfg.Owns(id) {
			continue
		}
		m.mu.Lock()
		if m.running[id] || now.Before(m.retry[id]) {
			m.mu.Unlock()
			continue
		}
		m.running[id] = true
		m.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := m.run(ctx, id)
			m.mu.Lock()
			delete(m.running, id)
			if err != nil && ctx.Err() == nil && !errors.Is(err, errNotOwner) {
				m.retry[id] = m.cfg.Now().Add(retryAfter)
				m.cfg.Logger.Warn("job stopped; retrying", "job", id, "err", err, "in", retryAfter)
			} else {
				delete(m.retry, id)
			}
			m.mu.Unlock()
		}()
	}
}

// DefaultRetention is how long finished jobs are kept unless
// Config.Retention says otherwise.
const DefaultRetention = 30 * 24 * time.Hour

// expirePerPoll bounds the expired jobs one poll deletes, so that a backlog
// of them does not hold up the start of due jobs.
const expirePerPoll = 10

// expire deletes a finished job: its device outcomes a page at a time,
// then its cancel marker and the job itself last, so that a member dying
// half way leaves the job to be expired again.
func (m *Manager) expire(ctx context.Context, id string) error {
	for {
		docs, err := m.cfg.Store.JobDocs(outcomePrefix(id), "", 256)
		if err != nil {
			return err
		}
		if len(docs) == 0 {
			break
		}
		del := make(map[string][]byte, len(docs))
		for _, d := range docs {
			del[d.Key] = nil
		}
		if err := m.cfg.Store.CommitJobDocs(ctx, del); err != nil {
			return err
		}
	}
	if err := m.cfg.Store.CommitJobDocs(ctx, map[string][]byte{cancelKey(id): nil, jobKey(id): nil}); err != nil {
		return err
	}
	m.cfg.Logger.Info("finished job expired", "job", id, "retention", m.cfg.Retention)
	return nil
}
