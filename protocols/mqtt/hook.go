package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// hook connects mochi's lifecycle to the Backend. It embeds HookBase so it
// only implements what it provides.
type hook struct {
	mochi.HookBase
	s *Server
}

func (h *hook) ID() string { return "twinmesh" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnSessionEstablished,
		mochi.OnDisconnect, mochi.OnPublish, mochi.OnSubscribed, mochi.OnQosPublish, mochi.OnQosComplete}, []byte{b})
}

func (h *hook) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.s.cfg.RequestTimeout)
}

// refuse counts a refused connection and logs it, once in a while per
// client and reason, naming the device, its address and why. The device
// is the one the user name claims (<host>/<deviceId>/…), which is the
// client ID unless the two differ.
func (h *hook) refuse(reason string, cl *mochi.Client, detail string) bool {
	h.s.metrics.refused.WithLabelValues(reason).Inc()
	if h.s.refusals.allow(cl.ID+"\x00"+reason, time.Now()) { // counted always, logged once in a while
		device := cl.ID
		if parts := strings.Split(string(cl.Properties.Username), "/"); len(parts) >= 2 && parts[1] != "" {
			device = parts[1]
		}
		h.s.log.Warn("connection refused", "device", device, "client", cl.ID, "remote", cl.Net.Remote, "reason", reason, "detail", detail)
	}
	return false
}

// deny counts a publish or subscription the ACL refused and logs it, once
// in a while per client, naming the device, its address, the topic and why.
func (h *hook) deny(cl *mochi.Client, topic string, write bool, why string) bool {
	h.s.metrics.refused.WithLabelValues("acl").Inc()
	if h.s.refusals.allow(cl.ID+"\x00acl", time.Now()) {
		what := "subscription refused"
		if write {
			what = "publish refused"
		}
		h.s.log.Warn(what, "device", cl.ID, "remote", cl.Net.Remote, "topic", topic, "reason", why)
	}
	return false
}

// OnConnectAuthenticate checks the IoT Hub credentials: client ID = device
// ID, user name "<host>/<deviceId>/?api-version=…", password a SAS token
// for this device signed with one of its keys.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	id := cl.ID
	h.s.mu.Lock()
	full := len(h.s.sessions) >= h.s.cfg.MaxConnections
	_, reconnect := h.s.sessions[id]
	h.s.mu.Unlock()
	if full && !reconnect {
		// "Server unavailable" (3.1.1 code 3, MQTT 5 0x88), which device
		// SDKs retry with backoff; mochi would answer "bad user name or
		// password" to a refusal here, so the answer is sent first and
		// the connection closed (the write is synchronous at this point).
		_ = h.s.broker.SendConnack(cl, packets.ErrServerUnavailable, false, nil)
		cl.Stop(packets.ErrServerUnavailable)
		return h.refuse("connection_limit", cl, fmt.Sprintf("%d connections", h.s.cfg.MaxConnections))
	}
	parts := strings.Split(string(pk.Connect.Username), "/")
	if len(parts) < 2 || parts[1] != id || id == "" {
		return h.refuse("bad_username", cl, "user name must be <host>/<clientId>/?api-version=…")
	}
	ctx, cancel := h.ctx()
	defer cancel()
	idn, err := h.s.backend.Identity(ctx, id)
	if err != nil {
		if errors.Is(err, ErrUnknownDevice) {
			return h.refuse("unknown_device", cl, err.Error())
		}
		return h.refuse("backend_error", cl, err.Error())
	}
	if !idn.Enabled {
		return h.refuse("disabled", cl, "device is disabled")
	}
	if err := sas.VerifyLifetime(string(pk.Connect.Password), id, []string{idn.PrimaryKey, idn.SecondaryKey}, h.s.cfg.Now(), h.s.cfg.MaxTokenLifetime); err != nil {
		reason := "bad_token"
		switch {
		case errors.Is(err, sas.ErrExpired):
			reason = "expired_token"
		case errors.Is(err, sas.ErrLifetime):
			reason = "token_lifetime"
		case errors.Is(err, sas.ErrSignature):
			reason = "forged_token"
		case errors.Is(err, sas.ErrWrongDevice):
			reason = "other_device_token"
		}
		return h.refuse(reason, cl, err.Error())
	}
	return h.announceModel(cl, string(pk.Connect.Username))
}

// OnSessionEstablished records the session and marks the device connected.
func (h *hook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	settleClient(cl)
	s := h.s
	s.mu.Lock()
	s.sessions[cl.ID] = &session{cl: cl}
	s.mu.Unlock()
	ctx, cancel := h.ctx()
	defer cancel()
	if err := s.backend.SetConnection(ctx, cl.ID, true); err != nil {
		s.log.Warn("connection state", "device", cl.ID, "err", err)
	}
}

