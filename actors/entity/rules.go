package entity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/actors/twin"
)

// Rules run after the change that triggers them is committed: their
// outcomes (alerts raised or cleared, actions) are a follow-up Result. The
// rule states move on as they are evaluated.

func (c *Core) rules() []*rules.Rule {
	if c.cfg.Rules == nil {
		return nil
	}
	return c.cfg.Rules()
}

// ruleEnv is the twin as the conditions see it.
func ruleEnv(t *twin.Twin) map[string]any {
	tel := map[string]any{}
	for k, p := range t.Telemetry() {
		tel[k] = p.Value
	}
	return map[string]any{"telemetry": tel, "reported": t.Section(twin.Reported),
		"desired": t.Section(twin.Desired), "tags": t.Section(twin.Tags), "rollup": t.Rollup()}
}

func (c *Core) evaluateChange(ctx context.Context, now time.Time) *Result {
	return c.evaluate(ctx, now, nil)
}

// evaluate runs every rule in scope on a change; points are the telemetry
// of this message (nil for twin changes).
func (c *Core) evaluate(_ context.Context, now time.Time, points map[string]any) *Result {
	set := c.rules()
	st := &c.st
	if st.ruleStates == nil {
		st.ruleStates = map[string]*rules.State{}
	}
	if len(set) == 0 && len(st.ruleStates) == 0 {
		return nil
	}
	info := rules.EntityInfo{ID: st.ID, Kind: c.cfg.Kind, Ancestors: st.ancestors, Tags: st.Twin.Section(twin.Tags)}
	var env map[string]any
	live := map[string]bool{}
	d := c.draft()
	res := &Result{what: "alert of"}
	for _, r := range set {
		if !r.Matches(info) {
			continue
		}
		live[r.ID] = true
		if env == nil {
			env = ruleEnv(st.Twin)
		}
		rs := st.ruleStates[r.ID]
		if rs == nil {
			rs = r.NewState()
			st.ruleStates[r.ID] = rs
		}
		out, err := r.Step(rs, rules.Input{Now: now, Telemetry: points, Env: env})
		if err != nil {
			c.cfg.Log.Debug("rule evaluation", "rule", r.ID, "err", err)
		}
		c.outcomes(now, d, res, r, out)
	}
	// States of rules deleted or now out of scope are dropped.
	for id := range st.ruleStates {
		if !live[id] {
			delete(st.ruleStates, id)
		}
	}
	c.planTick(res)
	return c.ruleResult(d, res)
}

// tickRules moves the rules on when time alone passes.
func (c *Core) tickRules(_ context.Context, now time.Time) *Result {
	if !c.st.Exists {
		return nil
	}
	set := c.rules()
	var env map[string]any
	d := c.draft()
	res := &Result{what: "alert of"}
	for _, r := range set {
		rs := c.st.ruleStates[r.ID]
		if rs == nil {
			continue
		}
		if env == nil {
			env = ruleEnv(c.st.Twin)
		}
		out, err := r.Tick(rs, now, env)
		if err != nil {
			c.cfg.Log.Debug("rule tick", "rule", r.ID, "err", err)
		}
		c.outcomes(now, d, res, r, out)
	}
	c.planTick(res)
	return c.ruleResult(d, res)
}

// ruleResult finishes a rule Result: when alerts changed, the twin (whose
// "alerts" lists the open ones) and the contributions are written with
// them.
func (c *Core) ruleResult(d *State, res *Result) *Result {
	if len(res.Ops) > 0 {
		if op, err := twinOp(d); err == nil {
			res.Ops = append(res.Ops, op)
		}
		res.next = d
	}
	if len(res.Ops) == 0 && len(res.Events) == 0 && len(res.Actions) == 0 && !res.Timers.RuleTickSet {
		return nil
	}
	return res
}

