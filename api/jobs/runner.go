package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/api/query"
)

// errNotOwner stops a runner whose member no longer owns its job: the new
// owner resumes it.
var errNotOwner = errors.New("this member no longer owns the job")

// page is how many selected devices or outcomes one store read or write
// of a runner covers.
const page = 256

// patchAttempts bounds the retries of a twin update that other writers
// keep overtaking.
const patchAttempts = 5

// run runs job id from wherever its records say it is to its end, or
// until ctx ends, the member loses the job, or a store write fails.
func (m *Manager) run(ctx context.Context, id string) error {
	j, err := m.load(id)
	if err != nil || Terminal(j.Status) {
		return err
	}
	log := m.cfg.Logger.With("job", id)
	if m.cancelled(id) {
		return m.finish(ctx, &j, StatusCancelled, "")
	}
	if j.Status == StatusQueued {
		now := m.cfg.Now().UTC()
		j.Status, j.StartedTime = StatusRunning, &now
		if err := m.save(ctx, &j, nil); err != nil {
			return err
		}
		log.Info("job started", "type", j.Type)
	} else {
		log.Info("job resumed", "type", j.Type, "progress", j.Progress)
	}
	if err := m.selectDevices(ctx, &j); err != nil {
		var se *query.SyntaxError
		if errors.As(err, &se) || errcode.Of(err) == errcode.BadRequest {
			return m.finish(ctx, &j, StatusFailed, err.Error())
		}
		return err
	}
	if err := m.recount(&j); err != nil {
		return err
	}
	after := ""
	for {
		docs, err := m.cfg.Store.JobDocs(outcomePrefix(id), after, page)
		if err != nil {
			return err
		}
		var todo []Outcome
		for _, d := range docs {
			var o Outcome
			if err := json.Unmarshal(d.Val, &o); err != nil {
				return fmt.Errorf("job %s outcome %s: decode: %w", id, d.Key, err)
			}
			if o.Status == DevicePending || o.Status == DeviceRunning {
				todo = append(todo, o)
			}
		}
		for len(todo) > 0 {
			if err := m.check(ctx, id); err != nil {
				if errors.Is(err, errCancelled) {
					return m.finish(ctx, &j, StatusCancelled, "")
				}
				return err
			}
			n := min(len(todo), j.MaxConcurrency)
			if err := m.wave(ctx, &j, todo[:n]); err != nil {
				return err
			}
			todo = todo[n:]
		}
		if len(docs) < page {
			break
		}
		after = docs[len(docs)-1].Key
	}
	if err := m.recount(&j); err != nil {
		return err
	}
	log.Info("job completed", "progress", j.Progress)
	return m.finish(ctx, &j, StatusCompleted, "")
}

var errCancelled = errors.New("job cancelled")

// check says whether the runner may start another wave.
func (m *Manager) check(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !m.cfg.Owns(id) {
		return errNotOwner
	}
	if m.cancelled(id) {
		return errCancelled
	}
	return nil
}

func (m *Manager) finish(ctx context.Context, j *Job, status, msg string) error {
	now := m.cfg.Now().UTC()
	j.Status, j.EndTime, j.Error = status, &now, msg
	return m.save(ctx, j, nil)
}

// selectDevices writes a pending outcome for every device the condition
// selects, a page at a time, each page in one commit with the cursor, so
// that a resumed selection goes on after the last page written.
func (m *Manager) selectDevices(ctx context.Context, j *Job) error {
	for !j.Selection.Done {
		if err := m.check(ctx, j.JobID); err != nil {
			if errors.Is(err, errCancelled) {
				return nil // the wave loop sees it too
			}
			return err
		}
		ids, next, err := m.cfg.Fleet.Select(ctx, j.Condition, j.Selection.After, page)
		if err != nil {
			return fmt.Errorf("select devices: %w", err)
		}
		docs := make(map[string][]byte, len(ids)+1)
		now := m.cfg.Now().UTC()
		for _, dev := range ids {
			b, _ := json.Marshal(Outcome{DeviceID: dev, Status: DevicePending, UpdatedAt: now})
			docs[outcomeKey(j.JobID, dev)] = b
		}
		j.Progress.Total += len(ids)
		j.Progress.Pending += len(ids)
		j.Selection = Selection{Done: next == "", After: next}
		if err := m.save(ctx, j, docs); err != nil {
			return err
		}
	}
	return nil
}

// recount sets the job's progress from its outcomes.
func (m *Manager) recount(j *Job) error {
	var p Progress
	after := ""
	for {
		docs, err := m.cfg.Store.JobDocs(outcomePrefix(j.JobID), after, page)
		if err != nil {
			return err
		}
		for _, d := range docs {
			var o Outcome
			if err := json.Unmarshal(d.Val, &o); err != nil {
				return fmt.Errorf("job %s outcome %s: decode: %w", j.JobID, d.Key, err)
			}
			p.Total++
			switch o.Status {
			case DeviceSucceeded:
				p.Succeeded++
			case DeviceFailed:
				p.Failed++
			default:
				p.Pending++
			}
		}
		if len(docs) < page {
			j.Progress = p
			return nil
		}
		after = docs[len(docs)-1].Key
	}
}

