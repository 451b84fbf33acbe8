package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/persistence"
)

// Events of the rule engine.
const (
	// EventRule is published for every rule outcome (raised, cleared, fired).
	EventRule = "rule"
	// EventAction is published when a rule action ran (or failed).
	EventAction = "action"
)

// Grain operations for alerts.
const opAlertAck = "alert-ack"

// ruleSet is an immutable snapshot of the rules in force; grains read it
// on every evaluation, so a PUT or DELETE applies without restart.
type ruleSet struct{ list []*rules.Rule }

// Commander invokes a direct method on a device (the MQTT adapter).
type Commander interface {
	InvokeMethod(ctx context.Context, deviceID, method string, payload []byte) (status int, resp []byte, err error)
}

// SetCommander sets what runs "command" actions. Call it before Start.
func (s *System) SetCommander(c Commander) { s.commander = c }

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
			if err := s.alertOp(ctx, a.Entity, opAlertRetire, a.ID); err != nil && !errors.Is(err, ErrNotFound) {
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
	if err := s.alertOp(ctx, a.Entity, opAlertAck, id); err != nil {
		return a, err
	}
	return s.Alert(ctx, id)
}

const opAlertRetire = "alert-retire"

func (s *System) alertOp(ctx context.Context, entity, op, id string) error {
	kind, err := s.kindOf(entity)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"id": id})
	_, err = s.call(ctx, entity, kind, op, body, nil)
	return err
}

// Actions ----------------------------------------------------------------

// actionJob is one action of a fired rule, run off the grain so a grain
// never waits on another grain or a device.
type actionJob struct {
	key    string // "<rule>/<entity>/<seq>/<index>": idempotency key
	rule   string
	entity string
	parent string
	action rules.Action
}

// actionRunner runs rule actions on a fixed pool with a bounded queue, and
// remembers recent keys so a redelivered outcome does not run twice.
type actionRunner struct {
	s    *System
	jobs chan actionJob
	stop chan struct{}
	wg   sync.WaitGroup

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

func (r *actionRunner) start() {
	for i := 0; i < actionWorkers; i++ {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case j := <-r.jobs:
					r.run(j)
				case <-r.stop:
					return
				}
			}
		}()
	}
}

func (r *actionRunner) close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

// enqueue never blocks a grain: a full queue drops the action and says so.
func (r *actionRunner) enqueue(j actionJob) {
	r.mu.Lock()
	if r.seen[j.key] {
		r.mu.Unlock()
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.seen, old)
	}
	r.ring[r.next], r.seen[j.key] = j.key, true
	r.next = (r.next + 1) % len(r.ring)
	r.mu.Unlock()
	select {
	case r.jobs <- j:
	default:
		r.s.log.Warn("rule action dropped: queue full", "rule", j.rule, "entity", j.entity)
	}
}

func (r *actionRunner) target(j actionJob, spec string) (string, error) {
	t, err := rules.ParseTarget(spec)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	switch t.Kind {
	case rules.TargetSelf:
		return j.entity, nil
	case rules.TargetParent:
		if j.parent == "" {
			return "", fmt.Errorf("%w: %s has no parent", ErrNotFound, j.entity)
		}
		return j.parent, nil
	case rules.TargetChild:
		e, err := r.s.store.GetEntity(t.ID)
		if err != nil || e.Parent != j.entity {
			return "", fmt.Errorf("%w: %s is not a child of %s", ErrNotFound, t.ID, j.entity)
		}
		return t.ID, nil
	}
	return t.ID, nil
}

