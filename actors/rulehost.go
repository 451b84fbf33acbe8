package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/persistence"
)

// Events of the rule engine.
const (
	// EventRule is published for every rule outcome (raised, cleared, fired).
	EventRule = "rule"
	// EventAction is published when a rule action ran (or failed).
	EventAction = "action"
)

// ruleSet is an immutable snapshot of the rules in force; grains read it
// on every evaluation, so a PUT or DELETE applies without restart.
type ruleSet struct{ list []*rules.Rule }

// Commander invokes a direct method on a device (the MQTT adapter).
type Commander interface {
	InvokeMethod(ctx context.Context, deviceID, method string, payload []byte) (status int, resp []byte, err error)
}

// RunActions runs the actions of fired rules (commands, messages, desired
// patches) until ctx is done or the System stops; "command" actions go to
// cmd, which reaches the devices' sessions (the protocol adapters). The
// caller owns the goroutine: the System never needs the adapters, which
// need the System.
func (s *System) RunActions(ctx context.Context, cmd Commander) {
	s.actions.serve(ctx, cmd)
}

func (s *System) loadRules() error {
	docs, err := s.store.ListDocs(persistence.BucketRules, "")
	if err != nil {
		return fmt.Errorf("load rules: %w", err)
	}
	set := &ruleSet{}
	for id, doc := range docs {
		r, err := rules.Parse(doc)
		if err != nil {
			// A rule stored by an older version that no longer compiles
			// must not stop the node; it is reported and skipped.
			s.log.Error("stored rule does not compile; skipped", "rule", id, "err", err)
			continue
		}
		set.list = append(set.list, r)
	}
	sort.Slice(set.list, func(i, j int) bool { return set.list[i].ID < set.list[j].ID })
	s.rules.Store(set)
	return nil
}

// PutRule validates, stores and applies a rule. The document's "id" must be
// absent or equal to id. Invalid rules are ErrBadRequest carrying the
// compiler's message and position.
func (s *System) PutRule(ctx context.Context, id string, doc []byte) (json.RawMessage, bool, error) {
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil || m == nil {
		return nil, false, fmt.Errorf("%w: a rule is a JSON object", ErrBadRequest)
	}
	if v, ok := m["id"]; ok && v != id {
		return nil, false, fmt.Errorf("%w: rule id %v does not match the path %q", ErrBadRequest, v, id)
	}
	m["id"] = id
	doc, _ = json.Marshal(m)
	r, err := rules.Parse(doc)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	// A scope under an entity that does not exist selects nothing: most
	// likely a typo, refused rather than stored to match nothing silently.
	if under := r.Scope.Under; under != "" {
		if _, err := s.store.GetEntity(under); errors.Is(err, persistence.ErrNotFound) {
			return nil, false, errcode.New(errcode.BadRequest, "scope.under: no entity %q; create it first, or leave under out for the whole tree", under)
		}
	}
	_, err = s.store.GetDoc(persistence.BucketRules, id)
	created := errors.Is(err, persistence.ErrNotFound)
	if err := s.commitCatalog(ctx, persistence.PutDoc(persistence.BucketRules, id, doc), untombstone("rules/"+id)); err != nil {
		return nil, false, fmt.Errorf("store rule %s: %w", id, err)
	}
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	old := s.rules.Load()
	next := &ruleSet{}
	for _, x := range old.list {
		if x.ID != id {
			next.list = append(next.list, x)
		}
	}
	next.list = append(next.list, r)
	sort.Slice(next.list, func(i, j int) bool { return next.list[i].ID < next.list[j].ID })
	s.rules.Store(next)
	return doc, created, nil
}

// GetRule returns a stored rule document.
func (s *System) GetRule(_ context.Context, id string) (json.RawMessage, error) {
	doc, err := s.store.GetDoc(persistence.BucketRules, id)
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, fmt.Errorf("%w: rule %s", ErrNotFound, id)
	}
	return doc, err
}

