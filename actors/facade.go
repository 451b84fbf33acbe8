package actors

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/persistence"
)

// idPattern is what an entity ID may look like: it appears in MQTT topics and
// URL paths, so no slashes, wildcards or spaces.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)

// ValidID reports whether id can name an entity.
func ValidID(id string) bool { return idPattern.MatchString(id) }

func (s *System) kindOf(id string) (string, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("%w: entity %q", ErrNotFound, id)
	}
	e, err := s.store.GetEntity(id)
	if errors.Is(err, persistence.ErrNotFound) {
		return "", fmt.Errorf("%w: entity %s", ErrNotFound, id)
	}
	if err != nil {
		return "", fmt.Errorf("look up %s: %w", id, err)
	}
	return e.Kind, nil
}

// PutEntity creates or replaces a topology entity. The kind of an existing
// entity cannot change; the parent must exist and must not be the entity or
// one of its descendants; connectedVia must name a gateway.
func (s *System) PutEntity(ctx context.Context, id string, spec EntitySpec) (persistence.Entity, bool, error) {
	if !ValidID(id) {
		return persistence.Entity{}, false, fmt.Errorf("%w: invalid entity id %q (letters, digits and . _ : @ -, at most 128)", ErrBadRequest, id)
	}
	b, ok := s.cfg.Registry.Lookup(spec.Kind)
	if !ok {
		return persistence.Entity{}, false, fmt.Errorf("%w: unknown kind %q (registered: %v)", ErrBadRequest, spec.Kind, s.cfg.Registry.Kinds())
	}
	traits := b.Info().Traits
	old, err := s.store.GetEntity(id)
	created := errors.Is(err, persistence.ErrNotFound)
	if err != nil && !created {
		return persistence.Entity{}, false, fmt.Errorf("look up %s: %w", id, err)
	}
	if !created && old.Kind != spec.Kind {
		return persistence.Entity{}, false, fmt.Errorf("%w: entity %s is a %s; delete it to change its kind", ErrConflict, id, old.Kind)
	}
	if spec.Parent != "" {
		if err := s.checkParent(id, spec.Parent); err != nil {
			return persistence.Entity{}, false, err
		}
	}
	if spec.ConnectedVia != "" {
		gw, err := s.store.GetEntity(spec.ConnectedVia)
		if err != nil {
			return persistence.Entity{}, false, fmt.Errorf("%w: connectedVia %s does not exist", ErrBadRequest, spec.ConnectedVia)
		}
		if !s.cfg.Registry.Traits(gw.Kind).Has(plugin.Device | plugin.Rollup) {
			return persistence.Entity{}, false, fmt.Errorf("%w: connectedVia %s is a %s, not a gateway", ErrBadRequest, gw.ID, gw.Kind)
		}
		if !traits.Has(plugin.Device) {
			return persistence.Entity{}, false, fmt.Errorf("%w: only devices connect via a gateway", ErrBadRequest)
		}
	}
	req := &actorspb.PutEntity{Kind: spec.Kind, Parent: spec.Parent, ConnectedVia: spec.ConnectedVia}
	if spec.Tags != nil {
		req.Tags, _ = json.Marshal(spec.Tags)
	}
	out, err := s.call(ctx, id, spec.Kind, &actorspb.Request{Body: &actorspb.Request_PutEntity{PutEntity: req}})
	if err != nil {
		return persistence.Entity{}, false, err
	}
	var ent persistence.Entity
	if err := json.Unmarshal(out.Body, &ent); err != nil {
		return persistence.Entity{}, false, fmt.Errorf("decode entity: %w", err)
	}
	return ent, created, nil
}

func (s *System) checkParent(id, parent string) error {
	seen := map[string]bool{id: true}
	for p := parent; p != ""; {
		if seen[p] {
			return fmt.Errorf("%w: parent %s would make a cycle", ErrConflict, parent)
		}
		seen[p] = true
		e, err := s.store.GetEntity(p)
		if err != nil {
			if p == parent {
				return fmt.Errorf("%w: parent %s does not exist", ErrBadRequest, parent)
			}
			return fmt.Errorf("look up ancestor %s: %w", p, err)
		}
		p = e.Parent
	}
	return nil
}

