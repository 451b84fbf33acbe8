package actors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/entity"
	"github.com/twinmesh/twinmesh/actors/plugin"
	"github.com/twinmesh/twinmesh/actors/rules"
	"github.com/twinmesh/twinmesh/persistence"
)

// Cloud-to-device inbox limits (IoT Hub's defaults).
const (
	DefaultMessageTTL   = time.Hour
	MaxMessageTTL       = 48 * time.Hour
	MaxPendingPerDevice = entity.MaxPendingPerDevice
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

// CheckMessageProperties refuses (ErrBadRequest) the application
// properties of a cloud-to-device message whose names are system
// properties, "$…" or "iothub-…": those are the node's to set. A sender's
// "$.mid" used to replace the message's own ID, so the device's
// acknowledgement never matched and the message came back on every
// subscription.
func CheckMessageProperties(props map[string]string) error {
	for k := range props {
		if rules.ReservedProperty(k) {
			return fmt.Errorf("%w: property %q is reserved: names starting with \"$\" or \"iothub-\" are system properties", ErrBadRequest, k)
		}
	}
	return nil
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
	if err := CheckMessageProperties(m.Properties); err != nil {
		return persistence.InboxMessage{}, err
	}
	var out persistence.InboxMessage
	err := s.deviceCall(ctx, deviceID, &actorspb.Request{Body: &actorspb.Request_InboxSend{InboxSend: &actorspb.InboxSend{
		Id: newMessageID(), Payload: m.Payload, Properties: m.Properties, TtlNanos: int64(m.TTL)}}}, &out)
	return out, err
}

// PendingMessages returns the device's undelivered, unexpired messages in
// enqueue order (expired ones are marked expired on the way).
func (s *System) PendingMessages(ctx context.Context, deviceID string) ([]persistence.InboxMessage, error) {
	var out []persistence.InboxMessage
	err := s.deviceCall(ctx, deviceID, &actorspb.Request{Body: &actorspb.Request_InboxPending{InboxPending: &actorspb.InboxPending{}}}, &out)
	return out, err
}

// MessageDelivered marks a message delivered (the device acknowledged it).
func (s *System) MessageDelivered(ctx context.Context, deviceID, messageID string) error {
	return s.deviceCall(ctx, deviceID, &actorspb.Request{Body: &actorspb.Request_InboxDelivered{InboxDelivered: &actorspb.InboxDelivered{Id: messageID}}}, nil)
}

// Messages lists a device's inbox with each message's outcome, as the
// device's grain (its owner) holds it.
func (s *System) Messages(ctx context.Context, deviceID string) ([]persistence.InboxMessage, error) {
	var out []persistence.InboxMessage
	if err := s.deviceCall(ctx, deviceID, &actorspb.Request{Body: &actorspb.Request_InboxList{InboxList: &actorspb.InboxList{}}}, &out); err != nil {
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

func (s *System) deviceCall(ctx context.Context, deviceID string, req *actorspb.Request, out any) error {
	kind, err := s.kindOf(deviceID)
	if err != nil {
		return err
	}
	if !s.cfg.Registry.Traits(kind).Has(plugin.Device) {
		return fmt.Errorf("%w: %s is a %s, not a device", ErrBadRequest, deviceID, kind)
	}
	res, err := s.call(ctx, deviceID, kind, req)
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(res.Body, out)
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

// MayActFor reports whether device is connectedVia gateway and enabled: a
// gateway must not publish for a device that was disabled (issue 12).
func (s *System) MayActFor(_ context.Context, gateway, device string) (bool, error) {
	e, err := s.store.GetEntity(device)
	if errors.Is(err, persistence.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if e.ConnectedVia != gateway {
		return false, nil
	}
	idn, err := s.store.GetIdentity(device)
	if errors.Is(err, persistence.ErrNotFound) {
		return true, nil // an entity without a device identity (not disabled)
	}
	if err != nil {
		return false, err
	}
	return idn.Status != "disabled", nil
}

// newMessageID returns a fresh cloud-to-device message ID, unique across
// members and restarts.
func newMessageID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
