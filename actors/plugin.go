package actors

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Behavior is the plugin API: the one method every entity kind implements.
// Everything else a kind can do is an optional capability, discovered by type
// assertion (see Connectable, Aggregating, TelemetryFilter, Activator), so a
// small plugin stays small.
type Behavior interface {
	// Kind names the entity kind ("device", "room", "thermostat", ...). It
	// must be constant, non-empty and unique within a Registry.
	Kind() string
}

// Connectable is implemented by kinds whose entities hold a device identity,
// connect over the protocol adapters, and count as devices in rollups.
type Connectable interface {
	Behavior
	// Connectable reports whether the kind's entities are devices.
	Connectable() bool
}

// Aggregating is implemented by kinds that keep a rollup of their subtree
// (devices and connected devices beneath them, per-point aggregates).
type Aggregating interface {
	Behavior
	// Aggregating reports whether the kind keeps a rollup.
	Aggregating() bool
}

// TelemetryFilter is implemented by kinds that inspect or derive telemetry
// before it is applied to the twin. It runs inside the grain, so it must not
// block for long; it may return a new map (derived points added) or an error
// to refuse the message.
type TelemetryFilter interface {
	Behavior
	FilterTelemetry(ctx context.Context, entityID string, points map[string]any) (map[string]any, error)
}

// Activator is implemented by kinds that want to know when one of their
// grains activates (after its twin is loaded). Returning an error is logged;
// the grain stays active.
type Activator interface {
	Behavior
	Activate(ctx context.Context, entityID string) error
}

// Registry holds the kinds a node hosts. It is a value so tests can build
// their own; Register and DefaultRegistry are a convenience for plugins that
// register themselves in init, like database/sql drivers.
type Registry struct {
	mu    sync.RWMutex
	kinds map[string]Behavior
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{kinds: map[string]Behavior{}} }

// Register adds a kind. It panics on a nil behavior, an empty kind or a
// duplicate kind: these are programmer errors that must fail at start.
func (r *Registry) Register(b Behavior) {
	if b == nil {
		panic("actors: Register of nil Behavior")
	}
	k := b.Kind()
	if k == "" {
		panic("actors: Register of a Behavior with an empty kind")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.kinds[k]; dup {
		panic(fmt.Sprintf("actors: kind %q registered twice", k))
	}
	r.kinds[k] = b
}

// Lookup returns the behavior registered for kind.
func (r *Registry) Lookup(kind string) (Behavior, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	b, ok := r.kinds[kind]
	return b, ok
}

// Kinds returns the registered kinds, sorted.
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

// Clone returns an independent copy, so a test can add kinds to the default
// set without touching it.
func (r *Registry) Clone() *Registry {
	c := NewRegistry()
	r.mu.RLock()
	defer r.mu.RUnlock()
	for k, b := range r.kinds {
		c.kinds[k] = b
	}
	return c
}

var defaultRegistry = NewRegistry()

// Register adds a kind to the default registry; call it from a plugin's init.
func Register(b Behavior) { defaultRegistry.Register(b) }

// DefaultRegistry returns the registry that Register fills.
func DefaultRegistry() *Registry { return defaultRegistry }

func isConnectable(b Behavior) bool {
	c, ok := b.(Connectable)
	return ok && c.Connectable()
}

func isAggregating(b Behavior) bool {
	a, ok := b.(Aggregating)
	return ok && a.Aggregating()
}
