package actors

// Fleet operations (CONTRACT section 9): scans of twins and identities for
// queries and listings, deleting a device, replacing a twin's desired
// properties and tags.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/persistence"
)

// fleetStore is what fleet operations read beyond Store; *persistence.DB
// implements it. A Store without it answers ErrUnavailable to fleet reads.
type fleetStore interface {
	ScanTwins(f persistence.EntityFilter, after string, limit int) ([]persistence.TwinRow, string, error)
	ListIdentities(f persistence.IdentityFilter, after string, limit int) ([]persistence.Identity, string, error)
}

func (s *System) fleet() (fleetStore, error) {
	fs, ok := s.store.(fleetStore)
	if !ok {
		return nil, fmt.Errorf("%w: this node's store cannot scan twins", ErrUnavailable)
	}
	return fs, nil
}

// ScanTwins returns one page of up to limit entities matching f after the ID
// `after`, in ID order, with their twin documents and identities, and the
// cursor of the next page ("" at the end). A twin that this node's store
// does not hold (its replicas are on other members) is read through its
// grain; an entity deleted meanwhile is left out.
func (s *System) ScanTwins(ctx context.Context, f persistence.EntityFilter, after string, limit int) ([]persistence.TwinRow, string, error) {
	fs, err := s.fleet()
	if err != nil {
		return nil, "", err
	}
	rows, next, err := fs.ScanTwins(f, after, limit)
	if err != nil {
		return nil, "", fmt.Errorf("scan twins: %w", err)
	}
	out := rows[:0]
	for _, r := range rows {
		if r.Twin == nil {
			res, err := s.call(ctx, r.Entity.ID, r.Entity.Kind, getReq)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, "", fmt.Errorf("read twin %s: %w", r.Entity.ID, err)
			}
			r.Twin = res.Twin
		}
		out = append(out, r)
	}
	return out, next, nil
}

// ListIdentities lists device identities matching f in ID order, at most
// limit, after the ID `after`; next is the cursor of the following page.
func (s *System) ListIdentities(_ context.Context, f persistence.IdentityFilter, after string, limit int) ([]persistence.Identity, string, error) {
	fs, err := s.fleet()
	if err != nil {
		return nil, "", err
	}
	return fs.ListIdentities(f, after, limit)
}

// DeleteDevice deletes a device: its entity with its identity, twin, inbox
// and telemetry. An ID without an identity is ErrNotFound, so that this
// never deletes a room or a building.
func (s *System) DeleteDevice(ctx context.Context, id string) error {
	if _, err := s.Identity(ctx, id); err != nil {
		return err
	}
	kind, err := s.kindOf(id)
	if err != nil {
		return err
	}
	if !s.cfg.Registry.Traits(kind).Has(plugin.Device) {
		return fmt.Errorf("%w: %s is a %s, not a device", ErrConflict, id, kind)
	}
	_, err = s.DeleteEntity(ctx, id, false)
	return err
}

// ReplaceTwin replaces a twin's desired properties and/or tags (a nil map
// leaves that section as it is) with the given documents. ifVersion, when
// not nil, must equal the current version (ErrPrecondition otherwise);
// without it the replacement applies to the version it was computed from,
// and is computed again if the twin changed meanwhile.
func (s *System) ReplaceTwin(ctx context.Context, id string, desired, tags map[string]any, ifVersion *int64) (json.RawMessage, int64, error) {
	if desired == nil && tags == nil {
		return nil, 0, fmt.Errorf("%w: a twin replacement needs \"desired\" and/or \"tags\"", ErrBadRequest)
	}
	for attempt := 0; ; attempt++ {
		doc, v, err := s.GetTwin(ctx, id)
		if err != nil {
			return nil, 0, err
		}
		if ifVersion != nil && *ifVersion != v {
			return nil, 0, fmt.Errorf("%w: twin %s is at version %d, not %d", ErrPrecondition, id, v, *ifVersion)
		}
		var cur struct {
			Desired map[string]any `json:"desired"`
			Tags    map[string]any `json:"tags"`
		}
		dec := json.NewDecoder(bytes.NewReader(doc))
		dec.UseNumber()
		if err := dec.Decode(&cur); err != nil {
			return nil, 0, fmt.Errorf("decode twin %s: %w", id, err)
		}
		var body PatchBody
		if desired != nil {
			if body.Desired, err = json.Marshal(Replacement(cur.Desired, desired)); err != nil {
				return nil, 0, fmt.Errorf("%w: desired: %v", ErrBadRequest, err)
			}
		}
		if tags != nil {
			if body.Tags, err = json.Marshal(Replacement(cur.Tags, tags)); err != nil {
				return nil, 0, fmt.Errorf("%w: tags: %v", ErrBadRequest, err)
			}
		}
		base := v
		out, nv, err := s.PatchTwin(ctx, id, body, &base)
		if errors.Is(err, ErrPrecondition) && ifVersion == nil && attempt < 4 {
			continue // changed between the read and the patch: compute again
		}
		return out, nv, err
	}
}

