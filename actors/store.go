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

// Replication is what a cluster adds to the store, implemented by the
// cluster package's Placement (adapted in cmd). nil means a node on its own,
// writing only its local store.
//
// An activation Claims its grain before it loads: the claim fences older
// activations on every member and copies the newest state into the local
// store. Every write of the activation then goes through Commit with the
// claimed epoch: refused (an error wrapping persistence.ErrFenced) once a
// newer activation claimed the grain, and acknowledged only once the
// grain's replicas committed it.
type Replication interface {
	// Claim returns the epoch of a new activation of identity's grain.
	Claim(ctx context.Context, identity string) (epoch uint64, err error)
	// Commit writes a grain's ops, fenced by its epoch, to its replicas.
	Commit(ctx context.Context, identity string, epoch uint64, ops []persistence.Op) error
	// Confirm returns nil once a majority of the members confirmed that no
	// activation newer than epoch claimed identity's grain, so that what
	// the grain answers from memory is not stale (an error wrapping
	// persistence.ErrFenced when one did).
	Confirm(ctx context.Context, identity string, epoch uint64) error
	// CommitCatalog writes cluster-wide ops that belong to no grain.
	CommitCatalog(ctx context.Context, ops []persistence.Op) error
	// Broadcast hands an event of the given type to the other members
	// that want it (encoded as JSON only when there is one), without
	// blocking.
	Broadcast(eventType string, ev any)
	// Invoke runs a direct method on a device whose session is on the
	// member named node; it returns ErrNotConnected or ErrTimeout like a
	// local Commander.
	Invoke(ctx context.Context, node, device, method string, payload []byte) (int, []byte, error)
	// Unreachable returns a channel closed once the member at the
	// protoactor address addr is found not answering, so that requests
	// pending on it stop waiting.
	Unreachable(addr string) <-chan struct{}
}
