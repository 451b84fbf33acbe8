package amqp

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Definitions keeps the endpoint, route and ingress definitions
// cluster-wide (the actor system's catalog: a write on one member reaches
// every member, a delete leaves a tombstone so that a member away at the
// time deletes it too). Keys are "endpoint/<name>", "route/<name>",
// "ingress/<name>"; documents are the definitions' JSON.
type Definitions interface {
	PutDefinition(ctx context.Context, key string, doc []byte) error
	DeleteDefinition(ctx context.Context, key string) error
	// Definitions returns every definition this member holds.
	Definitions() (map[string][]byte, error)
	// Deleted returns the keys of the definitions deleted (tombstones)
	// and not defined again since.
	Deleted() (map[string]bool, error)
}

// Kinds of definitions, the first part of their keys.
const (
	kindEndpoint = "endpoint"
	kindRoute    = "route"
	kindIngress  = "ingress"
)

// kindOrder is the order definitions are applied in (a route needs its
// endpoint); removals go the other way.
var kindOrder = map[string]int{kindEndpoint: 0, kindIngress: 1, kindRoute: 2}

func defKey(kind, name string) string { return kind + "/" + name }

// legacyBucket is the amqp.db bucket of a kind (a node without
// Definitions, and what older binaries wrote).
func legacyBucket(kind string) []byte {
	switch kind {
	case kindEndpoint:
		return bucketEndpoints
	case kindRoute:
		return bucketRoutes
	}
	return bucketIngress
}