// Replacement returns the JSON merge patch (RFC 7396) that turns the object
// old into want: members of old missing from want are deleted (null),
// objects present in both are patched member by member, anything else that
// differs is set. Members of old whose names start with "$" (the section's
// "$version") are metadata and kept. A null in want cannot be expressed by
// a merge patch and deletes the member.
func Replacement(old, want map[string]any) map[string]any {
	patch := map[string]any{}
	for k := range old {
		if _, ok := want[k]; !ok && !strings.HasPrefix(k, "$") {
			patch[k] = nil
		}
	}
	for k, w := range want {
		o, had := old[k]
		wo, wIsObj := w.(map[string]any)
		oo, oIsObj := o.(map[string]any)
		switch {
		case !had && w == nil:
			// Deleting what is not there: nothing to say.
		case had && wIsObj && oIsObj:
			if sub := Replacement(oo, wo); len(sub) > 0 {
				patch[k] = sub
			}
		case !had && wIsObj:
			// A new object: setting it whole, minus nulls, which a merge
			// patch would read as deletions anyway.
			patch[k] = Replacement(nil, wo)
		case had && reflect.DeepEqual(o, w):
		default:
			patch[k] = w
		}
	}
	return patch
}

// IdentitySpec is a device identity to import: its keys (base64, generated
// when empty) and status ("enabled" when empty).
type IdentitySpec struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
	Status       string `json:"status,omitempty"`
}

// check validates the spec and fills what it leaves out.
func (sp *IdentitySpec) check() error {
	for _, k := range []*string{&sp.PrimaryKey, &sp.SecondaryKey} {
		if *k == "" {
			*k = newKey()
			continue
		}
		b, err := base64.StdEncoding.DecodeString(*k)
		if err != nil || len(b) < 16 || len(b) > 64 {
			return fmt.Errorf("%w: a device key is 16 to 64 bytes in standard base64", ErrBadRequest)
		}
	}
	switch sp.Status {
	case "":
		sp.Status = "enabled"
	case "enabled", "disabled":
	default:
		return fmt.Errorf("%w: status must be \"enabled\" or \"disabled\"", ErrBadRequest)
	}
	return nil
}

// CheckIdentity validates an identity to import without storing it.
func CheckIdentity(sp IdentitySpec) error { return sp.check() }

// PutIdentity creates or replaces the identity of the device entity id with
// the keys and status of spec (created reports a new identity). Disabling
// the device drops its live sessions, as SetDeviceStatus does; sessions
// opened with a replaced key stay until they end.
func (s *System) PutIdentity(ctx context.Context, id string, spec IdentitySpec) (idn persistence.Identity, created bool, err error) {
	if err := spec.check(); err != nil {
		return idn, false, err
	}
	kind, err := s.kindOf(id)
	if err != nil {
		return idn, false, err
	}
	if !s.cfg.Registry.Traits(kind).Has(plugin.Device) {
		return idn, false, fmt.Errorf("%w: entity %s is a %s, which cannot hold a device identity", ErrConflict, id, kind)
	}
	old, err := s.store.GetIdentity(id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		created = true
		old = persistence.Identity{DeviceID: id, CreatedAt: s.cfg.Now().UTC()}
	case err != nil:
		return idn, false, fmt.Errorf("look up identity %s: %w", id, err)
	}
	idn = old
	idn.PrimaryKey, idn.SecondaryKey, idn.Status = spec.PrimaryKey, spec.SecondaryKey, spec.Status
	if !created && idn == old {
		return idn, false, nil
	}
	if err := s.commitCatalog(ctx, persistence.PutIdentity(idn)); err != nil {
		return idn, false, fmt.Errorf("store identity %s: %w", id, err)
	}
	s.publishIdentity(idn)
	return idn, created, nil
}

// StoredTwin returns the twin document of id as this node's store holds
// it, read through the grain when the store holds none (a cluster member
// that is not one of its replicas). Unlike GetTwin it does not activate
// the grain of every twin an export or a scan reads.
func (s *System) StoredTwin(ctx context.Context, id string) (json.RawMessage, error) {
	doc, err := s.store.GetTwin(id)
	if err == nil {
		return doc, nil
	}
	if !errors.Is(err, persistence.ErrNotFound) {
		return nil, fmt.Errorf("read twin %s: %w", id, err)
	}
	doc, _, err = s.GetTwin(ctx, id)
	return doc, err
}

// IsDeviceKind reports whether entities of kind can hold a device identity.
func (s *System) IsDeviceKind(kind string) bool {
	return s.cfg.Registry.Traits(kind).Has(plugin.Device)
}
