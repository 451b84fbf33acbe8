package mqtt

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Device streams (CONTRACT section 11): the node asks a device to open a
// stream the way IoT Hub does, with a method-like request on
// $iothub/streams/POST/{name}/?$rid={rid} carrying where to connect and
// with which one-time token; the device answers on
// $iothub/streams/res/{status}/?$rid={rid}. The bytes never cross MQTT.

// streamKey keys a pending stream request apart from method calls (the
// two share the methods table and the rid counter).
func streamKey(deviceID, rid string) string { return "stream\x00" + deviceID + "\x00" + rid }

// RequestStream asks a connected device to open stream name by connecting
// a WebSocket to url with token, and waits for its answer (the status the
// device published) until ctx is done. Its errors carry errcode.NotConnected
// (no session here, or a session not subscribed to $iothub/streams/POST/#),
// errcode.BadRequest (a name that cannot be a topic level) and
// errcode.Timeout.
func (s *Server) RequestStream(ctx context.Context, deviceID, name, url, token string) (int, error) {
	ss := s.session(deviceID)
	if ss == nil || ss.cl.Closed() {
		return 0, errcode.New(errcode.NotConnected, "device %s is not connected", deviceID)
	}
	s.mu.Lock()
	subscribed := ss.subs.has(TopicStreamRequest)
	s.mu.Unlock()
	if !subscribed {
		return 0, errcode.New(errcode.NotConnected, "device %s is not subscribed to stream requests", deviceID)
	}
	if name == "" || strings.ContainsAny(name, "/+#") {
		return 0, errcode.New(errcode.BadRequest, "stream name %q", name)
	}
	rid := strconv.FormatUint(s.rid.Add(1), 10)
	key := streamKey(deviceID, rid)
	ch, release := s.awaitReply(key)
	defer release()
	body, _ := json.Marshal(struct {
		URL   string `json:"url"`
		Token string `json:"authorizationToken"`
	}{url, token})
	if err := sendTo(ss.cl, "$iothub/streams/POST/"+name+"/?$rid="+rid, body); err != nil {
		return 0, errcode.New(errcode.NotConnected, "device %s: %w", deviceID, err)
	}
	select {
	case r := <-ch:
		return r.status, nil
	case <-ctx.Done():
		return 0, errcode.New(errcode.Timeout, "device %s did not answer stream request %s in time", deviceID, name)
	}
}

// answerStream hands a device's answer to the RequestStream waiting for
// it; an answer nobody waits for (late, or a made-up rid) is dropped.
func (s *Server) answerStream(deviceID, rid string, status int) {
	s.methodsMu.Lock()
	ch := s.methods[streamKey(deviceID, rid)]
	s.methodsMu.Unlock()
	if ch != nil {
		select {
		case ch <- methodResult{status: status}:
		default:
		}
	}
}
