package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// ErrorBody is the error object of every failed request, REST and
// WebSocket alike (CONTRACT sections 2 and 6): {"code":"...","message":"..."}.
// Code is the public name of an errcode.Code ("not_found", …).
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorOf is the one mapping from an error to what HTTP and WebSocket
// clients read: the status of its errcode.Code and its body. The code is
// the public one (a fenced grain reads as "unavailable"); the message is
// the error's text, used once, never prefixed again with the code's name.
//
// An error without a code is internal, except a context's own errors: a
// deadline that passed is a timeout, a cancelled request (the client went
// away, the node is stopping) is unavailable.
func ErrorOf(err error) (status int, body ErrorBody) {
	c := errcode.Of(err)
	if c == errcode.Internal {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			c = errcode.Timeout
		case errors.Is(err, context.Canceled):
			c = errcode.Unavailable
		}
	}
	c = c.PublicCode()
	return c.HTTPStatus(), ErrorBody{Code: c.String(), Message: errcode.Message(err)}
}

// WriteError writes err as the JSON error of CONTRACT section 2, with the
// status and body of [ErrorOf].
func WriteError(w http.ResponseWriter, err error) {
	status, body := ErrorOf(err)
	writeJSON(w, status, struct {
		Error ErrorBody `json:"error"`
	}{body})
}

// writeJSON writes v as a JSON answer, encoded by [Marshal] (no HTML
// escaping, a stored document included).
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if raw, ok := v.(json.RawMessage); ok {
		w.WriteHeader(status)
		_, _ = w.Write(UnescapeHTML(raw))
		return
	}
	b, err := Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encode the answer"}}`)
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
