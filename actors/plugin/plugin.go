// Package plugin is the API through which entity kinds are added to
// twinmesh: the built-in kinds (package actors/kinds) use it exactly as a
// third-party plugin does. A kind is a Go value with one required method,
// [Kind.Info]; everything else it can do is an optional one-method
// capability found by type assertion ([Operator], [TelemetryHandler],
// [ChangeHandler], [TimerHandler], [MessageHandler], [Activator]).
//
// A plugin registers its kind in init and is linked into a binary with a
// blank import (the database/sql driver pattern):
//
//	func init() { plugin.Register(Thermostat{}) }
//
// Hooks run inside the entity's grain, one message at a time, as part of
// the pure entity core: they read the twin and their private state through
// the [Ctx] and ask for effects through it (twin patches, durable timers,
// messages to other entities). The effects take place only if the step's
// writes commit, so a hook never half-applies. Hooks must not block: the
// Ctx carries a deadline. Package plugintest runs a kind's hooks without a
// cluster.
//
// Every member of a cluster must link the same kinds; a member that links
// a different set is refused when it joins.
package plugin

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Ctx is what every hook receives: the entity's ID, kind and parent, the
// time of the message (the plugin's clock), a deadline (it is a
// context.Context), a scoped *slog.Logger, reads of the twin and the
// private state, and the effects (PatchDesired, PatchReported, SetState,
// SetTimer, After, CancelTimer, Send, SendParent).
type Ctx = entity.Ctx

// Traits say what the core does for a kind's entities.
type Traits = entity.Traits

// The traits a kind may have.
const (
	// Device: entities hold an identity, connect over the protocol
	// adapters, take telemetry and count as devices in rollups.
	Device = entity.Device
	// Rollup: entities keep a rollup of what lies beneath them.
	Rollup = entity.Rollup
)

// Info describes a kind.
type Info struct {
	// Name is the kind ("thermostat"): constant, non-empty, unique.
	Name string
	// Traits of its entities.
	Traits Traits
}

// Kind is the one method every kind implements.
type Kind interface {
	Info() Info
}

// Operator exposes named operations, called by clients with
// POST /api/v1/entities/{id}/ops/{name} or the WebSocket "call" op
// (CONTRACT section 7). args is the JSON argument document ("null" when
// none); the result is encoded as JSON. Return ErrUnknownOp for a name the
// kind does not have; any other error answers 4xx (400 unless it carries
// an errcode, e.g. errcode.New(errcode.Conflict, …)).
type Operator interface {
	Operation(ctx *Ctx, name string, args json.RawMessage) (any, error)
}

// TelemetryHandler sees every telemetry message of its entities before it
// is stored: it may return the points unchanged, a new map (filtered or
// with derived points), or an error to refuse the message (the device gets
// an error; nothing is stored).
type TelemetryHandler interface {
	OnTelemetry(ctx *Ctx, points map[string]any) (map[string]any, error)
}

// ChangeHandler hears of every accepted change of desired ("desired") or
// reported ("reported") properties; patch is the change's effective merge
// patch. Returning an error refuses the change.
type ChangeHandler interface {
	OnChange(ctx *Ctx, section string, patch json.RawMessage) error
}

// TimerHandler runs when a durable timer set with Ctx.SetTimer or Ctx.After
// is due. Timers survive passivation, restarts and moves to another member;
// the grain is activated to run them even if no other message arrives.
type TimerHandler interface {
	OnTimer(ctx *Ctx, name string) error
}

// MessageHandler receives messages other entities sent with Ctx.Send.
type MessageHandler interface {
	OnMessage(ctx *Ctx, from, name string, payload json.RawMessage) error
}

// Activator runs when an entity's grain activates (after its state is
// loaded) and when the entity is created.
type Activator interface {
	OnActivate(ctx *Ctx) error
}

// ErrUnknownOp is what an Operator returns for a name it does not have.
var ErrUnknownOp = errcode.ErrUnknownOp

// UnknownOp returns ErrUnknownOp naming the operation.
func UnknownOp(kind, name string) error {
	return errcode.New(errcode.UnknownOp, "a %s has no operation %q", kind, name)
}

// Registry holds the kinds a node hosts. It is a value so tests build their
// own; Register and Default are the convenience for plugins that register
// in init.
type Registry struct {
	mu    sync.RWMutex
	kinds map[string]Kind
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{kinds: map[string]Kind{}} }

// Register adds a kind. It panics on a nil kind, an empty name or a
// duplicate: programmer errors that must fail at start.
func (r *Registry) Register(k Kind) {
	if k == nil {
		panic("plugin: Register of a nil Kind")
	}
	name := k.Info().Name
	if name == "" {
		panic(fmt.Sprintf("plugin: Register of %T with an empty name", k))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.kinds[name]; dup {
		panic(fmt.Sprintf("plugin: kind %q registered twice", name))
	}
	r.kinds[name] = k
}

// Lookup returns the kind registered under name.
func (r *Registry) Lookup(name string) (Kind, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.kinds[name]
	return k, ok
}

// Traits returns the traits of kind name (0 if unknown).
func (r *Registry) Traits(name string) Traits {
	if k, ok := r.Lookup(name); ok {
		return k.Info().Traits
	}
	return 0
}

// Kinds returns the registered kind names, sorted.
func (r *Registry) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.kinds))
	for k := range r.kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Clone returns an independent copy, so a test can add kinds to the
// default set without touching it.
func (r *Registry) Clone() *Registry {
	c := NewRegistry()
	r.mu.RLock()
	defer r.mu.RUnlock()
	for k, v := range r.kinds {
		c.kinds[k] = v
	}
	return c
}

var defaultRegistry = NewRegistry()

// Register adds a kind to the default registry; call it from init.
func Register(k Kind) { defaultRegistry.Register(k) }

// Default returns the registry that Register fills.
func Default() *Registry { return defaultRegistry }