// planTick sets the rule timer to the next rule deadline.
func (c *Core) planTick(res *Result) {
	var next time.Time
	for _, r := range c.rules() {
		if rs := c.st.ruleStates[r.ID]; rs != nil {
			if t, ok := r.NextDeadline(rs); ok && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
	}
	if next.Equal(c.st.ruleTick) {
		return
	}
	c.st.ruleTick = next
	res.Timers.RuleTick, res.Timers.RuleTickSet = next, true
}

func (c *Core) outcomes(now time.Time, d *State, res *Result, r *rules.Rule, outs []rules.Outcome) {
	for _, o := range outs {
		b, _ := json.Marshal(o)
		ev := c.event(d, EventRule, b, o.At)
		res.Events = append(res.Events, ev)
		switch o.Kind {
		case rules.Raised, rules.Cleared:
			if o.Severity == "" {
				continue
			}
			raised := o.Kind == rules.Raised
			err := c.changeAlert(now, d, res, rules.AlertID(r.ID, d.ID), r.ID, func(a *rules.Alert) error {
				if raised {
					a.Raise(o.At, o.Severity, o.Message)
				} else {
					a.Clear(o.At)
				}
				return nil
			})
			if err != nil {
				c.cfg.Log.Warn("alert update", "rule", r.ID, "err", err)
			}
		case rules.Fired:
			for i, a := range o.Actions {
				res.Actions = append(res.Actions, Action{Key: fmt.Sprintf("%s/%s/%d/%d", r.ID, d.ID, o.Seq, i),
					Rule: r.ID, Entity: d.ID, Parent: d.Ent.Parent, Action: a})
			}
		}
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

// changeAlert applies a lifecycle change to an alert of the entity: the
// alert document, the twin's list of open alerts, an alert event, and the
// contributions (alerts count in rollups).
func (c *Core) changeAlert(now time.Time, d *State, res *Result, id, ruleID string, change func(*rules.Alert) error) error {
	a := rules.NewAlert(ruleID, d.ID)
	if doc := pendingDoc(res, BucketAlerts, id); doc != nil {
		if err := json.Unmarshal(doc, a); err != nil {
			return fmt.Errorf("decode alert %s: %w", id, err)
		}
	} else if doc, err := c.r.Doc(BucketAlerts, id); err == nil {
		if err := json.Unmarshal(doc, a); err != nil {
			return fmt.Errorf("decode alert %s: %w", id, err)
		}
	} else if !errors.Is(err, ErrNotFound) {
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
	_ = json.Unmarshal(d.Twin.Alerts(), &refs)
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
	d.ownTwin()
	ch := d.Twin.SetAlerts(list, now)
	res.Ops = append(res.Ops, Op{Kind: OpPutDoc, Bucket: BucketAlerts, Key: a.ID, Doc: after})
	res.Events = append(res.Events, c.event(d, EventAlert, after, now))
	if !ch.Noop {
		res.Events = append(res.Events, c.changeEvent(d, EventTwin, ch, now))
	}
	c.scheduleRollup(now, res)
	return nil
}

// pendingDoc returns a document res already writes (two outcomes of one
// evaluation may change the same alert).
func pendingDoc(res *Result, bucket, key string) []byte {
	for i := len(res.Ops) - 1; i >= 0; i-- {
		if op := res.Ops[i]; op.Kind == OpPutDoc && op.Bucket == bucket && op.Key == key {
			return op.Doc
		}
	}
	return nil
}

// alertRequest acknowledges an alert, or clears it because its rule was
// deleted.
func (c *Core) alertRequest(now time.Time, in *actorspb.AlertChange) *Result {
	doc, err := c.r.Doc(BucketAlerts, in.Id)
	if err != nil {
		return fail(errcode.New(errcode.NotFound, "alert %s not found", in.Id))
	}
	var a rules.Alert
	if err := json.Unmarshal(doc, &a); err != nil || a.Entity != c.st.ID {
		return fail(errcode.New(errcode.NotFound, "alert %s of %s not found", in.Id, c.st.ID))
	}
	d := c.draft()
	res := &Result{what: "alert of"}
	err = c.changeAlert(now, d, res, a.ID, a.RuleID, func(x *rules.Alert) error {
		if in.Ack {
			if err := x.Ack(now); err != nil {
				return errcode.Wrap(errcode.Conflict, err)
			}
			return nil
		}
		x.Clear(now)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if len(res.Ops) > 0 {
		op, err := twinOp(d)
		if err != nil {
			return fail(err)
		}
		res.Ops = append(res.Ops, op)
		res.next = d
	}
	res.Reply = &actorspb.Response{Version: d.Twin.Version(), Body: []byte(`{}`)}
	return res
}
