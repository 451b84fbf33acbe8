package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twinmesh/twinmesh/actors"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/persistence"
)

// amqpDefs keeps the AMQP definitions in the cluster's catalog.
type amqpDefs struct{ sys *actors.System }

func (d amqpDefs) PutDefinition(ctx context.Context, key string, doc []byte) error {
	return d.sys.PutAMQPDefinition(ctx, key, doc)
}

func (d amqpDefs) DeleteDefinition(ctx context.Context, key string) error {
	return d.sys.DeleteAMQPDefinition(ctx, key)
}

func (d amqpDefs) Definitions() (map[string][]byte, error) { return d.sys.AMQPDefinitions() }

func (d amqpDefs) Deleted() (map[string]bool, error) { return d.sys.AMQPDeleted() }

// amqpGrains is what the AMQP endpoints' workers need of the node: the
// grains' outboxes in its store, their settlement through the grains, and
// which devices' grains this member owns (it sends their outboxes).
type amqpGrains struct {
	db    *persistence.DB
	sys   *actors.System
	place *tmcluster.Placement
}

func (g amqpGrains) Outbox(device string, after uint64, limit int) ([]persistence.OutboxEntry, error) {
	return g.db.Outbox(device, after, limit)
}

func (g amqpGrains) ScanOutbox(fn func(device []byte, seq uint64, endpoint []byte, size int) bool) error {
	return g.db.ScanOutbox(fn)
}

func (g amqpGrains) SettleOutbox(ctx context.Context, device, kind string, seqs []uint64) error {
	return g.sys.SettleOutbox(ctx, device, kind, seqs)
}

// Owns: the owner of the device's grain, in the placement's order over
// every member (members restricted to some kinds aside, where it is the
// first member in that order, which settles through the grain wherever
// it lives).
func (g amqpGrains) Owns(device string) bool { return g.place.Owns(device) }

// storedTags reads a device's tags from this node's store, for AMQP route
// conditions: the member that routes a device's events hosts its grain,
// whose commits reach this store before their events are published. A
// device without a stored twin has no tags.
func storedTags(db *persistence.DB, id string) (map[string]any, error) {
	raw, err := db.GetTwin(id)
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc struct {
		Tags map[string]any `json:"tags"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("twin %s: %w", id, err)
	}
	return doc.Tags, nil
}
