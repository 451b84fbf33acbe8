package coap

import (
	"context"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/protocols/sas"
)

// Sizes of the adapter's bounded caches.
const (
	authCacheSize = 16384 // verified SAS tokens
	keyCacheSize  = 16384 // which PSK a device last completed a handshake with
)

var (
	errNoToken = errors.New("no sas query option: a request over plain CoAP carries a SAS token as ?sas=… (or use CoAP over DTLS)")
	errExpired = errors.New("SAS token expired")
)

// principal is who sent a request: the device of its SAS token or of its
// DTLS session.
type principal struct {
	device string
	proto  string    // "coap" or "coaps"
	until  time.Time // the SAS token's expiry; zero for a DTLS session
}

// authCache remembers verified SAS tokens until they expire, so that a
// device sending one message after another is not looked up and verified
// each time. Any identity event (a device disabled, deleted, given new
// keys) empties it.
type authCache struct {
	s     *Server
	cache *lru.Cache[string, principal]
}

func newAuthCache(s *Server, size int) (*authCache, error) {
	c, err := lru.New[string, principal](size)
	if err != nil {
		return nil, err
	}
	return &authCache{s: s, cache: c}, nil
}

// purge forgets every verified token.
func (a *authCache) purge() { a.cache.Purge() }

// verify checks a SAS token against the identity registry and returns its
// device. Its errors are Unauthorized.
func (a *authCache) verify(ctx context.Context, token string) (principal, error) {
	now := a.s.cfg.Now()
	if p, ok := a.cache.Get(token); ok {
		if now.Before(p.until) {
			return p, nil
		}
		a.cache.Remove(token)
		return principal{}, errcode.Wrap(errcode.Unauthorized, fmt.Errorf("%w at %s", errExpired, p.until.UTC().Format(time.RFC3339)))
	}
	t, err := sas.Parse(token)
	if err != nil {
		return principal{}, errcode.Wrap(errcode.Unauthorized, err)
	}
	device, ok := sas.DeviceOf(t.Resource)
	if !ok {
		return principal{}, errcode.New(errcode.Unauthorized, "SAS token resource %q names no device", t.Resource)
	}
	idn, err := a.s.backend.Identity(ctx, device)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return principal{}, errcode.New(errcode.Unauthorized, "unknown device %q", device)
		}
		return principal{}, err // the registry failed: 5.03, the device retries
	}
	if !idn.Enabled {
		return principal{}, errcode.New(errcode.Unauthorized, "device %s is disabled", device)
	}
	if err := sas.VerifyLifetime(token, device, []string{idn.PrimaryKey, idn.SecondaryKey}, now, a.s.cfg.MaxTokenLifetime); err != nil {
		if errors.Is(err, sas.ErrExpired) {
			err = fmt.Errorf("%w: %v", errExpired, err)
		}
		return principal{}, errcode.Wrap(errcode.Unauthorized, err)
	}
	p := principal{device: device, proto: "coap", until: t.Expiry}
	a.cache.Add(token, p)
	return p, nil
}

// authenticate returns who sent r: the DTLS session's device, or the
// device of the SAS token in its "sas" query option.
func (s *Server) authenticate(ctx context.Context, r *pool.Message, ep *endpoint) (principal, error) {
	if ep.secure {
		return principal{device: ep.device, proto: "coaps"}, nil
	}
	q, err := ParseQuery(queryOf(r))
	if err != nil {
		return principal{}, err
	}
	if q.SAS == "" {
		return principal{}, errcode.Wrap(errcode.Unauthorized, errNoToken)
	}
	return s.auth.verify(ctx, q.SAS)
}

// authorize lets a device use its own resources, and a gateway the
// telemetry and cloud-to-device messages of the devices connected via it
// (as over MQTT); anything else is Forbidden.
func (s *Server) authorize(ctx context.Context, p principal, t Target) error {
	if p.device == t.Device {
		return nil
	}
	switch t.Resource {
	case ResourceTelemetry, ResourceInbox, ResourceMessage:
		ok, err := s.backend.MayActFor(ctx, p.device, t.Device)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if ok {
			return nil
		}
	}
	return errcode.New(errcode.Forbidden, "device %s may not use the resources of %s", p.device, t.Device)
}