// GetEntity returns a topology entity.
func (s *System) GetEntity(_ context.Context, id string) (persistence.Entity, error) {
	e, err := s.store.GetEntity(id)
	if errors.Is(err, persistence.ErrNotFound) {
		return e, fmt.Errorf("%w: entity %s", ErrNotFound, id)
	}
	return e, err
}

// Children returns the direct children of an entity.
func (s *System) Children(ctx context.Context, id string) ([]persistence.Entity, error) {
	if _, err := s.GetEntity(ctx, id); err != nil {
		return nil, err
	}
	return s.store.Children(id)
}

// Tree returns an entity and its whole subtree, root first.
func (s *System) Tree(ctx context.Context, id string) ([]persistence.Entity, error) {
	if _, err := s.GetEntity(ctx, id); err != nil {
		return nil, err
	}
	return s.store.Subtree(id)
}

// Ancestors returns the parent chain of an entity, nearest first.
func (s *System) Ancestors(_ context.Context, id string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	e, err := s.store.GetEntity(id)
	if err != nil {
		if errors.Is(err, persistence.ErrNotFound) {
			return nil, fmt.Errorf("%w: entity %s", ErrNotFound, id)
		}
		return nil, err
	}
	for p := e.Parent; p != "" && !seen[p]; {
		seen[p] = true
		out = append(out, p)
		pe, err := s.store.GetEntity(p)
		if err != nil {
			break
		}
		p = pe.Parent
	}
	return out, nil
}

// DeleteEntity deletes an entity with its twin, identity, inbox and
// telemetry. An entity with children is refused with ErrConflict unless
// recursive is true, in which case the whole subtree goes, deepest first.
func (s *System) DeleteEntity(ctx context.Context, id string, recursive bool) (int, error) {
	if _, err := s.GetEntity(ctx, id); err != nil {
		return 0, err
	}
	if !recursive {
		kind, err := s.kindOf(id)
		if err != nil {
			return 0, err
		}
		_, err = s.call(ctx, id, kind, deleteReq)
		s.kinds.Remove(id)
		if err != nil {
			return 0, err
		}
		return 1, nil
	}
	sub, err := s.store.Subtree(id)
	if err != nil {
		return 0, fmt.Errorf("subtree of %s: %w", id, err)
	}
	n := 0
	for i := len(sub) - 1; i >= 0; i-- {
		_, err := s.call(ctx, sub[i].ID, sub[i].Kind, deleteReq)
		s.kinds.Remove(sub[i].ID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return n, fmt.Errorf("delete %s: %w", sub[i].ID, err)
		}
		n++
	}
	return n, nil
}

// GetTwin returns the twin document of an entity (CONTRACT 4) and its version.
func (s *System) GetTwin(ctx context.Context, id string) (json.RawMessage, int64, error) {
	kind, err := s.kindOf(id)
	if err != nil {
		return nil, 0, err
	}
	res, err := s.call(ctx, id, kind, getReq)
	if err != nil {
		return nil, 0, err
	}
	return res.Twin, res.Version, nil
}

// Requests without arguments, shared (they are never modified).
var (
	getReq    = &actorspb.Request{Body: &actorspb.Request_Get{Get: &actorspb.Get{}}}
	touchReq  = &actorspb.Request{Body: &actorspb.Request_Touch{Touch: &actorspb.Touch{}}}
	deleteReq = &actorspb.Request{Body: &actorspb.Request_Delete{Delete: &actorspb.Delete{}}}
)

