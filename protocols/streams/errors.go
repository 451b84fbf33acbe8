package streams

import "github.com/twinmesh/twinmesh/actors/errcode"

// Errors the Broker returns before a WebSocket is upgraded; each carries
// the errcode code of its HTTP status.
var (
	// ErrLimit: the device or the node has as many streams as allowed
	// (errcode.Throttled, 429).
	ErrLimit = errcode.New(errcode.Throttled, "streams: limit reached")
	// ErrRefused: the device answered the request with a status other
	// than 200 (errcode.Forbidden, 403).
	ErrRefused = errcode.New(errcode.Forbidden, "streams: refused by the device")
	// ErrNoConnectBack: the device accepted but did not connect back in
	// time (errcode.Timeout, 504).
	ErrNoConnectBack = errcode.New(errcode.Timeout, "streams: the device did not connect back in time")
	// ErrToken: the connect-back token is not the stream's, was used, or
	// expired (errcode.Unauthorized, 401).
	ErrToken = errcode.New(errcode.Unauthorized, "streams: invalid or expired stream token")
	// ErrClosed: the Broker is closed (errcode.Unavailable, 503).
	ErrClosed = errcode.New(errcode.Unavailable, "streams: the node is stopping")
)
