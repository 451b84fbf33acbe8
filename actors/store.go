package actors

import (
	"context"

	"github.com/twinmesh/twinmesh/persistence"
)

// Store is what the actor layer needs from persistence. *persistence.DB
// implements it; reads are safe from many goroutines and Commit returns only
// after the ops are durable.
type Store interface {
	Commit(ctx context.Context, ops ...persistence.Op) error
	GetTwin(id string) ([]byte, error)
	GetEntity(id string) (persistence.Entity, error)
	Children(parent string) ([]persistence.Entity, error)
	Subtree(root string) ([]persistence.Entity, error)
	ConnectedVia(gatewayID string) ([]string, error)
	ListEntities(f persistence.EntityFilter, after string, limit int) ([]persistence.Entity, string, error)
	GetIdentity(deviceID string) (persistence.Identity, error)
	GetDoc(b persistence.Bucket, key string) ([]byte, error)
	ListDocs(b persistence.Bucket, prefix string) (map[string][]byte, error)
	QueryTelemetry(ctx context.Context, deviceID string, q persistence.TelemetryQuery) ([]persistence.TelemetryRecord, error)
}

var _ Store = (*persistence.DB)(nil)
