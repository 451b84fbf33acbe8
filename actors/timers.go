package actors

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/persistence"
)

// timerService fires the plugins' durable timers. It knows every timer in
// this node's store: read at start and every rescanEvery (a replica learns
// of timers its peers wrote, so that after a member dies the survivors fire
// them), and updated at once by the local grains' commits. A due timer is
// fired by a TimerFire request to its grain, which activates it wherever it
// lives; the grain runs a timer only if it is due by its own state, so
// fires from several members, or stale ones, are harmless.
type timerService struct {
	s    *System
	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	timers map[string]timerEntry // by entity
}

type timerEntry struct {
	kind   string
	timers []entity.DurableTimer
	// retryAt postpones a fire that failed (grain unreachable).
	retryAt time.Time
}

const (
	rescanEvery = 5 * time.Second
	// pollMax bounds a wait so that a virtual clock moved by tests, or a
	// wall clock stepped forward, is noticed.
	pollMax = 250 * time.Millisecond
)

func newTimerService(s *System) *timerService {
	return &timerService{s: s, wake: make(chan struct{}, 1), stop: make(chan struct{}), timers: map[string]timerEntry{}}
}

func (t *timerService) start() {
	t.rescan()
	t.wg.Add(1)
	go t.loop()
}

func (t *timerService) close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	t.wg.Wait()
}

// set replaces the timers of an entity (an empty list removes it).
func (t *timerService) set(id, kind string, list []entity.DurableTimer) {
	t.mu.Lock()
	if len(list) == 0 {
		delete(t.timers, id)
	} else {
		t.timers[id] = timerEntry{kind: kind, timers: list}
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// rescan reads every timer in the local store.
func (t *timerService) rescan() {
	docs, err := t.s.store.ListDocs(persistence.Bucket(entity.BucketGrains), "")
	if err != nil {
		t.s.log.Warn("durable timers: rescan", "err", err)
		return
	}
	next := make(map[string]timerEntry, len(docs))
	for id, doc := range docs {
		var rec struct {
			Kind   string               `json:"kind"`
			Timers map[string]time.Time `json:"timers"`
		}
		if json.Unmarshal(doc, &rec) != nil || len(rec.Timers) == 0 {
			continue
		}
		e := timerEntry{kind: rec.Kind}
		for n, due := range rec.Timers {
			e.timers = append(e.timers, entity.DurableTimer{Name: n, Due: due})
		}
		next[id] = e
	}
	t.mu.Lock()
	for id, e := range t.timers {
		if old, ok := next[id]; ok {
			e.timers = old.timers
		}
		if _, ok := next[id]; ok || !e.retryAt.IsZero() {
			next[id] = e
		}
	}
	t.timers = next
	t.mu.Unlock()
}

type dueTimer struct {
	id, kind string
	timer    entity.DurableTimer
}

// due returns the timers due at now and how long to wait for the next.
func (t *timerService) due(now time.Time) ([]dueTimer, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []dueTimer
	wait := pollMax
	for id, e := range t.timers {
		if now.Before(e.retryAt) {
			continue
		}
		for _, tm := range e.timers {
			if !tm.Due.After(now) {
				out = append(out, dueTimer{id, e.kind, tm})
			} else if d := tm.Due.Sub(now); d < wait {
				wait = d
			}
		}
	}
	return out, wait
}

func (t *timerService) loop() {
	defer t.wg.Done()
	lastScan := time.Now()
	for {
		if time.Since(lastScan) >= rescanEvery {
			t.rescan()
			lastScan = time.Now()
		}
		due, wait := t.due(t.s.cfg.Now())
		for _, d := range due {
			t.fire(d)
		}
		select {
		case <-t.stop:
			return
		case <-t.wake:
		case <-time.After(max(wait, 5*time.Millisecond)):
		}
	}
}

// fire sends a due timer to its grain. The grain's commit replaces the
// entity's entry (set); until then the entry is postponed so a slow grain
// is not fired at again and again.
func (t *timerService) fire(d dueTimer) {
	t.mu.Lock()
	if e, ok := t.timers[d.id]; ok {
		e.retryAt = t.s.cfg.Now().Add(time.Second)
		t.timers[d.id] = e
	}
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), t.s.cfg.RequestTimeout)
	defer cancel()
	req := &actorspb.Request{Body: &actorspb.Request_Timer{Timer: &actorspb.TimerFire{Name: d.timer.Name, DueUnixNano: d.timer.Due.UnixNano()}}}
	if _, err := t.s.call(ctx, d.id, d.kind, req); err != nil {
		t.s.log.Warn("durable timer: fire", "entity", d.id, "timer", d.timer.Name, "err", err)
		if isGone(err) {
			t.set(d.id, "", nil)
		}
	}
}

func isGone(err error) bool {
	return errors.Is(err, ErrNotFound)
}