// OnDisconnect marks the device disconnected, unless a newer session of the
// same device took this one over.
func (h *hook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	s := h.s
	s.mu.Lock()
	ss := s.sessions[cl.ID]
	mine := ss != nil && ss.cl == cl
	if mine {
		delete(s.sessions, cl.ID)
	}
	s.mu.Unlock()
	if !mine {
		return
	}
	if cl.IsTakenOver() {
		return
	}
	ctx, cancel := h.ctx()
	defer cancel()
	if err := s.backend.SetConnection(ctx, cl.ID, false); err != nil && !errors.Is(err, ErrUnknownDevice) {
		s.log.Warn("connection state", "device", cl.ID, "err", err)
	}
}

// mayUseDevice: a client may use its own device topics, and a gateway those
// of the devices connected via it.
func (h *hook) mayUseDevice(self, device string) bool {
	if self == device {
		return true
	}
	ctx, cancel := h.ctx()
	defer cancel()
	ok, err := h.s.backend.MayActFor(ctx, self, device)
	return err == nil && ok
}

// OnACLCheck confines each client to its own topics. It is called for
// publishes (write), subscription filters and deliveries (read).
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	if write {
		t, err := ParseTopic(topic)
		if err != nil {
			return h.deny(cl, topic, write, "not an IoT Hub device topic")
		}
		switch t.Kind {
		case TopicTelemetry:
			if h.mayUseDevice(cl.ID, t.DeviceID) {
				return true
			}
			return h.deny(cl, topic, write, "another device's topic (neither its own nor a device connected via it)")
		case TopicTwinGet, TopicTwinPatchReported, TopicMethodResponse, TopicStreamResponse:
			return true
		}
		return h.deny(cl, topic, write, "devices may not publish on this topic")
	}
	kind, device, err := ParseFilter(topic)
	if err != nil {
		// A delivery: a concrete topic rather than a filter.
		t, perr := ParseTopic(topic)
		if perr != nil {
			return h.deny(cl, topic, write, "not an IoT Hub device topic")
		}
		kind, device = t.Kind, t.DeviceID
	}
	switch kind {
	case TopicTwinResponse, TopicTwinDesired, TopicMethodRequest, TopicStreamRequest:
		return true
	case TopicDeviceBound:
		if h.mayUseDevice(cl.ID, device) {
			return true
		}
		return h.deny(cl, topic, write, "another device's messages (neither its own nor a device connected via it)")
	case TopicTelemetry:
		ctx, cancel := h.ctx()
		granted, err := h.s.backend.MayRead(ctx, cl.ID, device)
		cancel()
		if err == nil && granted {
			return true
		}
		return h.deny(cl, topic, write, "another device's telemetry, without a grant from it")
	}
	return h.deny(cl, topic, write, "devices may not subscribe to this topic")
}

// OnSubscribed notes what the session listens to and delivers pending
// cloud-to-device messages on a devicebound subscription.
func (h *hook) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	s := h.s
	var bound []string
	s.mu.Lock()
	ss := s.sessions[cl.ID]
	for i, f := range pk.Filters {
		if ss == nil || i >= len(codes) || codes[i] >= 0x80 {
			continue
		}
		kind, device, err := ParseFilter(f.Filter)
		if err != nil {
			continue
		}
		ss.subs.add(kind)
		if kind == TopicDeviceBound {
			if ss.bound == nil {
				ss.bound = map[string]bool{}
			}
			ss.bound[device] = true
			bound = append(bound, device)
		}
	}
	s.mu.Unlock()
	for _, d := range bound {
		s.DeliverPending(d)
	}
}

// respond answers a twin request the way the hub does:
// $iothub/twin/res/{status}/?$rid={rid}[&$version={v}].
func (h *hook) respond(cl *mochi.Client, status int, rid string, version int64, body []byte) {
	topic := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + rid
	if version > 0 {
		topic += "&$version=" + strconv.FormatInt(version, 10)
	}
	if err := sendTo(cl, topic, body); err != nil {
		h.s.log.Debug("twin response not sent", "client", cl.ID, "err", err)
	}
}

// respondError answers a twin request with err's status and message.
func (h *hook) respondError(cl *mochi.Client, rid string, err error) {
	status, _ := reply(err)
	h.respond(cl, status, rid, 0, errorBody(status, err))
}

// refuseFor drops a publish for err: MQTT 5 clients get a PUBACK with
// err's reason code (see reply), MQTT 3.1.1 clients none (they may
// retransmit).
func refuseFor(cl *mochi.Client, pk packets.Packet, err error) (packets.Packet, error) {
	_, reason := reply(err)
	reason.Reason = reasonString(err, reason)
	return refusePublish(cl, pk, reason)
}

// refusePublish drops a publish: MQTT 5 clients get a PUBACK with a reason
// code, MQTT 3.1.1 clients none (they may retransmit).
func refusePublish(cl *mochi.Client, pk packets.Packet, code packets.Code) (packets.Packet, error) {
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return pk, code
	}
	return pk, packets.ErrRejectPacket
}

