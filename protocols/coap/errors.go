package coap

import (
	"errors"
	"unicode/utf8"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Sentinel errors. A Backend returns errors that carry an errcode.Code;
// the adapter's own refusals carry codes too, so errors.Is(err,
// ErrUnauthorized) holds for every credentials failure.
var (
	// ErrInsecure: a plain CoAP listener off loopback without Insecure.
	ErrInsecure = errors.New("coap: plain CoAP off loopback")
	// ErrBadRequest: a malformed request or payload (4.00).
	ErrBadRequest = errcode.ErrBadRequest
	// ErrUnauthorized: no or bad credentials (4.01).
	ErrUnauthorized = errcode.ErrUnauthorized
	// ErrForbidden: another device's resource (4.03).
	ErrForbidden = errcode.ErrForbidden
	// ErrNotFound: an unknown resource or message (4.04).
	ErrNotFound = errcode.ErrNotFound
	// ErrTooLarge: a payload over the limit (4.13).
	ErrTooLarge = errcode.ErrTooLarge
	// ErrThrottled: over the device's message rate (4.29).
	ErrThrottled = errcode.ErrThrottled
)

// codeOf is the adapter's one mapping from an error to the CoAP response
// code a device reads (CONTRACT section 10). A refusal the device can only
// retry (unavailable, internal) is a 5.xx, so it retries later.
func codeOf(err error) codes.Code {
	switch errcode.Of(err).PublicCode() {
	case errcode.BadRequest:
		return codes.BadRequest
	case errcode.Unauthorized:
		return codes.Unauthorized
	case errcode.Forbidden:
		return codes.Forbidden
	case errcode.NotFound, errcode.UnknownOp:
		return codes.NotFound
	case errcode.TooLarge:
		return codes.RequestEntityTooLarge
	case errcode.Throttled:
		return codes.TooManyRequests
	case errcode.Precondition:
		return codes.PreconditionFailed
	case errcode.Conflict:
		return codes.Conflict
	case errcode.Unavailable, errcode.NotConnected:
		return codes.ServiceUnavailable
	case errcode.Timeout:
		return codes.GatewayTimeout
	default:
		return codes.InternalServerError
	}
}

// maxDiagnostic bounds a diagnostic payload.
const maxDiagnostic = 200

// diagnostic is the diagnostic payload of an error response (RFC 7252
// section 5.5.2): UTF-8 text saying why, at most limit bytes, cut at a
// character boundary.
func diagnostic(err error, limit int) []byte {
	msg := errcode.Message(err)
	limit = min(limit, maxDiagnostic)
	if limit <= 0 {
		return nil
	}
	if len(msg) <= limit {
		return []byte(msg)
	}
	b := []byte(msg[:limit])
	for len(b) > 0 && !utf8.Valid(b) {
		b = b[:len(b)-1]
	}
	return b
}
