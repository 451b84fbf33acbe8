package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/persistence"
)

// SweepSessions marks disconnected the devices whose twin, in this node's
// store, says they are connected to node since before before: after a
// crash (SIGKILL, power loss) the sessions a node held are gone, but their
// twins — and their buildings' rollups — said "connected" for minutes
// (issue 12). Each disconnection is conditional (the grain applies it only
// while its twin still names node and a session older than before), so a
// device that reconnected since, here or elsewhere, keeps its state. It
// returns how many devices it marked. In a cluster the local store holds
// copies of only some grains: a device whose newest copy lives elsewhere
// is not swept here. Devices whose disconnection failed (no quorum while
// the cluster settles) are counted in the error; sweeping again retries
// them.
func (s *System) SweepSessions(ctx context.Context, node string, before time.Time) (int, error) {
	swept, failed, after := 0, 0, ""
	var lastErr error
	for ctx.Err() == nil {
		ents, next, err := s.store.ListEntities(persistence.EntityFilter{}, after, 500)
		if err != nil {
			return swept, fmt.Errorf("sweep sessions: %w", err)
		}
		for _, e := range ents {
			raw, err := s.store.GetTwin(e.ID)
			if err != nil {
				continue // no twin here
			}
			var doc struct {
				Connection struct {
					State string    `json:"state"`
					Node  string    `json:"node"`
					Since time.Time `json:"since"`
				} `json:"connection"`
			}
			if json.Unmarshal(raw, &doc) != nil || doc.Connection.State != "connected" ||
				doc.Connection.Node != node || !doc.Connection.Since.Before(before) {
				continue
			}
			kind, err := s.kindOf(e.ID)
			if err != nil {
				continue
			}
			_, err = s.call(ctx, e.ID, kind, &actorspb.Request{Body: &actorspb.Request_Connection{Connection: &actorspb.Connection{
				Node: node, OnlyIfNode: node, SinceUnixNano: before.UnixNano()}}})
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return swept, err
				}
				s.log.Warn("sweep session", "device", e.ID, "err", err)
				failed, lastErr = failed+1, err
				continue
			}
			swept++
		}
		if next == "" {
			break
		}
		after = next
	}
	if err := ctx.Err(); err != nil {
		return swept, err
	}
	if failed > 0 {
		// The caller may sweep again: the marked devices are skipped.
		return swept, fmt.Errorf("sweep sessions of %s: %d devices not marked disconnected: %w", node, failed, lastErr)
	}
	return swept, nil
}
