// Package mqtt makes a twinmesh node an MQTT endpoint for devices written
// for Azure IoT Hub's MQTT interface: an embedded mochi-mqtt v2 broker whose
// hooks authenticate SAS tokens against the identity registry, confine each
// device to its own topics (a gateway also to its children's, a granted
// subscriber to another device's telemetry), hand telemetry and twin
// requests to the actor layer through the Backend interface, and answer on
// the $iothub response topics the way the hub does.
//
// Delivery guarantees: a QoS 1 telemetry message is acknowledged (PUBACK)
// only after Backend.Telemetry returned, i.e. after the grain committed it
// durably. QoS 0 messages go through a bounded queue and are dropped (and
// counted) when it is full, so slow storage never blocks a QoS 0 publisher.
// Cloud-to-device messages are published at QoS 1 and reported delivered
// only when the device acknowledges them; unacknowledged ones are sent again
// on its next subscription.
//
// Choices where IoT Hub's documentation leaves room:
//   - Throttling: a publish over the per-device rate is dropped and counted;
//     an MQTT 5 client gets PUBACK with reason 0x97 (quota exceeded), an
//     MQTT 3.1.1 client gets no PUBACK for it and may retransmit later. A
//     throttled twin request is answered with status 429, as the hub does.
//   - QoS 1 telemetry the backend cannot store is not acknowledged, so
//     nothing unacknowledged is lost and nothing acknowledged is missing. An
//     MQTT 5 client reads why in the PUBACK reason code: 0x80 unspecified
//     error when storage failed or the grain was unavailable (retransmit),
//     0x99 payload format invalid for telemetry refused as malformed, 0x87
//     not authorized when the device is gone.
//
// Errors: the Backend's errors carry an errcode.Code; one function
// (errors.go) maps a code to the status of a $iothub twin response (the
// code's HTTP status, as IoT Hub answers) and to the PUBACK reason code.
package mqtt
