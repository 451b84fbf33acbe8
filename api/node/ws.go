package node

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/api/ws"
)

// wsBackend serves the WebSocket ops from the actor System.
type wsBackend struct {
	sys     *actors.System
	methods actors.Commander
}

// coded gives actor errors the API's codes on the WebSocket.
type coded struct {
	code string
	err  error
}

func (c coded) Error() string     { return c.err.Error() }
func (c coded) ErrorCode() string { return c.code }

func wsErr(err error) error {
	if err == nil {
		return nil
	}
	for _, m := range []struct {
		e    error
		code string
	}{
		{actors.ErrNotFound, "not_found"}, {actors.ErrBadRequest, "bad_request"}, {actors.ErrPrecondition, "precondition_failed"},
		{actors.ErrTooLarge, "too_large"}, {actors.ErrConflict, "conflict"}, {actors.ErrNotConnected, "not_connected"},
		{actors.ErrTimeout, "timeout"}, {actors.ErrThrottled, "throttled"}, {actors.ErrUnavailable, "unavailable"},
	} {
		if errors.Is(err, m.e) {
			return coded{m.code, err}
		}
	}
	return err
}

func (b wsBackend) GetTwin(ctx context.Context, id string) (json.RawMessage, error) {
	doc, _, err := b.sys.GetTwin(ctx, id)
	return doc, wsErr(err)
}

func (b wsBackend) PatchDesired(ctx context.Context, id string, patch json.RawMessage, ifVersion *int64) (json.RawMessage, error) {
	doc, _, err := b.sys.PatchTwin(ctx, id, actors.PatchBody{Desired: patch}, ifVersion)
	return doc, wsErr(err)
}

func (b wsBackend) Invoke(ctx context.Context, id, method string, payload json.RawMessage, _ time.Duration) (int, json.RawMessage, error) {
	if _, err := b.sys.Identity(ctx, id); err != nil {
		return 0, nil, wsErr(err)
	}
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	st, resp, err := b.methods.InvokeMethod(ctx, id, method, payload)
	if err != nil {
		if ctx.Err() != nil {
			err = actors.ErrTimeout
		}
		return 0, nil, wsErr(err)
	}
	if !json.Valid(resp) {
		resp, _ = json.Marshal(string(resp))
	}
	return st, resp, nil
}

func (b wsBackend) Ancestors(ctx context.Context, id string) ([]string, error) {
	a, err := b.sys.Ancestors(ctx, id)
	return a, wsErr(err)
}

// wsSink forwards actor events to the hub (which never blocks).
func wsSink(h *ws.Hub) actors.EventSink {
	return func(e actors.Event) {
		h.Publish(ws.Event{Type: e.Type, Entity: e.Entity, Version: e.Version, Data: e.Data, TS: e.TS})
	}
}
