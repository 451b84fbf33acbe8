package actors

import (
	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Sentinel errors returned by the System: the codes of package errcode
// under their historical names. Callers test them with errors.Is (any error
// of the same code matches) or read the code with errcode.Of; each edge
// maps the code once (api to HTTP, protocols/mqtt to reason codes).
var (
	// ErrNotFound: the entity, device or twin does not exist.
	ErrNotFound = errcode.ErrNotFound
	// ErrBadRequest: the request is malformed (bad JSON, unknown kind, ...).
	ErrBadRequest = errcode.ErrBadRequest
	// ErrConflict: the request conflicts with the current state (a kind
	// change, deleting an entity that has children, a parent cycle).
	ErrConflict = errcode.ErrConflict
	// ErrPrecondition: the If-Match version does not match the twin.
	ErrPrecondition = errcode.ErrPrecondition
	// ErrTooLarge: the change would exceed a size or depth limit.
	ErrTooLarge = errcode.ErrTooLarge
	// ErrUnavailable: the node is shutting down or the grain could not be reached.
	ErrUnavailable = errcode.ErrUnavailable
	// ErrNotConnected: the device has no live session.
	ErrNotConnected = errcode.ErrNotConnected
	// ErrTimeout: the device did not answer in time.
	ErrTimeout = errcode.ErrTimeout
	// ErrThrottled: a limit on pending messages or rate was reached.
	ErrThrottled = errcode.ErrThrottled
	// ErrFenced: the grain's activation lost its ownership to a newer one
	// (another node claimed the grain); the caller retries and reaches the
	// new owner. errors.Is(ErrFenced, ErrUnavailable) holds (503 to HTTP
	// clients).
	ErrFenced = errcode.ErrFenced
	// ErrUnknownOp: the entity's kind has no operation of that name.
	ErrUnknownOp = errcode.ErrUnknownOp
)
