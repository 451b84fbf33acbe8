// Package errcode is the one vocabulary of failure in twinmesh. An error
// that crosses a package boundary carries a [Code]; each edge maps the code
// once to what its peers understand (HTTP status in api, a reason code in
// protocols/mqtt, a CoAP code, an AMQP condition, a field of the protobuf
// Response between grains and members). Nothing below an edge knows about
// HTTP.
//
// Build errors with [New] or [Wrap]; test them with errors.Is against the
// sentinels ([ErrNotFound], …), which match any error carrying the same
// code, or read the code with [Of].
package errcode

import (
	"errors"
	"fmt"
)

// Code classifies a failure. The numeric values travel between members in
// actorspb.Response.code, so they never change once released.
type Code int32

// The codes. OK is the zero value and means no error.
const (
	OK Code = iota
	// Internal: a bug or an unexpected failure; not the caller's fault.
	Internal
	// BadRequest: the request is malformed (bad JSON, unknown kind, …).
	BadRequest
	// NotFound: the entity, device, twin, rule or message does not exist.
	NotFound
	// Conflict: the request conflicts with the current state.
	Conflict
	// Precondition: an If-Match version does not match the twin.
	Precondition
	// TooLarge: a payload or a change exceeds a size or depth limit.
	TooLarge
	// Throttled: a rate or a pending-work limit was reached.
	Throttled
	// Unavailable: the node is starting or stopping, or the grain's replicas
	// cannot be reached; the caller may retry.
	Unavailable
	// Fenced: the grain's activation lost its ownership to a newer one; the
	// caller retries and reaches the new owner. To clients it is Unavailable.
	Fenced
	// NotConnected: the device has no live session.
	NotConnected
	// Timeout: the device did not answer in time.
	Timeout
	// UnknownOp: the entity's kind has no operation of that name.
	UnknownOp
	// Unauthorized: no or bad credentials.
	Unauthorized
	// Forbidden: valid credentials that do not allow the request.
	Forbidden
)

var names = [...]string{
	OK:           "ok",
	Internal:     "internal",
	BadRequest:   "bad_request",
	NotFound:     "not_found",
	Conflict:     "conflict",
	Precondition: "precondition_failed",
	TooLarge:     "too_large",
	Throttled:    "throttled",
	Unavailable:  "unavailable",
	Fenced:       "fenced",
	NotConnected: "not_connected",
	Timeout:      "timeout",
	UnknownOp:    "unknown_op",
	Unauthorized: "unauthorized",
	Forbidden:    "forbidden",
}

// String returns the code's stable machine-readable name, as it appears in
// the REST error body ("not_found", "precondition_failed", …).
func (c Code) String() string {
	if c >= 0 && int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("code(%d)", int32(c))
}

// Parse returns the code named s ("not_found"), or Internal.
func Parse(s string) Code {
	for c, n := range names {
		if n == s {
			return Code(c)
		}
	}
	return Internal
}

// Error is an error with a code. Msg is what a user reads; it is not
// prefixed with the code's name, so wrapping never repeats words.
type Error struct {
	Code Code
	Msg  string
	// Err is the cause, if any; it is reachable with errors.Unwrap but not
	// part of Msg unless the constructor put it there.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Msg == "" {
		return defaultMsg(e.Code)
	}
	return e.Msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) true for every error of code
// NotFound. Fenced is also Unavailable, as clients see it.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t.Msg != "" || t.Err != nil {
		return false
	}
	return t.Code == e.Code || (t.Code == Unavailable && e.Code == Fenced)
}

// New returns an error of code c with a formatted message. A %w verb in
// format wraps its argument as the cause.
func New(c Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: c, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// Wrap gives err the code c, keeping err's message; a nil err stays nil.
// When err already carries a code, Wrap keeps err's code only if c is
// Internal.
func Wrap(c Code, err error) error {
	if err == nil {
		return nil
	}
	if c == Internal {
		if has := Of(err); has != Internal {
			return err
		}
	}
	return &Error{Code: c, Msg: err.Error(), Err: err}
}

// Of returns the code err carries: the outermost [*Error] in its chain, OK
// for nil, and Internal for an error without a code.
func Of(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Message returns what a user should read about err: its text, or the
// code's default text for a bare sentinel.
func Message(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func defaultMsg(c Code) string {
	switch c {
	case NotFound:
		return "not found"
	case BadRequest:
		return "bad request"
	case Conflict:
		return "conflict"
	case Precondition:
		return "version mismatch"
	case TooLarge:
		return "too large"
	case Throttled:
		return "throttled"
	case Unavailable:
		return "unavailable"
	case Fenced:
		return "grain moved to another node"
	case NotConnected:
		return "device not connected"
	case Timeout:
		return "device timeout"
	case UnknownOp:
		return "unknown operation"
	case Unauthorized:
		return "unauthorized"
	case Forbidden:
		return "forbidden"
	}
	return "internal error"
}

// Sentinels, one per code, for errors.Is. They match every error of their
// code whatever its message.
var (
	ErrInternal     = &Error{Code: Internal}
	ErrBadRequest   = &Error{Code: BadRequest}
	ErrNotFound     = &Error{Code: NotFound}
	ErrConflict     = &Error{Code: Conflict}
	ErrPrecondition = &Error{Code: Precondition}
	ErrTooLarge     = &Error{Code: TooLarge}
	ErrThrottled    = &Error{Code: Throttled}
	ErrUnavailable  = &Error{Code: Unavailable}
	ErrFenced       = &Error{Code: Fenced}
	ErrNotConnected = &Error{Code: NotConnected}
	ErrTimeout      = &Error{Code: Timeout}
	ErrUnknownOp    = &Error{Code: UnknownOp}
	ErrUnauthorized = &Error{Code: Unauthorized}
	ErrForbidden    = &Error{Code: Forbidden}
)

// HTTPStatus is the HTTP status of a code (CONTRACT section 2). It lives
// here, beside the codes, because REST, the WebSocket API and the IoT Hub
// service surface all answer in HTTP terms; other edges map codes
// themselves.
func (c Code) HTTPStatus() int {
	switch c {
	case OK:
		return 200
	case BadRequest:
		return 400
	case Unauthorized:
		return 401
	case Forbidden:
		return 403
	case NotFound, NotConnected, UnknownOp:
		return 404
	case Conflict:
		return 409
	case Precondition:
		return 412
	case TooLarge:
		return 413
	case Throttled:
		return 429
	case Unavailable, Fenced:
		return 503
	case Timeout:
		return 504
	}
	return 500
}

// PublicCode is the code clients see: Fenced is an internal retry signal and
// shows as Unavailable.
func (c Code) PublicCode() Code {
	if c == Fenced {
		return Unavailable
	}
	return c
}