// PatchTwin applies merge patches of desired and/or tags. ifVersion, when
// not nil, must equal the current version (ErrPrecondition otherwise).
func (s *System) PatchTwin(ctx context.Context, id string, patch PatchBody, ifVersion *int64) (json.RawMessage, int64, error) {
	kind, err := s.kindOf(id)
	if err != nil {
		return nil, 0, err
	}
	if len(patch.Desired) == 0 && len(patch.Tags) == 0 {
		return nil, 0, fmt.Errorf("%w: a twin patch needs \"desired\" and/or \"tags\"", ErrBadRequest)
	}
	res, err := s.call(ctx, id, kind, &actorspb.Request{Body: &actorspb.Request_Patch{Patch: &actorspb.PatchTwin{
		Desired: patch.Desired, Tags: patch.Tags, IfVersion: ifVersion}}})
	if err != nil {
		return nil, 0, err
	}
	return res.Twin, res.Version, nil
}

// PatchReported applies a device's reported-properties merge patch and
// returns the new reported $version.
func (s *System) PatchReported(ctx context.Context, id string, patch []byte) (int64, error) {
	if !ValidID(id) {
		return 0, fmt.Errorf("%w: entity %q", ErrNotFound, id)
	}
	res, err := s.callCached(ctx, id, &actorspb.Request{Body: &actorspb.Request_Reported{Reported: &actorspb.PatchReported{Patch: patch}}})
	if err != nil {
		return 0, err
	}
	return res.SectionVersion, nil
}

// Telemetry hands one telemetry message to the device's grain; it returns
// after the message is durably stored.
func (s *System) Telemetry(ctx context.Context, id string, in TelemetryIn) error {
	if !ValidID(id) {
		return fmt.Errorf("%w: entity %q", ErrNotFound, id)
	}
	t := &actorspb.Telemetry{Points: entity.PointsProto(in.Points), Raw: in.Raw, ContentType: in.ContentType,
		Properties: in.Properties, MessageId: in.MessageID, ContentEncoding: in.ContentEncoding}
	if len(in.Raw) == 0 && s.keepPayloads.Load() {
		t.Payload = in.Payload // a reference: the grain only reads it
	}
	if !in.TS.IsZero() {
		t.TsUnixNano = in.TS.UnixNano()
	}
	_, err := s.callCached(ctx, id, &actorspb.Request{Body: &actorspb.Request_Telemetry{Telemetry: t}})
	return err
}

// KeepTelemetryPayloads says whether telemetry messages carry the device's
// original bytes to the grain and its telemetry events (Event.Message), for
// AMQP routes that send them. Off, a JSON payload travels as its points
// only: nothing more crosses to a remote grain.
func (s *System) KeepTelemetryPayloads(on bool) { s.keepPayloads.Store(on) }

// SetConnection records that a device connected to or disconnected from
// this node.
func (s *System) SetConnection(ctx context.Context, id string, connected bool) error {
	return s.SetSession(ctx, id, Session{Connected: connected})
}

// Session is a change of a device's session state, for SetSession.
type Session struct {
	// Connected is the new state.
	Connected bool
	// Protocol names the adapter ("mqtt", "coap", "coaps"); the twin's
	// connection section shows it. A disconnection that names a protocol
	// applies only while the twin's connection names the same one (or
	// none): one protocol's session ending does not hide another's.
	Protocol string
	// OnlyHere makes a disconnection apply only while the twin says the
	// device is connected to this node: a device whose requests now reach
	// another member keeps the state that member gave it.
	OnlyHere bool
}

// SetSession records that a device connected to or disconnected from this
// node, through a protocol.
func (s *System) SetSession(ctx context.Context, id string, st Session) error {
	if !ValidID(id) {
		return fmt.Errorf("%w: entity %q", ErrNotFound, id)
	}
	c := &actorspb.Connection{Connected: st.Connected, Node: s.cfg.NodeName, SinceUnixNano: s.cfg.Now().UnixNano(),
		Protocol: st.Protocol}
	if st.OnlyHere && !st.Connected {
		c.OnlyIfNode = s.cfg.NodeName
	}
	_, err := s.callCached(ctx, id, &actorspb.Request{Body: &actorspb.Request_Connection{Connection: c}})
	return err
}

