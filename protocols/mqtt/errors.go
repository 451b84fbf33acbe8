package mqtt

import (
	"encoding/json"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/twinmesh/twinmesh/actors/errcode"
)

// Sentinel errors: the errcode sentinels under the names the adapter's
// callers know. A Backend returns errors that carry an errcode.Code (those
// of the actor layer do); errors.Is(err, ErrUnknownDevice) holds for every
// not-found error. The adapter's own errors carry codes too.
var (
	// ErrUnknownDevice: the device has no identity (errcode.NotFound).
	ErrUnknownDevice = errcode.ErrNotFound
	// ErrNotConnected: the device has no live session here, or is not
	// subscribed to direct methods (errcode.NotConnected).
	ErrNotConnected = errcode.ErrNotConnected
	// ErrTimeout: the device did not answer a direct method in time
	// (errcode.Timeout).
	ErrTimeout = errcode.ErrTimeout
	// ErrBadRequest: a malformed request or payload (errcode.BadRequest).
	ErrBadRequest = errcode.ErrBadRequest
	// ErrTooLarge: a payload over a limit (errcode.TooLarge).
	ErrTooLarge = errcode.ErrTooLarge
	// ErrThrottled: over the device's message rate (errcode.Throttled).
	ErrThrottled = errcode.ErrThrottled
)

// reply is the adapter's one mapping from an error to what a device reads:
// the status of a $iothub twin response (the HTTP status of its code, as
// IoT Hub answers) and the reason code of an MQTT 5 PUBACK refusing a
// publish. A refusal the device can do nothing about but retry
// (unavailable, internal, …) is "unspecified error", so it retransmits; one
// it must not repeat as is says why.
func reply(err error) (status int, reason packets.Code) {
	c := errcode.Of(err).PublicCode()
	switch c {
	case errcode.OK:
		reason = packets.CodeSuccess
	case errcode.BadRequest:
		reason = packets.ErrPayloadFormatInvalid
	case errcode.TooLarge:
		reason = packets.ErrPacketTooLarge
	case errcode.Throttled:
		reason = packets.ErrQuotaExceeded
	case errcode.NotFound, errcode.Unauthorized, errcode.Forbidden:
		reason = packets.ErrNotAuthorized
	default:
		reason = packets.ErrUnspecifiedError
	}
	return c.HTTPStatus(), reason
}

// errorBody is the body of a twin error response:
// {"errorCode":<status>,"message":"…"}.
func errorBody(status int, err error) []byte {
	b, _ := json.Marshal(map[string]any{"errorCode": status, "message": errcode.Message(err)})
	return b
}
