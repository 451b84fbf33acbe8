package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/twinmesh/twinmesh/actors"
)

// Error is the JSON error body of every failed request:
// {"error":{"code":"...","message":"..."}}.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// ErrorCode returns the machine-readable code (used by the WebSocket hub).
func (e *Error) ErrorCode() string { return e.Code }

// errorFrom maps the actor layer's sentinels to statuses and codes.
func errorFrom(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	table := []struct {
		err    error
		status int
		code   string
	}{
		{actors.ErrNotFound, http.StatusNotFound, "not_found"},
		{actors.ErrBadRequest, http.StatusBadRequest, "bad_request"},
		{actors.ErrConflict, http.StatusConflict, "conflict"},
		{actors.ErrPrecondition, http.StatusPreconditionFailed, "precondition_failed"},
		{actors.ErrTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
		{actors.ErrThrottled, http.StatusTooManyRequests, "throttled"},
		{actors.ErrNotConnected, http.StatusNotFound, "not_connected"},
		{actors.ErrTimeout, http.StatusGatewayTimeout, "timeout"},
		{actors.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
		{context.DeadlineExceeded, http.StatusGatewayTimeout, "timeout"},
		{context.Canceled, http.StatusServiceUnavailable, "canceled"},
	}
	for _, t := range table {
		if errors.Is(err, t.err) {
			return &Error{Status: t.status, Code: t.code, Message: err.Error()}
		}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

func badRequest(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "bad_request", Message: msg}
}

func writeError(w http.ResponseWriter, err error) {
	e := errorFrom(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(map[string]*Error{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if raw, ok := v.(json.RawMessage); ok {
		_, _ = w.Write(raw)
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}
