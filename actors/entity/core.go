package entity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/actors/twin"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// Traits say how the core treats a kind's entities.
type Traits uint8

// The traits.
const (
	// Device entities hold an identity, connect, take telemetry and count
	// as devices in their ancestors' rollups.
	Device Traits = 1 << iota
	// Rollup entities keep a rollup of what lies beneath them.
	Rollup
)

// Has reports whether t includes all of u.
func (t Traits) Has(u Traits) bool { return t&u == u }

// ErrNotFound is what a Reader returns for an absent item.
var ErrNotFound = errors.New("entity: not found")

// ErrWrongKind: Load found the entity stored with another kind than the
// core's (it was deleted and created again as another kind, and the caller
// addressed the grain by the kind it knew before).
var ErrWrongKind = errors.New("entity: stored with another kind")

// Reader is what the core reads from the store. Reads happen during Load
// and, rarely, during Step (a delete checks for children; an alert change
// reads the alert). Implementations must be safe for concurrent use; they
// return ErrNotFound (possibly wrapped) for an absent item.
type Reader interface {
	Entity(id string) (record.Entity, error)
	TwinDoc(id string) ([]byte, error)
	Doc(bucket, key string) ([]byte, error)
	Docs(bucket, prefix string) (map[string][]byte, error)
	// HasChildren reports whether any entity has id as its parent.
	HasChildren(id string) (bool, error)
	// Telemetry returns records of id with TS >= from, newest first, at
	// most limit.
	Telemetry(ctx context.Context, id string, from time.Time, limit int) ([]record.TelemetryRecord, error)
	Inbox(id string) ([]record.InboxMessage, error)
}

// RuleSource returns the rules in force, in ID order. The slice is
// immutable; a change of rules returns a new one.
type RuleSource func() []*rules.Rule

// Config is what a core knows besides its state.
type Config struct {
	// Kind is the entity kind; Traits how the core treats it.
	Kind   string
	Traits Traits
	// Plugin is the kind's behaviour: the value registered for Kind. Its
	// optional capabilities (see package actors/plugin) are found by type
	// assertion. May be nil.
	Plugin any
	// Limits bound twin sections.
	Limits twin.Limits
	// Rules returns the rules in force; nil means none.
	Rules RuleSource
	// Log is the grain's logger, handed to plugins.
	Log *slog.Logger
}

// Core is one entity's state machine. It is not safe for concurrent use:
// its grain serialises messages.
type Core struct {
	cfg Config
	r   Reader
	st  State
}

// State is the entity's state. The core owns it; callers read it through
// the Core's accessors.
type State struct {
	ID     string
	Exists bool
	Ent    record.Entity
	Twin   *twin.Twin

	// contribs holds the contributions received from children, by edge
	// (contains, via) and child.
	contribs [2]map[string]Contribution
	// stored and sent are, by contribution key, the contribution on disk
	// and the one last told to the ancestor in this activation.
	stored, sent map[string]string

	ancestors []string
	// lastTS keeps telemetry timestamps strictly increasing per entity so
	// a replay from the warm store is exact; unflushed counts telemetry
	// changes not yet in the stored twin document.
	lastTS    time.Time
	unflushed int
	lastFlush time.Time

	mids *midSet

	ruleStates map[string]*rules.State
	ruleTick   time.Time

	rollupPending bool
	lastRollup    time.Time

	plugin pluginRecord

	// ownedTwin, ownedStored and ownedSent say that a draft holds its own
	// copies.
	ownedTwin, ownedStored, ownedSent bool
}

// New returns the core of an entity that is not loaded: call Load.
func New(cfg Config, r Reader, id string) *Core {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Core{cfg: cfg, r: r, st: State{ID: id}}
}

// ID returns the entity ID.
func (c *Core) ID() string { return c.st.ID }

// Kind returns the entity kind.
func (c *Core) Kind() string { return c.cfg.Kind }

// Exists reports whether the entity exists.
func (c *Core) Exists() bool { return c.st.Exists }

// Entity returns the entity record.
func (c *Core) Entity() record.Entity { return c.st.Ent }

// Twin returns the committed twin; callers must not modify it.
func (c *Core) Twin() *twin.Twin { return c.st.Twin }

// Timers returns the plugin's durable timers.
func (c *Core) Timers() []DurableTimer { return c.st.plugin.timerList() }

