package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Device streams across members (CONTRACT section 11): the member that
// holds the service's WebSocket asks the member that holds the device's
// MQTT session to signal the device, with the URL of the asking member;
// the device then connects back to that member directly, which pipes the
// bytes. Only the request and the device's answer cross the members'
// connection, never the stream's bytes.

const opStream = "stream"

type streamReq struct {
	Device  string `json:"device"`
	Name    string `json:"name"`
	URL     string `json:"url"`
	Token   string `json:"token"`
	Timeout int64  `json:"timeoutMs"`
}

type streamRes struct {
	Status int `json:"status"`
}

// StreamLocal is the optional capability of a Local that signals stream
// requests to the devices whose sessions are on this node. Serve calls it
// on a goroutine of its own for every request; it must be safe for
// concurrent use. A Local without it answers errcode.NotConnected.
type StreamLocal interface {
	// RequestStream asks device to open stream name by connecting to url
	// with token, and returns the status the device answered; errors as
	// Local.InvokeMethod's.
	RequestStream(ctx context.Context, device, name, url, token string) (status int, err error)
}

func requestStream(ctx context.Context, local Local, r streamReq) (int, error) {
	sl, ok := local.(StreamLocal)
	if !ok {
		return 0, errcode.New(errcode.NotConnected, "this member does not serve device streams")
	}
	return sl.RequestStream(ctx, r.Device, r.Name, r.URL, r.Token)
}

// RequestStream asks the member named node, which holds device's session,
// to signal a stream request to the device; errors as Invoke's.
func (p *Placement) RequestStream(ctx context.Context, node, device, name, url, token string) (int, error) {
	addr, ok := p.resolve(node)
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrNoMember, node)
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	var res streamRes
	req := streamReq{Device: device, Name: name, URL: url, Token: token, Timeout: timeout.Milliseconds()}
	if err := p.request(ctx, addr, opStream, req, &res); err != nil {
		if errcode.Of(err) == errcode.Internal {
			err = errcode.Wrap(errcode.Unavailable, err)
		}
		return 0, err
	}
	return res.Status, nil
}

// serveStream answers opStream: it hands the request to Serve and waits.
func (p *Placement) serveStream(ctx context.Context, body []byte) ([]byte, error) {
	var r streamReq
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, time.Duration(r.Timeout)*time.Millisecond)
	defer cancel()
	st, _, err := p.callLocal(sctx, call{ctx: sctx, stream: &r, reply: make(chan callResult, 1)})
	if err != nil {
		return nil, err
	}
	return json.Marshal(streamRes{Status: st})
}
