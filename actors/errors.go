package actors

import (
	"errors"
	"fmt"
)

// Sentinel errors returned by the System. Callers test them with errors.Is;
// the API maps them to HTTP statuses.
var (
	// ErrNotFound: the entity, device or twin does not exist.
	ErrNotFound = errors.New("not found")
	// ErrBadRequest: the request is malformed (bad JSON, unknown kind, ...).
	ErrBadRequest = errors.New("bad request")
	// ErrConflict: the request conflicts with the current state (a kind
	// change, deleting an entity that has children, a parent cycle).
	ErrConflict = errors.New("conflict")
	// ErrPrecondition: the If-Match version does not match the twin.
	ErrPrecondition = errors.New("version mismatch")
	// ErrTooLarge: the change would exceed a size or depth limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: the node is shutting down or the grain could not be reached.
	ErrUnavailable = errors.New("unavailable")
	// ErrNotConnected: the device has no live session.
	ErrNotConnected = errors.New("device not connected")
	// ErrTimeout: the device did not answer in time.
	ErrTimeout = errors.New("device timeout")
	// ErrThrottled: a limit on pending messages or rate was reached.
	ErrThrottled = errors.New("throttled")
	// ErrFenced: the grain's activation lost its ownership to a newer one
	// (another node claimed the grain); the caller retries and reaches the
	// new owner. It is a kind of ErrUnavailable to HTTP clients (503).
	ErrFenced = fmt.Errorf("%w: grain moved to another node", ErrUnavailable)
)

// codeOf maps a sentinel to the wire code carried in a Response, so an error
// crossing nodes comes back as the same sentinel.
var sentinelCodes = []struct {
	err    error
	code   string
	status int32
}{
	{ErrNotFound, "not_found", 404},
	{ErrBadRequest, "bad_request", 400},
	{ErrConflict, "conflict", 409},
	{ErrPrecondition, "precondition_failed", 412},
	{ErrFenced, "fenced", 503},
	{ErrTooLarge, "too_large", 413},
	{ErrThrottled, "throttled", 429},
	{ErrUnavailable, "unavailable", 503},
	{ErrNotConnected, "not_connected", 404},
	{ErrTimeout, "timeout", 504},
}

func statusOf(err error) (int32, string) {
	for _, s := range sentinelCodes {
		if errors.Is(err, s.err) {
			return s.status, s.code
		}
	}
	return 500, "internal"
}

func errorOf(code, msg string) error {
	for _, s := range sentinelCodes {
		if s.code == code {
			if msg == "" || msg == s.err.Error() {
				return s.err
			}
			return fmt.Errorf("%w: %s", s.err, msg)
		}
	}
	return fmt.Errorf("grain error: %s", msg)
}
