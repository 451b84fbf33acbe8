package node

import (
	"context"
	"encoding/json"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/api"
	"github.com/twinmesh/twinmesh/api/ws"
)

// wsBackend serves the WebSocket ops from the actor System; its errors keep
// their errcode codes, which the hub maps like REST (api.ErrorOf).
type wsBackend struct {
	sys     *actors.System
	methods actors.Commander
}

func (b wsBackend) GetTwin(ctx context.Context, id string) (json.RawMessage, error) {
	doc, _, err := b.sys.GetTwin(ctx, id)
	if err != nil {
		return nil, err
	}
	return api.WithModelID(b.sys, id, doc), nil
}

func (b wsBackend) PatchDesired(ctx context.Context, id string, patch json.RawMessage, ifVersion *int64) (json.RawMessage, error) {
	if err := b.sys.CheckDesired(id, patch); err != nil {
		return nil, err
	}
	doc, _, err := b.sys.PatchTwin(ctx, id, actors.PatchBody{Desired: patch}, ifVersion)
	if err != nil {
		return nil, err
	}
	return api.WithModelID(b.sys, id, doc), nil
}

func (b wsBackend) Invoke(ctx context.Context, id, method string, payload json.RawMessage, _ time.Duration) (int, json.RawMessage, error) {
	if _, err := b.sys.Identity(ctx, id); err != nil {
		return 0, nil, err
	}
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	if err := b.sys.CheckCommand(id, method, payload); err != nil {
		return 0, nil, err
	}
	st, resp, err := b.methods.InvokeMethod(ctx, id, method, payload)
	if err != nil {
		if ctx.Err() != nil {
			err = actors.ErrTimeout
		}
		return 0, nil, err
	}
	if !json.Valid(resp) {
		resp, _ = json.Marshal(string(resp))
	}
	return st, resp, nil
}

// Call runs an entity operation (the WebSocket "call" op).
func (b wsBackend) Call(ctx context.Context, id, name string, args json.RawMessage) (json.RawMessage, error) {
	return b.sys.Call(ctx, id, name, args)
}

func (b wsBackend) Ancestors(ctx context.Context, id string) ([]string, error) {
	return b.sys.Ancestors(ctx, id)
}

// wsSink forwards actor events to the hub (which never blocks).
func wsSink(h *ws.Hub) actors.EventSink {
	return func(e actors.Event) {
		h.Publish(ws.Event{Type: e.Type, Entity: e.Entity, Version: e.Version, Data: e.Data, TS: e.TS})
	}
}

var _ ws.Caller = wsBackend{}