// OnPublish handles everything a device publishes. It runs on the client's
// read goroutine before mochi acknowledges, which is what makes a QoS 1
// PUBACK mean "durably stored".
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	s := h.s
	t, err := ParseTopic(pk.TopicName)
	if err != nil {
		s.metrics.refused.WithLabelValues("bad_topic").Inc()
		return refusePublish(cl, pk, packets.ErrTopicNameInvalid)
	}
	s.mu.Lock()
	ss := s.sessions[cl.ID]
	now := time.Now()
	allowed := ss != nil && s.cfg.Rate.Allow(cl.ID, now)
	s.mu.Unlock()
	if !allowed {
		s.metrics.refused.WithLabelValues("throttled").Inc()
		err := errcode.New(errcode.Throttled, "over %g messages per second", s.cfg.Rate.Rate())
		if t.Kind == TopicTwinGet || t.Kind == TopicTwinPatchReported {
			h.respondError(cl, t.RID, err)
			return pk, packets.CodeSuccessIgnore
		}
		return refuseFor(cl, pk, err)
	}
	if len(pk.Payload) > s.cfg.MaxPayload {
		s.metrics.refused.WithLabelValues("too_large").Inc()
		err := errcode.New(errcode.TooLarge, "payload of %d bytes, the limit is %d", len(pk.Payload), s.cfg.MaxPayload)
		if t.Kind == TopicTwinPatchReported {
			h.respondError(cl, t.RID, err)
			return pk, packets.CodeSuccessIgnore
		}
		return refuseFor(cl, pk, err)
	}
	switch t.Kind {
	case TopicTelemetry:
		m := Telemetry{TS: time.Now().UTC(), Payload: pk.Payload, ContentType: t.Props[PropContentType],
			Properties: userProperties(t.Props), MessageID: t.Props[PropMessageID], ContentEncoding: t.Props[PropContentEncoding], QoS: pk.FixedHeader.Qos,
			Component: t.Props[PropComponent]}
		if m.QoS == 0 {
			select {
			case s.qos0 <- qos0Item{device: t.DeviceID, m: m}:
			default:
				s.metrics.qos0Dropped.Inc()
			}
			return pk, nil
		}
		if err := s.storeTelemetry(t.DeviceID, m); err != nil {
			return refuseFor(cl, pk, err)
		}
		return pk, nil // acknowledged now, and routed to granted subscribers
	case TopicTwinGet:
		ctx, cancel := h.ctx()
		desired, reported, err := s.backend.GetTwin(ctx, cl.ID)
		cancel()
		if err != nil {
			h.respondError(cl, t.RID, err)
		} else {
			b, _ := json.Marshal(map[string]json.RawMessage{"desired": desired, "reported": reported})
			h.respond(cl, 200, t.RID, 0, b)
		}
	case TopicTwinPatchReported:
		ctx, cancel := h.ctx()
		v, err := s.backend.PatchReported(ctx, cl.ID, pk.Payload)
		cancel()
		if err != nil {
			h.respondError(cl, t.RID, err)
		} else {
			h.respond(cl, 204, t.RID, v, nil)
		}
	case TopicMethodResponse:
		s.methodsMu.Lock()
		ch := s.methods[cl.ID+"\x00"+t.RID]
		s.methodsMu.Unlock()
		if ch != nil {
			select {
			case ch <- methodResult{status: t.Status, payload: append([]byte(nil), pk.Payload...)}:
			default:
			}
		}
	case TopicStreamResponse:
		s.answerStream(cl.ID, t.RID, t.Status)
	default:
		return refusePublish(cl, pk, packets.ErrTopicNameInvalid)
	}
	// $iothub requests are answered above: acknowledge, never route them.
	return pk, packets.CodeSuccessIgnore
}

// OnQosPublish remembers which cloud-to-device message a QoS 1 packet
// carries, so its PUBACK can mark the message delivered.
func (h *hook) OnQosPublish(cl *mochi.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	t, err := ParseTopic(pk.TopicName)
	if err != nil || t.Kind != TopicDeviceBound || t.Props[PropMessageID] == "" {
		return
	}
	h.s.mu.Lock()
	if ss := h.s.sessions[cl.ID]; ss != nil {
		if ss.inflight == nil {
			ss.inflight = map[uint16]c2dRef{}
		}
		ss.inflight[pk.PacketID] = c2dRef{device: t.DeviceID, msg: t.Props[PropMessageID]}
	}
	h.s.mu.Unlock()
}

// OnQosComplete marks a cloud-to-device message delivered when the client
// acknowledges it. mochi also calls it for the server's own acks of inbound
// QoS 1 publishes; those packets were built by the server (Created set),
// while a PUBACK read from the wire has Created zero.
func (h *hook) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	if pk.Created != 0 {
		return
	}
	h.s.mu.Lock()
	var ref c2dRef
	var ok bool
	if ss := h.s.sessions[cl.ID]; ss != nil {
		ref, ok = ss.inflight[pk.PacketID]
		delete(ss.inflight, pk.PacketID)
	}
	h.s.mu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := h.ctx()
	defer cancel()
	if err := h.s.backend.MessageDelivered(ctx, ref.device, ref.msg); err != nil {
		h.s.log.Warn("c2d delivered", "device", ref.device, "message", ref.msg, "err", err)
	}
}

var _ mochi.Hook = (*hook)(nil)
