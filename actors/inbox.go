package actors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/twinmesh/twinmesh/persistence"
)

// Cloud-to-device inbox limits (IoT Hub's defaults).
const (
	DefaultMessageTTL   = time.Hour
	MaxMessageTTL       = 48 * time.Hour
	MaxPendingPerDevice = 50
	// completedRetention is how long delivered/expired outcomes stay
	// visible through the API before they are purged.
	completedRetention = 24 * time.Hour
)

// Inbox operations, serialised by the device grain so the pending cap and
// the sequence numbers cannot race.
const (
	opInboxSend      = "inbox-send"
	opInboxPending   = "inbox-pending"
	opInboxDelivered = "inbox-delivered"
)

// EventInbox is published when a device's inbox has new pending messages;
// the protocol adapter holding the device's session delivers them.
const EventInbox = "inbox"

// OutgoingMessage is a cloud-to-device message to enqueue.
type OutgoingMessage struct {
	Payload    []byte            `json:"payload"`
	Properties map[string]string `json:"properties,omitempty"`
	TTL        time.Duration     `json:"ttl,omitempty"`
}

// SendMessage stores a cloud-to-device message in the device's durable
// inbox and returns its ID. ErrThrottled when MaxPendingPerDevice messages
// are already pending.
func (s *System) SendMessage(ctx context.Context, deviceID string, m OutgoingMessage) (persistence.InboxMessage, error) {
	if m.TTL == 0 {
		m.TTL = DefaultMessageTTL
	}
	if m.TTL < time.Second || m.TTL > MaxMessageTTL {
		return persistence.InboxMessage{}, fmt.Errorf("%w: ttl must be between 1s and %v", ErrBadRequest, MaxMessageTTL)
	}
	var out persistence.InboxMessage
	err := s.deviceCall(ctx, deviceID, opInboxSend, m, &out)
	return out, err
}

// PendingMessages returns the device's undelivered, unexpired messages in
// enqueue order (expired ones are marked expired on the way).
func (s *System) PendingMessages(ctx context.Context, deviceID string) ([]persistence.InboxMessage, error) {
	var out []persistence.InboxMessage
	err := s.deviceCall(ctx, deviceID, opInboxPending, nil, &out)
	return out, err
}

// MessageDelivered marks a message delivered (the device acknowledged it).
func (s *System) MessageDelivered(ctx context.Context, deviceID, messageID string) error {
	return s.deviceCall(ctx, deviceID, opInboxDelivered, map[string]string{"id": messageID}, nil)
}

