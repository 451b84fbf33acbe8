// Package streams is the node side of device streams (CONTRACT section
// 11): TCP tunnels to a device by its ID, for SSH, a web UI or a debugger
// behind NAT, with no inbound port open on the device.
//
// # Flow
//
// A service opens GET /api/v1/devices/{id}/streams/{name} (Broker.Open).
// The Broker reserves a slot (limits per device and per node), registers a
// pending stream with a random ID and a one-time token, and asks the
// device over its live session, through a Signaller (the MQTT adapter,
// routed to the member that holds the session), to connect a WebSocket to
// {URL}/api/v1/streams/{streamID} with that token. A device that is not
// connected gives 404, one that refuses 403, one that does not answer or
// connect back within Config.AcceptTimeout 504 — all before the service's
// WebSocket is upgraded. The device's connection (Broker.Accept) spends the
// token: it is bound to that stream, single use, and expires after
// Config.TokenTTL. Then both WebSockets are upgraded and the Broker relays
// binary frames both ways.
//
// # Cluster
//
// The device connects back to the member that holds the service's
// WebSocket (its URL is in the request), so only the request and the
// device's answer cross the members' connection (cluster.Placement's
// stream op), never the bytes.
//
// # Flow control and closing
//
// Each direction is one goroutine that reads a frame in chunks of
// Config.ChunkSize and writes each chunk before reading on: a slow reader
// on one side stops reads on the other, and TCP's windows do the rest, so
// a stream holds at most a chunk per direction besides the sockets'
// buffers. Config.BytesPerSecond limits each direction with a token
// bucket. When one side closes, its close frame is passed on to the other
// side, which answers it; the stream ends when both directions have ended
// (or after closeGrace). A stream idle for Config.IdleTimeout (no byte
// either way), a device disabled or deleted (HandleEvent), and Close end
// it at once. A half-close (TCP shutdown of one direction) is not carried:
// a WebSocket has none.
//
// Every stream is logged when it ends (who, device, name, bytes each way,
// duration, why it ended) and counted in twinmesh_streams_total by result.
package streams