// QueryTwins lists twins matching f in ID order, at most limit (default 100,
// max 1000), starting after cursor; next is the cursor of the following page.
func (s *System) QueryTwins(ctx context.Context, f persistence.EntityFilter, cursor string, limit int) ([]json.RawMessage, string, error) {
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		limit = 1000
	}
	ents, next, err := s.store.ListEntities(f, cursor, limit)
	if err != nil {
		return nil, "", fmt.Errorf("list entities: %w", err)
	}
	out := make([]json.RawMessage, len(ents))
	errs := make([]error, len(ents))
	// Twins are read through their grains (bounded fan-out) so a listing is
	// as fresh as a single GET, wherever the grain lives.
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, e := range ents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var res *actorspb.Response
			if res, errs[i] = s.call(ctx, e.ID, e.Kind, getReq); errs[i] == nil {
				out[i] = res.Twin
			}
		}()
	}
	wg.Wait()
	items := out[:0]
	for i := range out {
		if errs[i] != nil {
			if errors.Is(errs[i], ErrNotFound) {
				continue // deleted while listing
			}
			return nil, "", errs[i]
		}
		items = append(items, out[i])
	}
	return items, next, nil
}

// TelemetryHistory reads a device's warm telemetry, newest first, from its
// grain's owner.
func (s *System) TelemetryHistory(ctx context.Context, id string, q persistence.TelemetryQuery) ([]persistence.TelemetryRecord, error) {
	kind, err := s.kindOf(id)
	if err != nil {
		return nil, err
	}
	tq := &actorspb.TelemetryQuery{Name: q.Name, Limit: int32(q.Limit)}
	if !q.From.IsZero() {
		tq.FromUnixNano = q.From.UnixNano()
	}
	if !q.To.IsZero() {
		tq.ToUnixNano = q.To.UnixNano()
	}
	out, err := s.call(ctx, id, kind, &actorspb.Request{Body: &actorspb.Request_TelemetryQuery{TelemetryQuery: tq}})
	if err != nil {
		return nil, err
	}
	var recs []persistence.TelemetryRecord
	if err := json.Unmarshal(out.Body, &recs); err != nil {
		return nil, fmt.Errorf("decode telemetry: %w", err)
	}
	return recs, nil
}

// Device identities -----------------------------------------------------

// RegisterDevice creates a device identity with two fresh keys (keeping the
// existing identity if there is one) and creates the device entity of the
// given kind when it is absent.
func (s *System) RegisterDevice(ctx context.Context, id, kind string, spec *EntitySpec) (persistence.Identity, bool, error) {
	if kind == "" {
		kind = "device"
	}
	if !s.cfg.Registry.Traits(kind).Has(plugin.Device) {
		return persistence.Identity{}, false, fmt.Errorf("%w: kind %q is not a device kind", ErrBadRequest, kind)
	}
	ent, err := s.store.GetEntity(id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		sp := EntitySpec{Kind: kind}
		if spec != nil {
			sp = *spec
			sp.Kind = kind
		}
		if _, _, err := s.PutEntity(ctx, id, sp); err != nil {
			return persistence.Identity{}, false, err
		}
	case err != nil:
		return persistence.Identity{}, false, err
	default:
		if !s.cfg.Registry.Traits(ent.Kind).Has(plugin.Device) {
			return persistence.Identity{}, false, fmt.Errorf("%w: entity %s is a %s, which cannot hold a device identity", ErrConflict, id, ent.Kind)
		}
	}
	if idn, err := s.store.GetIdentity(id); err == nil {
		return idn, false, nil
	}
	idn := persistence.Identity{DeviceID: id, PrimaryKey: newKey(), SecondaryKey: newKey(), Status: "enabled", CreatedAt: s.cfg.Now().UTC()}
	if err := s.commitCatalog(ctx, persistence.PutIdentity(idn)); err != nil {
		return persistence.Identity{}, false, fmt.Errorf("store identity %s: %w", id, err)
	}
	s.publishIdentity(idn)
	return idn, true, nil
}

func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// Identity returns a device's identity.
func (s *System) Identity(_ context.Context, id string) (persistence.Identity, error) {
	idn, err := s.store.GetIdentity(id)
	if errors.Is(err, persistence.ErrNotFound) {
		return idn, fmt.Errorf("%w: device %s", ErrNotFound, id)
	}
	return idn, err
}

