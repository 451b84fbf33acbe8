package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// ErrBadFrame is the cause of every refusal of a client frame: a refused
// frame's error has code errcode.BadRequest (the client reads
// "bad_request") and matches ErrBadFrame with errors.Is.
var ErrBadFrame = errors.New("bad frame")

// badFrame returns the error refusing a frame, reading "bad frame: <why>".
func badFrame(format string, a ...any) error {
	return &errcode.Error{Code: errcode.BadRequest, Msg: ErrBadFrame.Error() + ": " + fmt.Sprintf(format, a...), Err: ErrBadFrame}
}

// Frame is a client request (CONTRACT 6).
type Frame struct {
	ID             json.RawMessage `json:"id"`
	Op             string          `json:"op"`
	Entity         string          `json:"entity,omitempty"`
	Subtree        bool            `json:"subtree,omitempty"`
	Events         []string        `json:"events,omitempty"`
	Sub            string          `json:"sub,omitempty"`
	Desired        json.RawMessage `json:"desired,omitempty"`
	Version        *int64          `json:"version,omitempty"`
	Method         string          `json:"method,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	TimeoutSeconds int             `json:"timeoutSeconds,omitempty"`
	// Name and Args of an entity operation ("call", CONTRACT section 7).
	Name string          `json:"name,omitempty"`
	Args json.RawMessage `json:"args,omitempty"`
}

// EventTypes a subscription may ask for.
var EventTypes = map[string]bool{"twin": true, "telemetry": true, "alert": true, "connection": true,
	"rollup": true, "topology": true, "rule": true, "action": true, "validation": true, "job": true}

// ParseFrame decodes and validates a client frame. It is pure: every input
// yields a Frame or a bad-request error wrapping ErrBadFrame (with the
// frame's id when it could be read, so the error reply can be correlated).
func ParseFrame(b []byte) (Frame, error) {
	var f Frame
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		// Try to recover the id for the reply.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(b, &idOnly)
		return Frame{ID: idOnly.ID}, badFrame("%v", err)
	}
	if dec.More() {
		return Frame{ID: f.ID}, badFrame("trailing data after the frame")
	}
	bad := func(format string, a ...any) (Frame, error) {
		return Frame{ID: f.ID}, badFrame(format, a...)
	}
	if len(f.ID) == 0 {
		return bad("\"id\" is required")
	}
	switch f.Op {
	case "subscribe":
		if f.Entity == "" {
			return bad("subscribe needs \"entity\"")
		}
		for _, e := range f.Events {
			if !EventTypes[e] {
				return bad("unknown event type %q", e)
			}
		}
	case "unsubscribe":
		if f.Sub == "" {
			return bad("unsubscribe needs \"sub\"")
		}
	case "get":
		if f.Entity == "" {
			return bad("get needs \"entity\"")
		}
	case "patch":
		if f.Entity == "" || len(f.Desired) == 0 || f.Desired[0] != '{' {
			return bad("patch needs \"entity\" and a \"desired\" object")
		}
	case "invoke":
		if f.Entity == "" || f.Method == "" {
			return bad("invoke needs \"entity\" and \"method\"")
		}
		if f.TimeoutSeconds == 0 {
			f.TimeoutSeconds = 30
		}
		if f.TimeoutSeconds < 5 || f.TimeoutSeconds > 300 {
			return bad("timeoutSeconds must be between 5 and 300")
		}
	case "call":
		if f.Entity == "" || f.Name == "" {
			return bad("call needs \"entity\" and \"name\"")
		}
	case "":
		return bad("\"op\" is required")
	default:
		return bad("unknown op %q", f.Op)
	}
	return f, nil
}
