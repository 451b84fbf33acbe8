package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

func TestReply(t *testing.T) {
	tests := []struct {
		code   errcode.Code
		status int
		reason packets.Code
	}{
		{errcode.OK, 200, packets.CodeSuccess},
		{errcode.Internal, 500, packets.ErrUnspecifiedError},
		{errcode.BadRequest, 400, packets.ErrPayloadFormatInvalid},
		{errcode.NotFound, 404, packets.ErrNotAuthorized},
		{errcode.Conflict, 409, packets.ErrUnspecifiedError},
		{errcode.Precondition, 412, packets.ErrUnspecifiedError},
		{errcode.TooLarge, 413, packets.ErrPacketTooLarge},
		{errcode.Throttled, 429, packets.ErrQuotaExceeded},
		{errcode.Unavailable, 503, packets.ErrUnspecifiedError},
		{errcode.Fenced, 503, packets.ErrUnspecifiedError},
		{errcode.NotConnected, 404, packets.ErrUnspecifiedError},
		{errcode.Timeout, 504, packets.ErrUnspecifiedError},
		{errcode.UnknownOp, 404, packets.ErrUnspecifiedError},
		{errcode.Unauthorized, 401, packets.ErrNotAuthorized},
		{errcode.Forbidden, 403, packets.ErrNotAuthorized},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			var err error
			if tc.code != errcode.OK {
				// Wrapped as a Backend would: the code survives %w.
				err = fmt.Errorf("store telemetry: %w", errcode.New(tc.code, "device d1"))
			}
			status, reason := reply(err)
			if status != tc.status || reason != tc.reason {
				t.Fatalf("reply = %d %v, want %d %v", status, reason, tc.status, tc.reason)
			}
		})
	}
	if status, reason := reply(errors.New("disk on fire")); status != 500 || reason != packets.ErrUnspecifiedError {
		t.Fatalf("an error without a code: %d %v", status, reason)
	}
}

func TestSentinelsAreCodes(t *testing.T) {
	for name, tc := range map[string]struct {
		sentinel error
		code     errcode.Code
	}{
		"unknown device": {ErrUnknownDevice, errcode.NotFound},
		"not connected":  {ErrNotConnected, errcode.NotConnected},
		"timeout":        {ErrTimeout, errcode.Timeout},
		"bad request":    {ErrBadRequest, errcode.BadRequest},
		"too large":      {ErrTooLarge, errcode.TooLarge},
		"throttled":      {ErrThrottled, errcode.Throttled},
	} {
		t.Run(name, func(t *testing.T) {
			// What the actor layer returns matches without translation.
			err := fmt.Errorf("identity: %w", errcode.New(tc.code, "device d1"))
			if !errors.Is(err, tc.sentinel) || errcode.Of(tc.sentinel) != tc.code {
				t.Fatalf("%v does not match %v", err, tc.sentinel)
			}
		})
	}
}

func TestErrorBody(t *testing.T) {
	err := fmt.Errorf("%w: twin: section too large", errcode.ErrTooLarge)
	status, _ := reply(err)
	var body struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	if e := json.Unmarshal(errorBody(status, err), &body); e != nil {
		t.Fatal(e)
	}
	if body.ErrorCode != 413 || body.Message != "too large: twin: section too large" {
		t.Fatalf("body %+v", body)
	}
}

func TestInvokeMethodErrors(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0"}, struct{ Backend }{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.InvokeMethod(context.Background(), "d1", "reboot", nil)
	if !errors.Is(err, ErrNotConnected) || errcode.Of(err) != errcode.NotConnected {
		t.Fatalf("err = %v (%v), want not connected", err, errcode.Of(err))
	}
	if err.Error() != "device d1 is not connected" {
		t.Fatalf("message %q", err.Error())
	}
}