// Rules lists the stored rules in ID order.
func (s *System) Rules(_ context.Context) ([]json.RawMessage, error) {
	docs, err := s.store.ListDocs(persistence.BucketRules, "")
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(docs))
	for id := range docs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]json.RawMessage, len(ids))
	for i, id := range ids {
		out[i] = docs[id]
	}
	return out, nil
}

// DeleteRule removes a rule; its open alerts are cleared by their grains.
func (s *System) DeleteRule(ctx context.Context, id string) error {
	if _, err := s.GetRule(ctx, id); err != nil {
		return err
	}
	if err := s.commitCatalog(ctx, persistence.DeleteDoc(persistence.BucketRules, id), s.tombstone("rules/"+id)); err != nil {
		return fmt.Errorf("delete rule %s: %w", id, err)
	}
	s.rulesMu.Lock()
	old := s.rules.Load()
	next := &ruleSet{}
	for _, x := range old.list {
		if x.ID != id {
			next.list = append(next.list, x)
		}
	}
	s.rules.Store(next)
	s.rulesMu.Unlock()
	alerts, err := s.Alerts(ctx, AlertFilter{})
	if err != nil {
		return err
	}
	for _, a := range alerts {
		if a.RuleID == id && a.Open() {
			if err := s.alertOp(ctx, a.Entity, a.ID, false); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// AlertFilter selects alerts.
type AlertFilter struct {
	State string // active, acknowledged, cleared, or "" for all
	Under string // only entities in this subtree (itself included)
}

// Alerts lists alerts, newest last-seen first.
func (s *System) Alerts(ctx context.Context, f AlertFilter) ([]rules.Alert, error) {
	docs, err := s.store.ListDocs(persistence.BucketAlerts, "")
	if err != nil {
		return nil, err
	}
	out := []rules.Alert{}
	for _, doc := range docs {
		var a rules.Alert
		if json.Unmarshal(doc, &a) != nil || (f.State != "" && a.State != f.State) {
			continue
		}
		if f.Under != "" && a.Entity != f.Under {
			anc, err := s.Ancestors(ctx, a.Entity)
			if err != nil {
				continue
			}
			found := false
			for _, x := range anc {
				found = found || x == f.Under
			}
			if !found {
				continue
			}
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastSeen.After(out[j].LastSeen) })
	return out, nil
}

// Alert returns one alert.
func (s *System) Alert(_ context.Context, id string) (rules.Alert, error) {
	var a rules.Alert
	doc, err := s.store.GetDoc(persistence.BucketAlerts, id)
	if errors.Is(err, persistence.ErrNotFound) {
		return a, fmt.Errorf("%w: alert %s", ErrNotFound, id)
	}
	if err != nil {
		return a, err
	}
	return a, json.Unmarshal(doc, &a)
}

// AckAlert acknowledges an active alert (ErrConflict if it is not active).
func (s *System) AckAlert(ctx context.Context, id string) (rules.Alert, error) {
	a, err := s.Alert(ctx, id)
	if err != nil {
		return a, err
	}
	if err := s.alertOp(ctx, a.Entity, id, true); err != nil {
		return a, err
	}
	return s.Alert(ctx, id)
}

func (s *System) alertOp(ctx context.Context, ent, id string, ack bool) error {
	kind, err := s.kindOf(ent)
	if err != nil {
		return err
	}
	_, err = s.call(ctx, ent, kind, &actorspb.Request{Body: &actorspb.Request_Alert{Alert: &actorspb.AlertChange{Id: id, Ack: ack}}})
	return err
}

// ruleList returns the rules in force (the entity core's RuleSource).
func (s *System) ruleList() []*rules.Rule {
	if set := s.rules.Load(); set != nil {
		return set.list
	}
	return nil
}

// Actions ----------------------------------------------------------------

// actionJob is one action of a fired rule, run off the grain so a grain
// never waits on another grain or a device.
type actionJob = entity.Action

// actionRunner runs rule actions on a fixed pool with a bounded queue, and
// remembers recent keys so a redelivered outcome does not run twice.
type actionRunner struct {
	s    *System
	jobs chan actionJob
	stop chan struct{}

	mu   sync.Mutex
	seen map[string]bool
	ring []string
	next int
}

const (
	actionWorkers = 4
	actionQueue   = 1024
	actionMemory  = 4096
)

func newActionRunner(s *System) *actionRunner {
	return &actionRunner{s: s, jobs: make(chan actionJob, actionQueue), stop: make(chan struct{}),
		seen: map[string]bool{}, ring: make([]string, actionMemory)}
}

// serve runs actionWorkers workers until ctx is done or the runner
// closes, and returns once they ended.
func (r *actionRunner) serve(ctx context.Context, cmd Commander) {
	var wg sync.WaitGroup
	for i := 0; i < actionWorkers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case j := <-r.jobs:
					r.run(j, cmd)
				case <-r.stop:
					return
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
}

func (r *actionRunner) close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
}

// enqueue never blocks a grain: a full queue drops the action and says so.
func (r *actionRunner) enqueue(j actionJob) {
	r.mu.Lock()
	if r.seen[j.Key] {
		r.mu.Unlock()
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.seen, old)
	}
	r.ring[r.next], r.seen[j.Key] = j.Key, true
	r.next = (r.next + 1) % len(r.ring)
	r.mu.Unlock()
	select {
	case r.jobs <- j:
	default:
		r.s.log.Warn("rule action dropped: queue full", "rule", j.Rule, "entity", j.Entity)
	}
}

func (r *actionRunner) target(j actionJob, spec string) (string, error) {
	t, err := rules.ParseTarget(spec)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	switch t.Kind {
	case rules.TargetSelf:
		return j.Entity, nil
	case rules.TargetParent:
		if j.Parent == "" {
			return "", fmt.Errorf("%w: %s has no parent", ErrNotFound, j.Entity)
		}
		return j.Parent, nil
	case rules.TargetChild:
		e, err := r.s.store.GetEntity(t.ID)
		if err != nil || e.Parent != j.Entity {
			return "", fmt.Errorf("%w: %s is not a child of %s", ErrNotFound, t.ID, j.Entity)
		}
		return t.ID, nil
	}
	return t.ID, nil
}

func (r *actionRunner) run(j actionJob, cmd Commander) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		kind, target string
		err          error
		result       any
	)
	a := j.Action
	switch {
	case a.Command != nil:
		kind = "command"
		if target, err = r.target(j, a.Command.Target); err == nil {
			if cmd == nil {
				err = fmt.Errorf("%w: no protocol adapter", ErrNotConnected)
				break
			}
			timeout := time.Duration(a.Command.TimeoutSeconds) * time.Second
			if timeout <= 0 {
				timeout = 30 * time.Second
			}
			cctx, ccancel := context.WithTimeout(ctx, timeout)
			payload := []byte(a.Command.Payload)
			if len(payload) == 0 {
				payload = []byte("null")
			}
			var st int
			st, _, err = cmd.InvokeMethod(cctx, target, a.Command.Method, payload)
			ccancel()
			result = map[string]any{"method": a.Command.Method, "status": st}
		}
	case a.Message != nil:
		kind = "message"
		if target, err = r.target(j, a.Message.Target); err == nil {
			var m persistence.InboxMessage
			m, err = r.s.SendMessage(ctx, target, OutgoingMessage{Payload: a.Message.Payload, Properties: a.Message.Properties})
			result = map[string]any{"messageId": m.ID}
		}
	case a.Desired != nil:
		kind = "desired"
		if target, err = r.target(j, a.Desired.Target); err == nil {
			var v int64
			_, v, err = r.s.PatchTwin(ctx, target, PatchBody{Desired: a.Desired.Patch}, nil)
			result = map[string]any{"version": v}
		}
	default:
		return
	}
	data := map[string]any{"rule": j.Rule, "action": kind, "target": target, "key": j.Key, "result": result}
	if err != nil {
		data["error"] = err.Error()
		r.s.log.Warn("rule action failed", "rule", j.Rule, "entity", j.Entity, "action", kind, "target", target, "err", err)
	}
	b, _ := json.Marshal(data)
	r.s.publish(Event{Type: EventAction, Entity: j.Entity, Data: b, TS: r.s.cfg.Now().UTC()})
}