// wave works on a few devices at once: their intents are committed, then
// they are applied concurrently, then their outcomes are committed with the
// job's progress.
func (m *Manager) wave(ctx context.Context, j *Job, outs []Outcome) error {
	intents := map[string][]byte{}
	resumed := make([]bool, len(outs))
	var wg sync.WaitGroup
	for i := range outs {
		o := &outs[i]
		if o.Status == DeviceRunning {
			resumed[i] = true
			continue
		}
		if j.Type == TypeInvokeMethod {
			o.Status, o.UpdatedAt = DeviceRunning, m.cfg.Now().UTC()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, v, err := m.cfg.Fleet.GetTwin(ctx, o.DeviceID)
			o.UpdatedAt = m.cfg.Now().UTC()
			if err != nil {
				o.Status, o.Error = DeviceFailed, err.Error()
				return
			}
			o.Status, o.Version = DeviceRunning, v
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, o := range outs {
		if !resumed[i] {
			b, _ := json.Marshal(o)
			intents[outcomeKey(j.JobID, o.DeviceID)] = b
		}
	}
	if len(intents) > 0 {
		if err := m.cfg.Store.CommitJobDocs(ctx, intents); err != nil {
			return err
		}
	}
	for i := range outs {
		o := &outs[i]
		if o.Status != DeviceRunning {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.apply(ctx, j, o, resumed[i])
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err // the outcomes stay as intents: the next run resolves them
	}
	results := map[string][]byte{}
	for _, o := range outs {
		if o.Status == DeviceRunning {
			continue
		}
		b, _ := json.Marshal(o)
		results[outcomeKey(j.JobID, o.DeviceID)] = b
		j.Progress.Pending--
		if o.Status == DeviceSucceeded {
			j.Progress.Succeeded++
		} else {
			j.Progress.Failed++
		}
	}
	return m.save(ctx, j, results)
}

// apply applies the job to one device whose intent is stored, and sets
// its outcome; resumed is true for an intent a previous run left.
func (m *Manager) apply(ctx context.Context, j *Job, o *Outcome, resumed bool) {
	set := func(status string, err error) {
		o.Status, o.UpdatedAt = status, m.cfg.Now().UTC()
		if err != nil {
			o.Error = err.Error()
		}
	}
	if j.Type == TypeInvokeMethod {
		if resumed {
			set(DeviceFailed, ErrInterrupted)
			return
		}
		mctx, cancel := context.WithTimeout(ctx, time.Duration(j.Method.TimeoutSeconds)*time.Second)
		defer cancel()
		payload := j.Method.Payload
		if len(payload) == 0 {
			payload = json.RawMessage("null")
		}
		st, resp, err := m.cfg.Fleet.InvokeMethod(mctx, o.DeviceID, j.Method.Name, payload)
		if ctx.Err() != nil {
			return // stopping: left running, failed as interrupted by the next run
		}
		if err != nil {
			set(DeviceFailed, err)
			return
		}
		if len(resp) == 0 || !json.Valid(resp) {
			resp, _ = json.Marshal(string(resp))
		}
		o.Result, _ = json.Marshal(struct {
			Status  int             `json:"status"`
			Payload json.RawMessage `json:"payload"`
		}{st, resp})
		set(DeviceSucceeded, nil)
		return
	}
	v := o.Version
	if resumed {
		done, w, err := m.holds(ctx, j, o.DeviceID)
		switch {
		case err != nil:
			set(DeviceFailed, err)
			return
		case w == v:
			// The interrupted patch did not happen: apply it.
		case done:
			o.Version = w
			set(DeviceSucceeded, nil)
			return
		default:
			set(DeviceFailed, ErrInterrupted)
			return
		}
	}
	for attempt := 0; attempt < patchAttempts; attempt++ {
		nv, err := m.cfg.Fleet.PatchTwin(ctx, o.DeviceID, j.TwinPatch.Desired, j.TwinPatch.Tags, v)
		if err == nil {
			o.Version = nv
			set(DeviceSucceeded, nil)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if errcode.Of(err) != errcode.Precondition {
			set(DeviceFailed, err)
			return
		}
		// Another writer came first: if the twin now holds the patch,
		// applying it would change nothing; otherwise apply it to the new
		// version.
		done, w, err := m.holds(ctx, j, o.DeviceID)
		if err != nil {
			set(DeviceFailed, err)
			return
		}
		if done {
			o.Version = w
			set(DeviceSucceeded, nil)
			return
		}
		v = w
	}
	set(DeviceFailed, fmt.Errorf("the twin kept changing: %d attempts overtaken by other writers", patchAttempts))
}

// holds reads a device's twin and reports whether it already holds what
// the job's patch sets, and its version.
func (m *Manager) holds(ctx context.Context, j *Job, dev string) (bool, int64, error) {
	doc, v, err := m.cfg.Fleet.GetTwin(ctx, dev)
	if err != nil {
		return false, 0, err
	}
	var tw struct {
		Desired map[string]any `json:"desired"`
		Tags    map[string]any `json:"tags"`
	}
	if err := json.Unmarshal(doc, &tw); err != nil {
		return false, 0, fmt.Errorf("twin %s: decode: %w", dev, err)
	}
	d, err := contained(tw.Desired, j.TwinPatch.Desired)
	if err != nil {
		return false, 0, err
	}
	t, err := contained(tw.Tags, j.TwinPatch.Tags)
	if err != nil {
		return false, 0, err
	}
	return d && t, v, nil
}
