package amqp

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/persistence"
)

// Grains is the part of the node that holds the grains' outboxes: the
// store they are committed to, the settlement of entries through the
// device's grain, and the placement that says which member sends a device's
// entries (the owner of its grain).
type Grains interface {
	// Outbox returns up to limit entries of device's outbox after seq
	// after, oldest first.
	Outbox(device string, after uint64, limit int) ([]persistence.OutboxEntry, error)
	// ScanOutbox calls fn for every outbox entry of the node's store
	// (device and endpoint valid only during the call).
	ScanOutbox(fn func(device []byte, seq uint64, endpoint []byte, size int) bool) error
	// SettleOutbox removes entries through the device's grain (kind is
	// the device's kind when its entity is gone).
	SettleOutbox(ctx context.Context, device, kind string, seqs []uint64) error
	// Owns reports whether this member owns device's grain.
	Owns(device string) bool
}

// Active implements actors.Router: whether any route is enabled.
func (s *Service) Active() bool { return s.enabled.Load() > 0 }

// RouteEvents implements actors.Router: it matches the events of one grain
// commit against the routes and returns the messages for the grain's
// outbox, which the grain writes in that commit. A message past its
// endpoint's bounds is dropped and counted instead.
func (s *Service) RouteEvents(events []actors.Event) []actors.OutboxMessage {
	if s.enabled.Load() == 0 {
		return nil
	}
	var out []actors.OutboxMessage
	for _, e := range events {
		out = s.routeEvent(e, out)
	}
	return out
}

// routeEvent appends the outbox messages of one event to out.
func (s *Service) routeEvent(e actors.Event, out []actors.OutboxMessage) []actors.OutboxMessage {
	if e.Type == actors.EventTelemetry && !s.telemetryRoutes.Load() {
		return out // not even classified: no allocation
	}
	source, msg, ok := classify(e)
	if !ok {
		return out
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var body, tags map[string]any // decoded once, for the first condition
	for _, r := range s.routes {
		if !r.Enabled || r.Source != source {
			continue
		}
		if r.prog != nil && body == nil {
			body = conditionBody(msg)
		}
		if r.tags && tags == nil {
			tags = map[string]any{}
			if s.tags != nil {
				var err error
				if tags, err = s.tags.get(e.Entity); err != nil {
					s.log.Warn("amqp route: device tags", "device", e.Entity, "err", err)
				}
			}
		}
		ok, err := r.match(source, e, msg, body, tags)
		if err != nil {
			s.m.condErrors.WithLabelValues(r.Name).Inc()
			continue
		}
		if !ok {
			continue
		}
		ts := e.TS
		if ts.IsZero() {
			ts = s.cfg.Now()
		}
		m := msg
		m.Device, m.Source, m.Enqueued = e.Entity, messageSource[source], ts.UTC()
		b, err := json.Marshal(record{Route: r.Name, Kind: e.Kind, outMessage: m})
		if err != nil {
			s.log.Error("amqp route: encode", "route", r.Name, "err", err)
			continue
		}
		w := s.workers[r.Endpoint]
		if w == nil {
			s.m.dropped.WithLabelValues(r.Endpoint).Inc() // the route names no endpoint
			continue
		}
		if !w.admit(len(b) + len(r.Endpoint) + 1) {
			continue
		}
		out = append(out, actors.OutboxMessage{Endpoint: r.Endpoint, Data: b})
	}
	return out
}

// Stored implements actors.Router: the grain of device committed messages
// to its outbox; the endpoints' workers look.
func (s *Service) Stored(device string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, w := range s.workers {
		w.markDirty(device)
	}
}

// rescanner looks at every outbox entry of the store every RescanEvery:
// the devices this member owns (now: a member died or joined, which moves
// grains) go to their endpoints' workers, and each endpoint's backlog is
// recounted. It is how a new owner takes over what a dead member left.
func (s *Service) rescanner(ctx context.Context) {
	t := time.NewTicker(s.cfg.RescanEvery)
	defer t.Stop()
	for {
		s.rescan()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// rescan is one pass of rescanner.
func (s *Service) rescan() {
	g := s.cfg.Grains
	if g == nil {
		return
	}
	type tally struct {
		count, bytes int
		devices      []string
	}
	per := map[string]*tally{}
	owned := map[string]bool{}
	gone := s.deletedEndpoints()
	orphans := map[string][]uint64{} // entries for deleted endpoints, by device
	var last string
	err := g.ScanOutbox(func(device []byte, seq uint64, endpoint []byte, size int) bool {
		if string(device) != last {
			last = string(device)
			owned[last] = g.Owns(last)
		}
		if !owned[last] {
			return true
		}
		if gone[string(endpoint)] {
			orphans[last] = append(orphans[last], seq)
			return true
		}
		t := per[string(endpoint)]
		if t == nil {
			t = &tally{}
			per[string(endpoint)] = t
		}
		t.count++
		t.bytes += size
		if n := len(t.devices); n == 0 || t.devices[n-1] != last {
			t.devices = append(t.devices, last)
		}
		return true
	})
	if err != nil {
		s.log.Warn("amqp outbox scan", "err", err)
		return
	}
	s.mu.RLock()
	for name, w := range s.workers {
		t := per[name]
		if t == nil {
			t = &tally{}
		}
		w.recount(t.count, t.bytes)
		for _, d := range t.devices {
			w.markDirty(d)
		}
	}
	s.mu.RUnlock()
	s.dropOrphans(orphans)
}

// deletedEndpoints returns the endpoints deleted cluster-wide (a tombstone,
// and no definition since) that this member runs no worker for.
func (s *Service) deletedEndpoints() map[string]bool {
	d := s.cfg.Definitions
	if d == nil {
		return nil
	}
	keys, err := d.Deleted()
	if err != nil {
		s.log.Warn("amqp definitions: tombstones", "err", err)
		return nil
	}
	gone := map[string]bool{}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for k := range keys {
		if name, ok := strings.CutPrefix(k, kindEndpoint+"/"); ok && s.workers[name] == nil {
			gone[name] = true
		}
	}
	return gone
}

// dropOrphans removes, through their grains, the outbox entries of
// deleted endpoints (as deleting an endpoint dropped its outbox before
// the outboxes moved into the grains); what fails is tried at the next
// scan.
func (s *Service) dropOrphans(orphans map[string][]uint64) {
	for device, seqs := range orphans {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.SendTimeout)
		err := s.cfg.Grains.SettleOutbox(ctx, device, "", seqs)
		cancel()
		if err != nil {
			s.log.Warn("amqp outbox: drop the entries of deleted endpoints", "device", device, "err", err)
			continue
		}
		s.log.Info("amqp outbox: entries of deleted endpoints dropped", "device", device, "entries", len(seqs))
	}
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