// Messages lists a device's inbox with each message's outcome, as the
// device's grain (its owner) holds it.
func (s *System) Messages(ctx context.Context, deviceID string) ([]persistence.InboxMessage, error) {
	var out []persistence.InboxMessage
	if err := s.deviceCall(ctx, deviceID, opInboxList, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Message returns one message of a device's inbox.
func (s *System) Message(ctx context.Context, deviceID, messageID string) (persistence.InboxMessage, error) {
	msgs, err := s.Messages(ctx, deviceID)
	if err != nil {
		return persistence.InboxMessage{}, err
	}
	for _, m := range msgs {
		if m.ID == messageID {
			return m, nil
		}
	}
	return persistence.InboxMessage{}, fmt.Errorf("%w: message %s of %s", ErrNotFound, messageID, deviceID)
}

// inboxReader is the part of the store the inbox reads.
type inboxReader interface {
	Inbox(deviceID string) ([]persistence.InboxMessage, error)
}

func (s *System) inboxStore() inboxReader {
	if r, ok := s.store.(inboxReader); ok {
		return r
	}
	return noInbox{}
}

type noInbox struct{}

func (noInbox) Inbox(string) ([]persistence.InboxMessage, error) { return nil, nil }

func (s *System) deviceCall(ctx context.Context, deviceID, op string, in any, out any) error {
	kind, err := s.kindOf(deviceID)
	if err != nil {
		return err
	}
	if b, _ := s.cfg.Registry.Lookup(kind); !isConnectable(b) {
		return fmt.Errorf("%w: %s is a %s, not a device", ErrBadRequest, deviceID, kind)
	}
	var body []byte
	if in != nil {
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
	}
	res, err := s.call(ctx, deviceID, kind, op, body, nil)
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(res, out)
}

func newMessageID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// inbox handles the inbox operations inside the device grain.
func (g *grain) inbox(_ actor.Context, op string, body []byte) ([]byte, error) {
	msgs, err := g.sys.inboxStore().Inbox(g.id)
	if err != nil {
		return nil, fmt.Errorf("inbox of %s: %w", g.id, err)
	}
	now := g.now()
	var ops []persistence.Op
	var pending []persistence.InboxMessage
	var maxSeq uint64
	for _, m := range msgs {
		maxSeq = max(maxSeq, m.Seq)
		switch {
		case m.State == "pending" && !m.ExpiresAt.After(now):
			m.State = "expired"
			ops = append(ops, persistence.PutInbox(m))
		case m.State == "pending":
			pending = append(pending, m)
		case m.State != "pending" && now.Sub(completedAt(m)) > completedRetention:
			ops = append(ops, persistence.DeleteInbox(g.id, m.ID))
		}
	}
	var result any
	var events []Event
	switch op {
	case opInboxSend:
		var in OutgoingMessage
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, fmt.Errorf("%w: message: %v", ErrBadRequest, err)
		}
		if len(pending) >= MaxPendingPerDevice {
			return nil, fmt.Errorf("%w: device %s already has %d pending messages", ErrThrottled, g.id, len(pending))
		}
		m := persistence.InboxMessage{ID: newMessageID(), DeviceID: g.id, Payload: in.Payload, Properties: in.Properties,
			EnqueuedAt: now, ExpiresAt: now.Add(in.TTL), State: "pending", Seq: maxSeq + 1}
		ops = append(ops, persistence.PutInbox(m))
		result = m
		events = append(events, Event{Type: EventInbox, Entity: g.id, Kind: g.kind, Version: g.tw.Version(), TS: now})
	case opInboxPending:
		if pending == nil {
			pending = []persistence.InboxMessage{}
		}
		result = pending
	case opInboxDelivered:
		var in struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(body, &in)
		found := false
		for _, m := range msgs {
			if m.ID == in.ID {
				found = true
				if m.State == "pending" {
					m.State, m.DeliveredAt = "delivered", now
					ops = append(ops, persistence.PutInbox(m))
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: message %s of %s", ErrNotFound, in.ID, g.id)
		}
		result = map[string]string{"state": "delivered"}
	}
	if len(ops) > 0 {
		cctx, cancel := g.commitCtx()
		defer cancel()
		if err := g.storeCommit(cctx, "inbox of", ops...); err != nil {
			return nil, err
		}
	}
	for _, e := range events {
		g.sys.publish(e)
	}
	return json.Marshal(result)
}

func completedAt(m persistence.InboxMessage) time.Time {
	if !m.DeliveredAt.IsZero() {
		return m.DeliveredAt
	}
	return m.ExpiresAt
}

// Machine-to-machine grants ---------------------------------------------

// Grant lets grantee read device's telemetry live over MQTT
// (subscribe to devices/{device}/messages/events/#).
func (s *System) Grant(ctx context.Context, device, grantee string) error {
	for _, id := range []string{device, grantee} {
		if _, err := s.GetEntity(ctx, id); err != nil {
			return err
		}
	}
	doc, _ := json.Marshal(map[string]any{"grantedAt": s.cfg.Now().UTC()})
	key := device + "/" + grantee
	return s.commitCatalog(ctx, persistence.PutDoc(persistence.BucketGrants, key, doc), untombstone("grants/"+key))
}

// Revoke withdraws a grant.
func (s *System) Revoke(ctx context.Context, device, grantee string) error {
	if _, err := s.store.GetDoc(persistence.BucketGrants, device+"/"+grantee); err != nil {
		return fmt.Errorf("%w: no grant of %s to %s", ErrNotFound, device, grantee)
	}
	key := device + "/" + grantee
	return s.commitCatalog(ctx, persistence.DeleteDoc(persistence.BucketGrants, key), s.tombstone("grants/"+key))
}

// Grants lists who may read a device's telemetry.
func (s *System) Grants(ctx context.Context, device string) ([]string, error) {
	if _, err := s.GetEntity(ctx, device); err != nil {
		return nil, err
	}
	docs, err := s.store.ListDocs(persistence.BucketGrants, device+"/")
	if err != nil {
		return nil, err
	}
	out := []string{}
	for k := range docs {
		out = append(out, k[len(device)+1:])
	}
	return out, nil
}

// MayRead reports whether subscriber was granted device's telemetry.
func (s *System) MayRead(_ context.Context, subscriber, device string) (bool, error) {
	_, err := s.store.GetDoc(persistence.BucketGrants, device+"/"+subscriber)
	if errors.Is(err, persistence.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// MayActFor reports whether device is connectedVia gateway.
func (s *System) MayActFor(_ context.Context, gateway, device string) (bool, error) {
	e, err := s.store.GetEntity(device)
	if errors.Is(err, persistence.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return e.ConnectedVia == gateway, nil
}
