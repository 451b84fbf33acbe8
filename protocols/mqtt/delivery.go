package mqtt

// What the node sends to connected devices: direct methods, desired
// property notifications and cloud-to-device messages.

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// sendTo writes a QoS 0 publish to one client only: the $iothub response
// topics are shared names, so they must never go through broker routing.
func sendTo(cl *mochi.Client, topic string, payload []byte) error {
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic, Payload: payload,
	})
}

// InvokeMethod calls a direct method on a connected device and waits for its
// answer until ctx is done. Its errors are ErrNotConnected, ErrBadRequest
// (a method name that cannot be a topic level) and ErrTimeout.
func (s *Server) InvokeMethod(ctx context.Context, deviceID, method string, payload []byte) (int, []byte, error) {
	ss := s.session(deviceID)
	if ss == nil || ss.cl.Closed() {
		return 0, nil, errcode.New(errcode.NotConnected, "device %s is not connected", deviceID)
	}
	s.mu.Lock()
	subscribed := ss.subs.has(TopicMethodRequest)
	s.mu.Unlock()
	if !subscribed {
		return 0, nil, errcode.New(errcode.NotConnected, "device %s is not subscribed to direct methods", deviceID)
	}
	if method == "" || strings.ContainsAny(method, "/+#") {
		return 0, nil, errcode.New(errcode.BadRequest, "method name %q", method)
	}
	rid := strconv.FormatUint(s.rid.Add(1), 10)
	key := deviceID + "\x00" + rid
	ch, release := s.awaitReply(key)
	defer release()
	if len(payload) == 0 {
		payload = []byte("null")
	}
	if err := sendTo(ss.cl, "$iothub/methods/POST/"+method+"/?$rid="+rid, payload); err != nil {
		return 0, nil, errcode.New(errcode.NotConnected, "device %s: %w", deviceID, err)
	}
	select {
	case r := <-ch:
		return r.status, r.payload, nil
	case <-ctx.Done():
		return 0, nil, errcode.New(errcode.Timeout, "device %s did not answer method %s in time", deviceID, method)
	}
}

// NotifyDesired tells a subscribed device that its desired properties
// changed; patch is the merge patch (this function adds "$version").
func (s *Server) NotifyDesired(deviceID string, version int64, patch []byte) {
	ss := s.session(deviceID)
	if ss == nil {
		return
	}
	s.mu.Lock()
	subscribed := ss.subs.has(TopicTwinDesired)
	s.mu.Unlock()
	if !subscribed {
		return
	}
	var body map[string]any
	if json.Unmarshal(patch, &body) != nil || body == nil {
		body = map[string]any{}
	}
	body["$version"] = version
	b, _ := json.Marshal(body)
	if err := sendTo(ss.cl, "$iothub/twin/PATCH/properties/desired/?$version="+strconv.FormatInt(version, 10), b); err != nil {
		s.log.Debug("desired notification not sent", "device", deviceID, "err", err)
	}
}

// DeliverPending publishes the device's pending cloud-to-device messages
// to whoever is subscribed to its devicebound topic (the device, or the
// gateway it connects via), at QoS 1, skipping those already in flight.
func (s *Server) DeliverPending(deviceID string) {
	if !s.boundSubscriber(deviceID) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	msgs, err := s.backend.PendingMessages(ctx, deviceID)
	if err != nil {
		s.log.Warn("pending messages", "device", deviceID, "err", err)
		return
	}
	for _, m := range msgs {
		if !s.markSent(deviceID, m.ID) {
			continue
		}
		props := map[string]string{PropMessageID: m.ID}
		for k, v := range m.Properties {
			props[k] = v
		}
		topic := "devices/" + deviceID + "/messages/devicebound/" + EncodePropertyBag(props)
		if err := s.broker.Publish(topic, m.Payload, false, 1); err != nil {
			s.log.Warn("c2d publish", "device", deviceID, "err", err)
		}
	}
}

// boundSubscriber reports whether someone connected here is subscribed to
// the device's devicebound topic.
func (s *Server) boundSubscriber(deviceID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		if ss.bound[deviceID] && !ss.cl.Closed() {
			return true
		}
	}
	return false
}

// markSent records that a message is in flight on the sessions subscribed to
// the device; it returns false if it already was.
func (s *Server) markSent(deviceID, msgID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := false
	for _, ss := range s.sessions {
		if !ss.bound[deviceID] {
			continue
		}
		if !ss.sent[deviceID+"\x00"+msgID] {
			if ss.sent == nil {
				ss.sent = map[string]bool{}
			}
			ss.sent[deviceID+"\x00"+msgID] = true
			fresh = true
		}
	}
	return fresh
}

// awaitReply registers key (device and request ID) for the device's
// answer to a direct method or a stream request; release forgets it.
func (s *Server) awaitReply(key string) (ch chan methodResult, release func()) {
	ch = make(chan methodResult, 1)
	s.methodsMu.Lock()
	s.methods[key] = ch
	s.methodsMu.Unlock()
	return ch, func() {
		s.methodsMu.Lock()
		delete(s.methods, key)
		s.methodsMu.Unlock()
	}
}