// Load reads the entity's state: the entity, its twin (with telemetry the
// stored document missed replayed from the warm store), the children's
// contributions and the plugin record. now starts the flush clock.
func (c *Core) Load(ctx context.Context, now time.Time) error {
	id := c.st.ID
	st := State{ID: id, mids: &midSet{}, ruleStates: map[string]*rules.State{}}
	st.resetContribs()
	ent, err := c.r.Entity(id)
	if errors.Is(err, ErrNotFound) {
		c.st = st
		return nil
	}
	if err != nil {
		return fmt.Errorf("load entity %s: %w", id, err)
	}
	if ent.Kind != c.cfg.Kind {
		return fmt.Errorf("%w: entity %s is a %s, not a %s", ErrWrongKind, id, ent.Kind, c.cfg.Kind)
	}
	st.Ent, st.Exists = ent, true
	st.Twin = twin.New(id, c.cfg.Kind)
	doc, err := c.r.TwinDoc(id)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return fmt.Errorf("load twin %s: %w", id, err)
	default:
		if err := st.Twin.UnmarshalJSON(doc); err != nil {
			return fmt.Errorf("decode twin %s: %w", id, err)
		}
	}
	if err := c.replay(ctx, &st); err != nil {
		return err
	}
	st.lastFlush = now
	if c.cfg.Traits.Has(Rollup) {
		docs, err := c.r.Docs(BucketContrib, id+"/")
		if err != nil {
			return fmt.Errorf("load contributions of %s: %w", id, err)
		}
		for k, v := range docs {
			edge, child, ok := splitContribKey(k[len(id)+1:])
			if !ok || !c.stillBeneath(edge, child, id) {
				continue
			}
			var con Contribution
			if json.Unmarshal(v, &con) == nil {
				st.contribs[edge][child] = con
			}
		}
	}
	if doc, err := c.r.Doc(BucketGrains, id); err == nil {
		if err := json.Unmarshal(doc, &st.plugin); err != nil {
			return fmt.Errorf("decode plugin record of %s: %w", id, err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("load plugin record of %s: %w", id, err)
	}
	st.ancestors = c.ancestors(ent)
	c.st = st
	return nil
}

// replay applies warm-store records newer than the stored document:
// telemetry acknowledged after the document's last write (a crash before
// its flush) is in the warm store, so the twin loses nothing.
func (c *Core) replay(ctx context.Context, st *State) error {
	var newest time.Time
	for _, p := range st.Twin.Telemetry() {
		if p.TS.After(newest) {
			newest = p.TS
		}
	}
	st.lastTS = newest
	const page = 10000
	for {
		from := newest.Add(time.Nanosecond)
		if newest.IsZero() {
			from = time.Unix(0, 1)
		}
		recs, err := c.r.Telemetry(ctx, st.ID, from, page)
		if err != nil {
			return fmt.Errorf("replay telemetry of %s: %w", st.ID, err)
		}
		for i := len(recs) - 1; i >= 0; i-- {
			r := recs[i]
			if len(r.Points) > 0 {
				st.Twin.MergeTelemetry(r.Points, r.TS)
			}
			if r.TS.After(st.lastTS) {
				st.lastTS = r.TS
			}
		}
		if len(recs) < page {
			return nil
		}
		newest = st.lastTS
	}
}

// ancestors returns the parent chain of ent, nearest first.
func (c *Core) ancestors(ent record.Entity) []string {
	var out []string
	seen := map[string]bool{ent.ID: true}
	for p := ent.Parent; p != "" && !seen[p] && len(out) < 64; {
		seen[p] = true
		out = append(out, p)
		pe, err := c.r.Entity(p)
		if err != nil {
			break
		}
		p = pe.Parent
	}
	return out
}

// stillBeneath reports whether child still contributes to id along edge: a
// contribution whose child was deleted or moved while this copy was away is
// not counted.
func (c *Core) stillBeneath(edge int, child, id string) bool {
	ce, err := c.r.Entity(child)
	if err != nil {
		return false
	}
	if edge == edgeVia {
		return ce.ConnectedVia == id
	}
	return ce.Parent == id
}

// Result is what one Step asks of the caller. The caller commits Ops (all
// or nothing), then carries out the rest in order, then calls Commit; or,
// when the commit fails, calls Abort and answers the error instead of
// Reply.
type Result struct {
	Ops     []Op
	Events  []Event
	Sends   []Send
	Actions []Action
	// Reply answers the request being handled; nil for notifications and
	// timers.
	Reply *actorspb.Response
	// Timers changes the grain's local timers.
	Timers Timers
	// DurableTimers is set when the plugin's durable timers changed: the
	// full new list (possibly empty).
	DurableTimers []DurableTimer
	// TimersChanged says DurableTimers is meaningful.
	TimersChanged bool
	// Stop asks the caller to stop the grain after this result (the
	// entity was deleted, or does not exist).
	Stop bool

	next   *State
	commit []func(*State)
	// then is follow-up work that runs once the state moved on.
	then []func(context.Context, time.Time) *Result
	what string
}

// What names the step for error messages ("telemetry", "patch", …).
func (r *Result) What() string { return r.what }

// reply sets a success reply.
func (r *Result) reply(resp *actorspb.Response) *Result {
	r.Reply = resp
	return r
}

// fail returns a Result that answers err and changes nothing.
func fail(err error) *Result {
	return &Result{Reply: ErrorResponse(err)}
}

// ErrorResponse is the Response that answers err.
func ErrorResponse(err error) *actorspb.Response {
	return &actorspb.Response{Code: int32(errcode.Of(err)), Message: errcode.Message(err)}
}

// Abort discards a Result whose ops could not be committed: the state stays
// as it was before the Step.
func (c *Core) Abort(r *Result) {
	if r == nil {
		return
	}
	// Contribution docs on disk are unknown after a failed commit: read
	// them again when next needed.
	c.st.stored = map[string]string{}
}

// Commit moves the state on to what r computed, once r's ops are durable,
// and returns follow-up work (rule evaluation and its alert changes), or
// nil.
func (c *Core) Commit(ctx context.Context, now time.Time, r *Result) *Result {
	if r == nil {
		return nil
	}
	if r.next != nil {
		c.st = *r.next
	}
	for _, f := range r.commit {
		f(&c.st)
	}
	for i, f := range r.then {
		if !c.st.Exists {
			return nil
		}
		if next := f(ctx, now); next != nil {
			next.then = append(next.then, r.then[i+1:]...)
			return next
		}
	}
	return nil
}

// draft returns a copy of the committed state to change; maps shared with
// the committed state are copied before a change (see own*).
func (c *Core) draft() *State {
	d := c.st
	d.ownedTwin, d.ownedStored, d.ownedSent = false, false, false
	return &d
}

// ownTwin gives the draft its own copy of the twin.
func (d *State) ownTwin() {
	if !d.ownedTwin {
		d.Twin, d.ownedTwin = d.Twin.Clone(), true
	}
}

// ownStored and ownSent give the draft its own copy of a contribution
// cache before it changes it.
func (d *State) ownStored() {
	if !d.ownedStored {
		d.stored, d.ownedStored = maps.Clone(d.stored), true
	}
}

func (d *State) ownSent() {
	if !d.ownedSent {
		d.sent, d.ownedSent = maps.Clone(d.sent), true
	}
}

// ownContribCache gives the draft its own copies of both caches.
func (d *State) ownContribCache() {
	d.ownStored()
	d.ownSent()
}

func (st *State) resetContribs() {
	st.contribs = [2]map[string]Contribution{{}, {}}
	st.stored, st.sent = map[string]string{}, map[string]string{}
}

func (c *Core) isDevice() bool    { return c.cfg.Traits.Has(Device) }
func (c *Core) keepsRollup() bool { return c.cfg.Traits.Has(Rollup) }

// twinReply is the reply carrying the twin document and its version.
func twinReply(t *twin.Twin) *actorspb.Response {
	doc, err := t.MarshalJSON()
	if err != nil {
		return ErrorResponse(errcode.New(errcode.Internal, "encode twin %s: %v", t.ID(), err))
	}
	return &actorspb.Response{Version: t.Version(), Twin: doc, SessionNode: sessionNode(t)}
}

func sessionNode(t *twin.Twin) string {
	cn := t.Connection()
	if cn.State != "connected" {
		return ""
	}
	return cn.Node
}

// event builds an event of this entity.
func (c *Core) event(d *State, typ string, data []byte, ts time.Time) Event {
	var v int64
	if d.Twin != nil {
		v = d.Twin.Version()
	}
	return Event{Type: typ, Entity: d.ID, Kind: c.cfg.Kind, Version: v, Data: data, TS: ts}
}

func (c *Core) changeEvent(d *State, typ string, ch twin.Change, ts time.Time) Event {
	return Event{Type: typ, Entity: d.ID, Kind: c.cfg.Kind, Version: ch.Version, Section: ch.Section,
		SectionVersion: ch.SectionVersion, Data: ch.Data, TS: ts}
}

// twinOp is the op that writes d's twin document.
func twinOp(d *State) (Op, error) {
	doc, err := d.Twin.MarshalJSON()
	if err != nil {
		return Op{}, errcode.New(errcode.Internal, "encode twin %s: %v", d.ID, err)
	}
	return Op{Kind: OpPutTwin, Key: d.ID, Doc: doc}, nil
}

func mapTwinErr(err error) error {
	switch {
	case errors.Is(err, twin.ErrTooLarge), errors.Is(err, twin.ErrTooDeep), errors.Is(err, twin.ErrTooManyPoints):
		return errcode.Wrap(errcode.TooLarge, err)
	case errors.Is(err, twin.ErrMalformed), errors.Is(err, twin.ErrReservedKey), errors.Is(err, twin.ErrPointName):
		return errcode.Wrap(errcode.BadRequest, err)
	}
	return err
}