// SetDeviceStatus enables or disables a device. Disabling publishes an
// identity event on which the protocol adapters drop the live session.
func (s *System) SetDeviceStatus(ctx context.Context, id, status string) (persistence.Identity, error) {
	if status != "enabled" && status != "disabled" {
		return persistence.Identity{}, fmt.Errorf("%w: status must be \"enabled\" or \"disabled\"", ErrBadRequest)
	}
	idn, err := s.Identity(ctx, id)
	if err != nil {
		return idn, err
	}
	if idn.Status == status {
		return idn, nil
	}
	idn.Status = status
	if err := s.commitCatalog(ctx, persistence.PutIdentity(idn)); err != nil {
		return idn, fmt.Errorf("store identity %s: %w", id, err)
	}
	s.publishIdentity(idn)
	return idn, nil
}

func (s *System) publishIdentity(idn persistence.Identity) {
	data, _ := json.Marshal(map[string]string{"status": idn.Status})
	s.publish(Event{Type: EventIdentity, Entity: idn.DeviceID, Data: data, TS: s.cfg.Now().UTC()})
}

// Kinds returns the kinds this node hosts.
func (s *System) Kinds() []string { return s.cfg.Registry.Kinds() }

// ConnectedVia lists the devices connected via a gateway.
func (s *System) ConnectedVia(_ context.Context, gw string) ([]string, error) {
	ids, err := s.store.ConnectedVia(gw)
	sort.Strings(ids)
	return ids, err
}

// Touch activates the grains of every aggregating entity, deepest first, so
// that rollups a crash left stale are repaired at start rather than on first
// use. It returns the number of grains touched.
func (s *System) Touch(ctx context.Context) (int, error) {
	var aggs []persistence.Entity
	for _, k := range s.cfg.Registry.Kinds() {
		if !s.cfg.Registry.Traits(k).Has(plugin.Rollup) {
			continue
		}
		cursor := ""
		for {
			page, next, err := s.store.ListEntities(persistence.EntityFilter{Kind: k}, cursor, 1000)
			if err != nil {
				return 0, err
			}
			aggs = append(aggs, page...)
			if next == "" {
				break
			}
			cursor = next
		}
	}
	depth := map[string]int{}
	var depthOf func(id string, n int) int
	depthOf = func(id string, n int) int {
		if d, ok := depth[id]; ok {
			return d
		}
		e, err := s.store.GetEntity(id)
		if err != nil || e.Parent == "" || n > 64 {
			depth[id] = 0
			return 0
		}
		d := depthOf(e.Parent, n+1) + 1
		depth[id] = d
		return d
	}
	for _, e := range aggs {
		depthOf(e.ID, 0)
	}
	sort.SliceStable(aggs, func(i, j int) bool { return depth[aggs[i].ID] > depth[aggs[j].ID] })
	for _, e := range aggs {
		if _, err := s.call(ctx, e.ID, e.Kind, touchReq); err != nil && !errors.Is(err, ErrNotFound) {
			return 0, fmt.Errorf("touch %s: %w", e.ID, err)
		}
	}
	return len(aggs), nil
}

// ListEntities lists topology entities matching f in ID order.
func (s *System) ListEntities(_ context.Context, f persistence.EntityFilter, cursor string, limit int) ([]persistence.Entity, string, error) {
	return s.store.ListEntities(f, cursor, limit)
}

// Call runs the operation name of an entity's kind with JSON arguments
// (CONTRACT section 7) and returns its JSON result. A kind without that
// operation is errcode.UnknownOp.
func (s *System) Call(ctx context.Context, id, name string, args json.RawMessage) (json.RawMessage, error) {
	kind, err := s.kindOf(id)
	if err != nil {
		return nil, err
	}
	res, err := s.call(ctx, id, kind, &actorspb.Request{Body: &actorspb.Request_Call{Call: &actorspb.Call{Name: name, Args: args}}})
	if err != nil {
		return nil, err
	}
	return res.Body, nil
}
