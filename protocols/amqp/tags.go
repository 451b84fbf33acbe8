package amqp

import (
	"sync"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/twinmesh/twinmesh/actors"
)

// usesTags reports whether a compiled condition reads the device's tags,
// so that only such routes pay for looking them up.
func usesTags(p *vm.Program) bool {
	if p == nil {
		return false
	}
	v := &identFinder{name: "tags"}
	n := p.Node()
	ast.Walk(&n, v)
	return v.found
}

type identFinder struct {
	name  string
	found bool
}

func (f *identFinder) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok && id.Value == f.name {
		f.found = true
	}
}

// tagCache holds devices' tags for route conditions. An entry is loaded
// from the node's store on first use and dropped when a twin event says
// the device's tags changed (or the device was deleted), so the next use
// loads the committed tags again.
//
// How stale it can be: a grain publishes its events in commit order, so a
// telemetry event that follows a tags change of the same device (on this
// member, the only one routing it) finds the entry already dropped. The
// one gap is a change made while the grain lived on another member whose
// event this member never heard (events between members are best effort):
// entries are also dropped after ttl, which bounds that staleness.
type tagCache struct {
	load func(id string) (map[string]any, error)
	ttl  time.Duration
	max  int
	now  func() time.Time

	mu sync.Mutex
	m  map[string]cachedTags
}

type cachedTags struct {
	tags map[string]any
	at   time.Time
}

func newTagCache(load func(string) (map[string]any, error), ttl time.Duration, max int, now func() time.Time) *tagCache {
	return &tagCache{load: load, ttl: ttl, max: max, now: now, m: map[string]cachedTags{}}
}

// get returns the device's tags (read-only). A failed load yields no tags
// (conditions on them do not match) and is not cached.
func (c *tagCache) get(id string) (map[string]any, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl {
		return e.tags, nil
	}
	tags, err := c.load(id)
	if err != nil {
		return map[string]any{}, err
	}
	if tags == nil {
		tags = map[string]any{}
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		for k := range c.m { // make room: drop an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[id] = cachedTags{tags: tags, at: now}
	c.mu.Unlock()
	return tags, nil
}

// observe drops the entry of a device whose tags changed or that was
// deleted, on this member or another.
func (c *tagCache) observe(e actors.Event) {
	switch {
	case e.Type == actors.EventTwin && e.Section == "tags",
		e.Type == actors.EventTopology:
	default:
		return
	}
	c.mu.Lock()
	delete(c.m, e.Entity)
	c.mu.Unlock()
}