// saveDef stores a definition: in the catalog with Definitions, in
// amqp.db otherwise. Callers hold s.defsMu.
func (s *Service) saveDef(kind, name string, v any) error {
	if s.cfg.Definitions == nil {
		return s.st.putDef(legacyBucket(kind), name, v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	defer cancel()
	if err := s.cfg.Definitions.PutDefinition(ctx, defKey(kind, name), b); err != nil {
		return fmt.Errorf("store the %s definition: %w", kind, err)
	}
	s.applied[defKey(kind, name)] = string(b)
	return nil
}

// dropDef deletes a definition where saveDef stores it. Callers hold
// s.defsMu.
func (s *Service) dropDef(kind, name string) error {
	if s.cfg.Definitions == nil {
		return s.st.deleteDef(legacyBucket(kind), name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	defer cancel()
	if err := s.cfg.Definitions.DeleteDefinition(ctx, defKey(kind, name)); err != nil {
		return fmt.Errorf("delete the %s definition: %w", kind, err)
	}
	delete(s.applied, defKey(kind, name))
	return nil
}

// syncDefs applies what the catalog holds and this member has not applied
// yet: definitions written on other members. With migrate, definitions
// that amqp.db still holds (an older binary's, per member) are written to
// the catalog first, then removed from amqp.db.
func (s *Service) syncDefs(migrate bool) {
	d := s.cfg.Definitions
	if d == nil {
		return
	}
	docs, err := d.Definitions()
	if err != nil {
		s.log.Warn("amqp definitions", "err", err)
		return
	}
	s.defsMu.Lock()
	defer s.defsMu.Unlock()
	if migrate && !s.migrated {
		s.migrated = s.migrateDefs(docs)
	}
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sortDefKeys(keys, false)
	for _, k := range keys {
		raw := string(docs[k])
		if s.applied[k] == raw {
			continue
		}
		s.applied[k] = raw
		if err := s.applyDef(k, docs[k]); err != nil {
			s.log.Warn("amqp definition not applied", "key", k, "err", Redact(err.Error()))
		}
	}
	var gone []string
	for k := range s.applied {
		if _, ok := docs[k]; !ok {
			gone = append(gone, k)
		}
	}
	sortDefKeys(gone, true)
	for _, k := range gone {
		delete(s.applied, k)
		kind, name, _ := strings.Cut(k, "/")
		s.removeDef(kind, name)
	}
}

// sortDefKeys sorts keys in kindOrder (reversed for removals), then name.
func sortDefKeys(keys []string, reverse bool) {
	sort.Slice(keys, func(i, j int) bool {
		ki, _, _ := strings.Cut(keys[i], "/")
		kj, _, _ := strings.Cut(keys[j], "/")
		if kindOrder[ki] != kindOrder[kj] {
			return (kindOrder[ki] < kindOrder[kj]) != reverse
		}
		return keys[i] < keys[j]
	})
}

// applyDef applies one catalog definition.
func (s *Service) applyDef(key string, raw []byte) error {
	kind, name, _ := strings.Cut(key, "/")
	switch kind {
	case kindEndpoint:
		var e Endpoint
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		if e.Name != name {
			return fmt.Errorf("%w: name %q under key %q", ErrInvalid, e.Name, key)
		}
		return s.applyEndpoint(e)
	case kindRoute:
		var r Route
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		if r.Name != name {
			return fmt.Errorf("%w: name %q under key %q", ErrInvalid, r.Name, key)
		}
		return s.applyRoute(r)
	case kindIngress:
		var g Ingress
		if err := json.Unmarshal(raw, &g); err != nil {
			return err
		}
		if g.Name != name {
			return fmt.Errorf("%w: name %q under key %q", ErrInvalid, g.Name, key)
		}
		s.applyIngress(g)
		return nil
	}
	return fmt.Errorf("%w: unknown kind of definition %q", ErrInvalid, key)
}

// removeDef stops what a definition deleted on another member ran here.
func (s *Service) removeDef(kind, name string) {
	switch kind {
	case kindEndpoint:
		s.removeEndpoint(name)
	case kindRoute:
		s.removeRoute(name)
	case kindIngress:
		s.removeIngress(name)
	}
}

// migrateDefs writes amqp.db's definitions that the catalog lacks to it
// and empties amqp.db's definition buckets; false when something failed
// (tried again at the next sync).
func (s *Service) migrateDefs(docs map[string][]byte) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	defer cancel()
	for _, kind := range []string{kindEndpoint, kindIngress, kindRoute} {
		var names []string
		err := s.st.namedDefs(legacyBucket(kind), func(name string, raw []byte) error {
			k := defKey(kind, name)
			if _, ok := docs[k]; !ok {
				if err := s.cfg.Definitions.PutDefinition(ctx, k, raw); err != nil {
					return err
				}
				docs[k] = raw
			}
			s.applied[k] = string(docs[k])
			names = append(names, name)
			return nil
		})
		if err != nil {
			s.log.Warn("amqp definitions: move to the cluster catalog", "kind", kind, "err", err)
			return false
		}
		if err := s.st.forgetDefs(legacyBucket(kind), names); err != nil {
			s.log.Warn("amqp definitions: empty amqp.db", "kind", kind, "err", err)
			return false
		}
		if len(names) > 0 {
			s.log.Info("amqp definitions moved to the cluster catalog", "kind", kind, "names", names)
		}
	}
	return true
}

// defsPoller applies definitions written on other members every
// DefsEvery until ctx ends.
func (s *Service) defsPoller(ctx context.Context) {
	t := time.NewTicker(s.cfg.DefsEvery)
	defer t.Stop()
	for {
		s.syncDefs(true)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PutEndpoint creates or replaces an endpoint; its outbox is kept and its
// worker restarted with the new definition.
func (s *Service) PutEndpoint(e Endpoint) error {
	if err := e.Check(); err != nil {
		return err
	}
	s.defsMu.Lock()
	defer s.defsMu.Unlock()
	if err := s.saveDef(kindEndpoint, e.Name, e); err != nil {
		return err
	}
	return s.applyEndpoint(e)
}

// applyEndpoint (re)starts the worker of e.
func (s *Service) applyEndpoint(e Endpoint) error {
	if err := e.Check(); err != nil {
		return err
	}
	s.mu.Lock()
	old := s.workers[e.Name]
	s.mu.Unlock()
	if old != nil && old.alive {
		old.stop()
		<-old.done
	}
	n, b, err := s.st.stats(e.Name)
	if err != nil {
		return err
	}
	w := newWorker(s, e, n, b)
	if old != nil {
		st := old.status()
		w.st.Delivered, w.st.Retried, w.st.Dropped, w.st.DeadLettered = st.Delivered, st.Retried, st.Dropped, st.DeadLettered
	}
	s.mu.Lock()
	s.workers[e.Name] = w
	s.startWorker(w)
	started := s.ctx != nil
	s.mu.Unlock()
	s.log.Info("amqp endpoint defined", "endpoint", e.Name, "url", RedactURL(e.URL), "address", e.Address)
	if started {
		// What the grain outboxes hold for it. Not before Start: which
		// member owns a grain is known once the actor system runs.
		s.rescan()
	}
	return nil
}

// DeleteEndpoint stops an endpoint and drops its legacy outbox; with
// Definitions, the scans of every member then remove the entries for it
// from the outboxes of the devices they own (dropOrphans).
func (s *Service) DeleteEndpoint(name string) error {
	s.defsMu.Lock()
	defer s.defsMu.Unlock()
	s.mu.RLock()
	w := s.workers[name]
	s.mu.RUnlock()
	if w == nil {
		return ErrNotFound
	}
	if err := s.dropDef(kindEndpoint, name); err != nil {
		return err
	}
	s.removeEndpoint(name)
	return nil
}

// removeEndpoint stops an endpoint's worker and drops its legacy outbox.
func (s *Service) removeEndpoint(name string) {
	s.mu.Lock()
	w := s.workers[name]
	delete(s.workers, name)
	s.mu.Unlock()
	if w != nil && w.alive {
		w.stop()
		<-w.done
	}
	if err := s.st.dropLegacyOutbox(name); err != nil {
		s.log.Warn("amqp endpoint: drop the legacy outbox", "endpoint", name, "err", err)
	}
}

// PutRoute creates or replaces a route; its endpoint must exist.
func (s *Service) PutRoute(r Route) error {
	if err := r.Check(); err != nil {
		return err
	}
	s.defsMu.Lock()
	defer s.defsMu.Unlock()
	s.mu.RLock()
	ok := s.workers[r.Endpoint] != nil
	s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: endpoint %q does not exist", ErrConflict, r.Endpoint)
	}
	if err := s.saveDef(kindRoute, r.Name, r); err != nil {
		return err
	}
	return s.applyRoute(r)
}

// applyRoute compiles r and puts it in the route table.
func (s *Service) applyRoute(r Route) error {
	p, err := compileCondition(r.Condition)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes[r.Name] = newCompiledRoute(r, p)
	s.countEnabled()
	return nil
}

// DeleteRoute removes a route.
func (s *Service) DeleteRoute(name string) error {
	s.defsMu.Lock()
	defer s.defsMu.Unlock()
	s.mu.RLock()
	ok := s.routes[name] != nil
	s.mu.RUnlock()
	if !ok {
		return ErrNotFound
	}
	if err := s.dropDef(kindRoute, name); err != nil {
		return err
	}
	s.removeRoute(name)
	return nil
}

func (s *Service) removeRoute(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.routes, name)
	s.countEnabled()
}

// PutIngress creates or replaces an ingress and (re)starts its consumer.
// Every member consumes the ingress (competing consumers of the queue).
func (s *Service) PutIngress(g Ingress) error {
	if err := g.Check(); err != nil {
		return err
	}
	s.defsMu.Lock()
	defer s.defsMu.Unlock()
	if err := s.saveDef(kindIngress, g.Name, g); err != nil {
		return err
	}
	s.applyIngress(g)
	return nil
}

// applyIngress (re)starts the consumer of g.
func (s *Service) applyIngress(g Ingress) {
	s.mu.Lock()
	old := s.ingresses[g.Name]
	s.mu.Unlock()
	if old != nil && old.alive {
		old.stop()
		<-old.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := newIngress(s, g)
	s.ingresses[g.Name] = n
	s.startIngress(n)
	s.log.Info("amqp ingress defined", "ingress", g.Name, "url", RedactURL(g.URL), "address", g.Address, "under", g.Under)
}

// DeleteIngress stops and removes an ingress.
func (s *Service) DeleteIngress(name string) error {
	s.defsMu.Lock()
	defer s.defsMu.Unlock()
	s.mu.RLock()
	ok := s.ingresses[name] != nil
	s.mu.RUnlock()
	if !ok {
		return ErrNotFound
	}
	if err := s.dropDef(kindIngress, name); err != nil {
		return err
	}
	s.removeIngress(name)
	return nil
}

func (s *Service) removeIngress(name string) {
	s.mu.Lock()
	g := s.ingresses[name]
	delete(s.ingresses, name)
	s.mu.Unlock()
	if g != nil && g.alive {
		g.stop()
		<-g.done
	}
}