func (r *actionRunner) run(j actionJob) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		kind, target string
		err          error
		result       any
	)
	a := j.action
	switch {
	case a.Command != nil:
		kind = "command"
		if target, err = r.target(j, a.Command.Target); err == nil {
			if r.s.commander == nil {
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
			st, _, err = r.s.commander.InvokeMethod(cctx, target, a.Command.Method, payload)
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
	data := map[string]any{"rule": j.rule, "action": kind, "target": target, "key": j.key, "result": result}
	if err != nil {
		data["error"] = err.Error()
		r.s.log.Warn("rule action failed", "rule", j.rule, "entity", j.entity, "action", kind, "target", target, "err", err)
	}
	b, _ := json.Marshal(data)
	r.s.publish(Event{Type: EventAction, Entity: j.entity, Data: b, TS: r.s.cfg.Now().UTC()})
}

// Grain side ---------------------------------------------------------------

// ruleTick is the local timer message that moves rules on when time alone
// passes (a `for` elapsing, a tumbling window closing).
type ruleTick struct{}

// ruleEnv is the twin as the conditions see it.
func (g *grain) ruleEnv() map[string]any {
	tel := map[string]any{}
	for k, p := range g.tw.Telemetry() {
		tel[k] = p.Value
	}
	return map[string]any{"telemetry": tel, "reported": g.tw.Section(twin.Reported),
		"desired": g.tw.Section(twin.Desired), "tags": g.tw.Section(twin.Tags), "rollup": g.tw.Rollup()}
}

func (g *grain) entityInfo() rules.EntityInfo {
	return rules.EntityInfo{ID: g.id, Kind: g.kind, Ancestors: g.ancestors, Tags: g.tw.Section(twin.Tags)}
}

func (g *grain) loadAncestors() {
	anc, err := g.sys.Ancestors(context.Background(), g.id)
	if err != nil {
		g.log.Debug("ancestors", "err", err)
	}
	g.ancestors = anc
}

// evaluate runs every rule in scope on a change; points are the telemetry
// of this message (nil for twin changes).
func (g *grain) evaluate(ctx actor.Context, points map[string]any) {
	set := g.sys.rules.Load()
	if set == nil || !g.exists {
		return
	}
	if g.ruleStates == nil {
		g.ruleStates = map[string]*rules.State{}
	}
	info := g.entityInfo()
	var env map[string]any
	live := map[string]bool{}
	for _, r := range set.list {
		if !r.Matches(info) {
			continue
		}
		live[r.ID] = true
		if env == nil {
			env = g.ruleEnv()
		}
		st := g.ruleStates[r.ID]
		if st == nil {
			st = r.NewState()
			g.ruleStates[r.ID] = st
		}
		out, err := r.Step(st, rules.Input{Now: g.now(), Telemetry: points, Env: env})
		if err != nil {
			g.log.Debug("rule evaluation", "rule", r.ID, "err", err)
		}
		g.handleOutcomes(ctx, r, out)
	}
	// States of rules deleted or now out of scope are dropped.
	for id := range g.ruleStates {
		if !live[id] {
			delete(g.ruleStates, id)
		}
	}
	g.scheduleTick(ctx)
}

func (g *grain) tick(ctx actor.Context) {
	set := g.sys.rules.Load()
	if set == nil || !g.exists {
		return
	}
	var env map[string]any
	for _, r := range set.list {
		st := g.ruleStates[r.ID]
		if st == nil {
			continue
		}
		if env == nil {
			env = g.ruleEnv()
		}
		out, err := r.Tick(st, g.now(), env)
		if err != nil {
			g.log.Debug("rule tick", "rule", r.ID, "err", err)
		}
		g.handleOutcomes(ctx, r, out)
	}
	g.scheduleTick(ctx)
}

func (g *grain) scheduleTick(ctx actor.Context) {
	set := g.sys.rules.Load()
	var next time.Time
	for _, r := range set.list {
		if st := g.ruleStates[r.ID]; st != nil {
			if d, ok := r.NextDeadline(st); ok && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
	}
	if g.cancelTick != nil {
		g.cancelTick()
		g.cancelTick = nil
	}
	if next.IsZero() {
		return
	}
	wait := next.Sub(g.now())
	if wait < time.Millisecond {
		wait = time.Millisecond
	}
	g.cancelTick = scheduler.NewTimerScheduler(ctx).SendOnce(wait, ctx.Self(), ruleTick{})
}

func (g *grain) handleOutcomes(ctx actor.Context, r *rules.Rule, outs []rules.Outcome) {
	for _, o := range outs {
		b, _ := json.Marshal(o)
		g.sys.publish(Event{Type: EventRule, Entity: g.id, Kind: g.kind, Version: g.tw.Version(), Data: b, TS: o.At})
		switch o.Kind {
		case rules.Raised:
			if o.Severity != "" {
				g.logAlertErr(g.changeAlert(rules.AlertID(r.ID, g.id), r.ID, func(a *rules.Alert) error {
					a.Raise(o.At, o.Severity, o.Message)
					return nil
				}))
				g.scheduleRollup(ctx)
			}
		case rules.Cleared:
			if o.Severity != "" {
				g.logAlertErr(g.changeAlert(rules.AlertID(r.ID, g.id), r.ID, func(a *rules.Alert) error {
					a.Clear(o.At)
					return nil
				}))
				g.scheduleRollup(ctx)
			}
		case rules.Fired:
			for i, a := range o.Actions {
				g.sys.actions.enqueue(actionJob{key: fmt.Sprintf("%s/%s/%d/%d", r.ID, g.id, o.Seq, i),
					rule: r.ID, entity: g.id, parent: g.ent.Parent, action: a})
			}
		}
	}
}

func (g *grain) logAlertErr(err error) {
	if err != nil {
		g.log.Warn("alert update", "err", err)
	}
}

// alertRef is what a twin's "alerts" array shows of an open alert.
type alertRef struct {
	ID       string    `json:"id"`
	RuleID   string    `json:"ruleId"`
	Severity string    `json:"severity"`
	State    string    `json:"state"`
	Message  string    `json:"message,omitempty"`
	Since    time.Time `json:"since"`
	Count    int       `json:"count"`
}

// changeAlert applies a lifecycle change to an alert of this entity,
// persists it with the twin (whose "alerts" lists the open ones) and
// publishes an alert event.
func (g *grain) changeAlert(id, ruleID string, change func(*rules.Alert) error) error {
	a := rules.NewAlert(ruleID, g.id)
	if doc, err := g.sys.store.GetDoc(persistence.BucketAlerts, id); err == nil {
		if err := json.Unmarshal(doc, a); err != nil {
			return fmt.Errorf("decode alert %s: %w", id, err)
		}
	} else if !errors.Is(err, persistence.ErrNotFound) {
		return err
	}
	before, _ := json.Marshal(a)
	if err := change(a); err != nil {
		return err
	}
	after, _ := json.Marshal(a)
	if string(before) == string(after) {
		return nil
	}
	var refs []alertRef
	_ = json.Unmarshal(g.tw.Alerts(), &refs)
	kept := refs[:0]
	for _, r := range refs {
		if r.ID != a.ID {
			kept = append(kept, r)
		}
	}
	if a.Open() {
		kept = append(kept, alertRef{ID: a.ID, RuleID: a.RuleID, Severity: a.Severity, State: a.State,
			Message: a.Message, Since: a.FirstSeen, Count: a.Count})
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].ID < kept[j].ID })
	list, _ := json.Marshal(kept)
	prev := g.tw
	g.tw = g.tw.Clone()
	c := g.tw.SetAlerts(list, g.now())
	events := []Event{{Type: EventAlert, Version: g.tw.Version(), Data: after}}
	if !c.Noop {
		events = append(events, changeEvent(EventTwin, c))
	}
	if err := g.commit([]persistence.Op{persistence.PutDoc(persistence.BucketAlerts, a.ID, after)}, events...); err != nil {
		g.tw = prev
		return err
	}
	return nil
}

// alertRequest handles acknowledge and retire (rule deleted) requests.
func (g *grain) alertRequest(ctx actor.Context, op string, body []byte) ([]byte, error) {
	var in struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(body, &in)
	doc, err := g.sys.store.GetDoc(persistence.BucketAlerts, in.ID)
	if err != nil {
		return nil, fmt.Errorf("%w: alert %s", ErrNotFound, in.ID)
	}
	var a rules.Alert
	if err := json.Unmarshal(doc, &a); err != nil || a.Entity != g.id {
		return nil, fmt.Errorf("%w: alert %s of %s", ErrNotFound, in.ID, g.id)
	}
	err = g.changeAlert(a.ID, a.RuleID, func(x *rules.Alert) error {
		if op == opAlertAck {
			if err := x.Ack(g.now()); err != nil {
				return fmt.Errorf("%w: %v", ErrConflict, err)
			}
			return nil
		}
		x.Clear(g.now())
		return nil
	})
	if err != nil {
		return nil, err
	}
	g.scheduleRollup(ctx)
	return []byte(`{}`), nil
}
