package entity

import (
	"encoding/json"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence/record"
)

// Cloud-to-device inbox limits (IoT Hub's defaults).
const (
	MaxPendingPerDevice = 50
	// completedRetention is how long delivered/expired outcomes stay
	// visible through the API before they are purged.
	completedRetention = 24 * time.Hour
)

// inbox handles the inbox operations; the grain serialises them, so the
// pending cap and the sequence numbers cannot race.
func (c *Core) inbox(now time.Time, req *actorspb.Request) *Result {
	if !c.isDevice() {
		return fail(errcode.New(errcode.BadRequest, "%s is a %s, not a device", c.st.ID, c.cfg.Kind))
	}
	msgs, err := c.r.Inbox(c.st.ID)
	if err != nil {
		return fail(errcode.New(errcode.Unavailable, "inbox of %s: %v", c.st.ID, err))
	}
	res := &Result{what: "inbox of"}
	var pending []record.InboxMessage
	var maxSeq uint64
	for _, m := range msgs {
		maxSeq = max(maxSeq, m.Seq)
		switch {
		case m.State == "pending" && !m.ExpiresAt.After(now):
			m.State = "expired"
			res.Ops = append(res.Ops, Op{Kind: OpPutInbox, Key: c.st.ID, Inbox: m})
		case m.State == "pending":
			pending = append(pending, m)
		case now.Sub(completedAt(m)) > completedRetention:
			res.Ops = append(res.Ops, Op{Kind: OpDeleteInbox, Key: c.st.ID, Msg: m.ID})
		}
	}
	var result any
	switch b := req.Body.(type) {
	case *actorspb.Request_InboxSend:
		if b.InboxSend.Id == "" {
			return fail(errcode.New(errcode.BadRequest, "a cloud-to-device message needs an id"))
		}
		if len(pending) >= MaxPendingPerDevice {
			return fail(errcode.New(errcode.Throttled, "device %s already has %d pending messages", c.st.ID, len(pending)))
		}
		m := record.InboxMessage{ID: b.InboxSend.Id, DeviceID: c.st.ID, Payload: b.InboxSend.Payload,
			Properties: b.InboxSend.Properties, EnqueuedAt: now, ExpiresAt: now.Add(time.Duration(b.InboxSend.TtlNanos)),
			State: "pending", Seq: maxSeq + 1}
		res.Ops = append(res.Ops, Op{Kind: OpPutInbox, Key: c.st.ID, Inbox: m})
		res.Events = append(res.Events, c.event(&c.st, EventInbox, nil, now))
		result = m
	case *actorspb.Request_InboxPending:
		if pending == nil {
			pending = []record.InboxMessage{}
		}
		result = pending
	case *actorspb.Request_InboxDelivered:
		found := false
		for _, m := range msgs {
			if m.ID != b.InboxDelivered.Id {
				continue
			}
			found = true
			if m.State == "pending" {
				m.State, m.DeliveredAt = "delivered", now
				res.Ops = append(res.Ops, Op{Kind: OpPutInbox, Key: c.st.ID, Inbox: m})
			}
		}
		if !found {
			return fail(errcode.New(errcode.NotFound, "message %s of %s not found", b.InboxDelivered.Id, c.st.ID))
		}
		result = map[string]string{"state": "delivered"}
	}
	body, err := json.Marshal(result)
	if err != nil {
		return fail(errcode.New(errcode.Internal, "encode inbox result: %v", err))
	}
	res.Reply = &actorspb.Response{Version: c.st.Twin.Version(), Body: body}
	return res
}

func completedAt(m record.InboxMessage) time.Time {
	if !m.DeliveredAt.IsZero() {
		return m.DeliveredAt
	}
	return m.ExpiresAt
}
