package actors

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// storeReader is the entity core's view of the node's store.
type storeReader struct{ s Store }

func notFound(err error) error {
	if errors.Is(err, persistence.ErrNotFound) {
		return entity.ErrNotFound
	}
	return err
}

func (r storeReader) Entity(id string) (persistence.Entity, error) {
	e, err := r.s.GetEntity(id)
	return e, notFound(err)
}

func (r storeReader) TwinDoc(id string) ([]byte, error) {
	d, err := r.s.GetTwin(id)
	return d, notFound(err)
}

func (r storeReader) Doc(bucket, key string) ([]byte, error) {
	d, err := r.s.GetDoc(persistence.Bucket(bucket), key)
	return d, notFound(err)
}

func (r storeReader) Docs(bucket, prefix string) (map[string][]byte, error) {
	return r.s.ListDocs(persistence.Bucket(bucket), prefix)
}

func (r storeReader) HasChildren(id string) (bool, error) {
	kids, err := r.s.Children(id)
	return len(kids) > 0, err
}

func (r storeReader) Telemetry(ctx context.Context, id string, from time.Time, limit int) ([]persistence.TelemetryRecord, error) {
	return r.s.QueryTelemetry(ctx, id, persistence.TelemetryQuery{From: from, Limit: limit})
}

func (r storeReader) Inbox(id string) ([]persistence.InboxMessage, error) {
	if ir, ok := r.s.(inboxReader); ok {
		return ir.Inbox(id)
	}
	return nil, nil
}

var _ entity.Reader = storeReader{}

// jsonResponse answers with a JSON document.
func jsonResponse(v any) *actorspb.Response {
	b, err := json.Marshal(v)
	if err != nil {
		return entity.ErrorResponse(errcode.New(errcode.Internal, "encode: %v", err))
	}
	return &actorspb.Response{Body: b}
}
