package plugintest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// Store is an in-memory [entity.Reader] that applies a Result's ops as
// the node's bbolt store does. It is safe for concurrent use.
type Store struct {
	mu        sync.RWMutex
	entities  map[string]record.Entity
	twins     map[string][]byte
	docs      map[string]map[string][]byte
	telemetry map[string][]record.TelemetryRecord // oldest first
	inbox     map[string][]record.InboxMessage
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{entities: map[string]record.Entity{}, twins: map[string][]byte{},
		docs: map[string]map[string][]byte{}, telemetry: map[string][]record.TelemetryRecord{},
		inbox: map[string][]record.InboxMessage{}}
}

func notFound(what, key string) error { return fmt.Errorf("%s %s: %w", what, key, entity.ErrNotFound) }

// Entity implements entity.Reader.
func (s *Store) Entity(id string) (record.Entity, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entities[id]
	if !ok {
		return record.Entity{}, notFound("entity", id)
	}
	return e, nil
}

// TwinDoc implements entity.Reader.
func (s *Store) TwinDoc(id string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.twins[id]
	if !ok {
		return nil, notFound("twin", id)
	}
	return slices.Clone(d), nil
}

// Doc implements entity.Reader.
func (s *Store) Doc(bucket, key string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.docs[bucket][key]
	if !ok {
		return nil, notFound(bucket, key)
	}
	return slices.Clone(d), nil
}

// Docs implements entity.Reader.
func (s *Store) Docs(bucket, prefix string) (map[string][]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string][]byte{}
	for k, v := range s.docs[bucket] {
		if strings.HasPrefix(k, prefix) {
			out[k] = slices.Clone(v)
		}
	}
	return out, nil
}

// HasChildren implements entity.Reader.
func (s *Store) HasChildren(id string) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, e := range s.entities {
		if e.Parent == id {
			return true, nil
		}
	}
	return false, nil
}

// Telemetry implements entity.Reader: records with TS >= from, newest
// first, at most limit.
func (s *Store) Telemetry(_ context.Context, id string, from time.Time, limit int) ([]record.TelemetryRecord, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	recs := s.telemetry[id]
	var out []record.TelemetryRecord
	for i := len(recs) - 1; i >= 0 && len(out) < limit; i-- {
		if recs[i].TS.Before(from) {
			break
		}
		out = append(out, recs[i])
	}
	return out, nil
}

// Inbox implements entity.Reader.
func (s *Store) Inbox(id string) ([]record.InboxMessage, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.inbox[id]), nil
}

// Apply commits ops in one step, as the grain's group commit does.
func (s *Store) Apply(ops []entity.Op) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range ops {
		switch op.Kind {
		case entity.OpPutTwin:
			s.twins[op.Key] = slices.Clone(op.Doc)
		case entity.OpPutEntity:
			s.entities[op.Key] = op.Entity
		case entity.OpDeleteEntity:
			delete(s.entities, op.Key)
			delete(s.twins, op.Key)
			delete(s.telemetry, op.Key)
			delete(s.inbox, op.Key)
			maps.DeleteFunc(s.docs[entity.BucketContrib], func(k string, _ []byte) bool {
				return strings.HasPrefix(k, op.Key+"/")
			})
		case entity.OpAppendTelemetry:
			s.telemetry[op.Key] = append(s.telemetry[op.Key], op.Telemetry)
		case entity.OpPutDoc:
			if s.docs[op.Bucket] == nil {
				s.docs[op.Bucket] = map[string][]byte{}
			}
			s.docs[op.Bucket][op.Key] = slices.Clone(op.Doc)
		case entity.OpDeleteDoc:
			delete(s.docs[op.Bucket], op.Key)
		case entity.OpPutInbox:
			msgs := slices.DeleteFunc(s.inbox[op.Key], func(m record.InboxMessage) bool { return m.ID == op.Inbox.ID })
			s.inbox[op.Key] = append(msgs, op.Inbox)
		case entity.OpDeleteInbox:
			s.inbox[op.Key] = slices.DeleteFunc(s.inbox[op.Key], func(m record.InboxMessage) bool { return m.ID == op.Msg })
		}
	}
}

// exists reports whether entity id exists.
func (s *Store) exists(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.entities[id]
	return ok
}

// via returns the entities connected via id, sorted.
func (s *Store) via(id string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for k, e := range s.entities {
		if e.ConnectedVia == id {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

var _ entity.Reader = (*Store)(nil)
