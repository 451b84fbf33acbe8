package actors

// Fleet operations (CONTRACT section 9): scans of twins and identities for
// queries and listings, deleting a device, replacing a twin's desired
// properties and tags.

import (
	"bytes"
	"context"
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
