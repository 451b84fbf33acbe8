package actors

import (
	"context"
	"errors"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/twinmesh/twinmesh/actors/actorspb"
)

// kindCacheSize bounds the kind cache: enough for every device a node
// serves at the sizes BENCHMARKS.md measures, about 100 bytes an entry.
const kindCacheSize = 1 << 17

// newKindCache returns the cache of entity kinds the hot paths (telemetry,
// sessions, reported patches) use to address a grain without reading and
// decoding the entity from the store for every message: a profile of a
// QoS 1 ingest run showed that lookup at 4 % of the node's CPU.
func newKindCache() *lru.Cache[string, string] {
	c, err := lru.New[string, string](kindCacheSize)
	if err != nil {
		panic(err) // only for a size <= 0
	}
	return c
}

// callCached sends req to the grain of id, addressed by the cached kind of
// id when there is one. The cache is a hint, not a truth: an entity deleted
// (and perhaps created again with another kind) on another member leaves it
// stale here. A grain of the wrong kind answers NotFound (see
// grain.activate), as does the grain of a deleted entity, so on NotFound the
// kind is read again from the store and, if it changed, the request is sent
// once more, to the right grain. NotFound is the only answer that is sure to
// have applied nothing, which is what makes the second send safe.
func (s *System) callCached(ctx context.Context, id string, req *actorspb.Request) (*actorspb.Response, error) {
	cached, ok := s.kinds.Get(id)
	var first error
	if ok {
		res, err := s.call(ctx, id, cached, req)
		if !errors.Is(err, ErrNotFound) {
			return res, err
		}
		s.kinds.Remove(id)
		first = err
	}
	kind, err := s.kindOf(id)
	if err != nil {
		return nil, err
	}
	if ok && kind == cached {
		return nil, first // the grain of the right kind said so
	}
	res, err := s.call(ctx, id, kind, req)
	if err == nil {
		s.kinds.Add(id, kind)
	}
	return res, err
}
