package coap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinmesh/twinmesh/protocols/devicerate"
)

// Identity is what the adapter needs of a device identity.
type Identity struct {
	DeviceID, PrimaryKey, SecondaryKey string
	Enabled                            bool
}

// Telemetry is one device-to-cloud message.
type Telemetry struct {
	TS      time.Time
	Payload []byte
	// ContentType is the media type of the request's Content-Format
	// ("application/json", "text/plain;charset=utf-8", …), "" when absent.
	ContentType string
	// Confirmable is true for a CON request (stored before the answer),
	// false for a NON one (queued, best effort).
	Confirmable bool
}

// Message is a pending cloud-to-device message.
type Message struct {
	ID         string
	Payload    []byte
	Properties map[string]string
}

// Backend is implemented by the actor layer. Every method may block on IO,
// must honour ctx and must be safe for concurrent use. Its errors carry an
// errcode.Code, which the adapter maps once to a CoAP response code
// (errors.go).
type Backend interface {
	Identity(ctx context.Context, deviceID string) (Identity, error)
	// MayActFor reports whether deviceID is connectedVia gatewayID.
	MayActFor(ctx context.Context, gatewayID, deviceID string) (bool, error)
	// Telemetry returns after the message is durably stored.
	Telemetry(ctx context.Context, deviceID string, m Telemetry) error
	// GetTwin returns the desired and reported sections, each with "$version".
	GetTwin(ctx context.Context, deviceID string) (desired, reported json.RawMessage, err error)
	// PatchReported applies a merge patch and returns the reported $version.
	PatchReported(ctx context.Context, deviceID string, patch []byte) (int64, error)
	// SetSession records that the device is connected or not, over
	// protocol ("coap" or "coaps"). A disconnection must apply only while
	// the twin says the device is connected through that protocol to this
	// node.
	SetSession(ctx context.Context, deviceID string, connected bool, protocol string) error
	// PendingMessages returns the undelivered, unexpired cloud-to-device
	// messages in enqueue order.
	PendingMessages(ctx context.Context, deviceID string) ([]Message, error)
	// CompleteMessage marks a message delivered; an unknown one is NotFound.
	CompleteMessage(ctx context.Context, deviceID, messageID string) error
}

// Config configures a Server. Zero values mean the defaults.
type Config struct {
	// Addr is the plain CoAP (UDP) listener, "" disables it. Requests on it
	// carry a SAS token in the "sas" URI query, in clear: an address off
	// loopback is refused unless Insecure is set.
	Addr string
	// DTLSAddr is the CoAP over DTLS listener with pre-shared keys (the
	// identity is the device ID, the key its primary or secondary key
	// string); "" disables it.
	DTLSAddr string
	// Insecure accepts a plain Addr that is not a loopback address.
	Insecure bool
	// MaxPayload is the largest request body, block-wise ones included.
	// Default 256 KiB.
	MaxPayload int
	// Rate is the per-device rate limit shared with the other protocol
	// adapters; nil means one of the adapter's own, from MessageRate
	// (default 100/s) and Burst (default 200).
	Rate        *devicerate.Limiter
	MessageRate float64
	Burst       int
	// NonQueue bounds the non-confirmable telemetry waiting to be stored
	// (default 10,000); NonWorkers store it (default 64).
	NonQueue, NonWorkers int
	// RequestTimeout bounds each Backend call. Default 10 s.
	RequestTimeout time.Duration
	// MaxTokenLifetime refuses SAS tokens that expire further ahead than
	// it; 0 allows any.
	MaxTokenLifetime time.Duration
	// PresenceWindow: a device that sent a request within it counts as
	// connected (as does one with an observation or a DTLS session).
	// Default 5 minutes.
	PresenceWindow time.Duration
	// SessionIdle is how long an endpoint without observations keeps its
	// state (the exchange cache that answers retransmissions, a DTLS
	// session) after its last datagram. Default 5 minutes; at least
	// EXCHANGE_LIFETIME (247 s), so that a retransmission is always
	// answered from the cache.
	SessionIdle time.Duration
	// ObserveRefresh: every observer gets a confirmable notification at
	// least this often, the current representation again if nothing
	// changed; one that does not acknowledge it is dropped. Notifications
	// carry a Max-Age of ObserveRefresh plus a minute, after which a
	// client re-registers. Default 2 minutes.
	ObserveRefresh time.Duration
	// MaxObservers caps the observations held by the node (default
	// 100,000) and by one device (default 8); a registration over a cap is
	// answered without the Observe option, as RFC 7641 prescribes.
	MaxObservers, MaxObserversPerDevice int
	// AckTimeout and MaxRetransmit are the CoAP transmission parameters
	// of the node's confirmable notifications (RFC 7252 defaults: 2 s, 4).
	AckTimeout    time.Duration
	MaxRetransmit int
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
	// Now is the clock for token expiry and presence; nil means time.Now.
	Now func() time.Time
}

// exchangeLifetime is RFC 7252's EXCHANGE_LIFETIME with the default
// transmission parameters.
const exchangeLifetime = 247 * time.Second

func (c *Config) defaults() error {
	if c.Addr == "" && c.DTLSAddr == "" {
		return errors.New("coap: no listener configured")
	}
	if err := CheckAddr(c.Addr, c.Insecure); err != nil {
		return err
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 256 << 10
	}
	if c.MessageRate <= 0 {
		c.MessageRate = 100
	}
	if c.Burst <= 0 {
		c.Burst = 200
	}
	if c.Rate == nil {
		c.Rate = devicerate.New(c.MessageRate, c.Burst)
	}
	if c.NonQueue <= 0 {
		c.NonQueue = 10000
	}
	if c.NonWorkers <= 0 {
		c.NonWorkers = 64
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.PresenceWindow <= 0 {
		c.PresenceWindow = 5 * time.Minute
	}
	if c.SessionIdle <= 0 {
		c.SessionIdle = 5 * time.Minute
	}
	c.SessionIdle = max(c.SessionIdle, exchangeLifetime)
	if c.ObserveRefresh <= 0 {
		c.ObserveRefresh = 2 * time.Minute
	}
	if c.MaxObservers <= 0 {
		c.MaxObservers = 100000
	}
	if c.MaxObserversPerDevice <= 0 {
		c.MaxObserversPerDevice = 8
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 2 * time.Second
	}
	if c.MaxRetransmit <= 0 {
		c.MaxRetransmit = 4
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// CheckAddr refuses a plain CoAP listener address whose host is not a
// loopback address unless insecure is set: SAS tokens would cross the
// network in clear. An empty address (no listener) is fine. The error
// wraps ErrInsecure.
func CheckAddr(addr string, insecure bool) error {
	if addr == "" || insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("coap: address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s is not a loopback address, and plain CoAP carries SAS tokens in clear; use DTLS (--coaps), or acknowledge with --coap-insecure", ErrInsecure, addr)
}

// maxTransmitWait is how long a confirmable notification may wait for its
// acknowledgement: RFC 7252's MAX_TRANSMIT_WAIT for the parameters.
func (c *Config) maxTransmitWait() time.Duration {
	return time.Duration(float64(c.AckTimeout) * float64(int(1)<<(c.MaxRetransmit+1)-1) * 1.5)
}
