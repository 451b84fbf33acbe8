// Package coap makes a twinmesh node a CoAP (RFC 7252) endpoint for
// constrained devices — battery devices on 6LoWPAN, NB-IoT or LoRa links
// that cannot afford TCP, TLS or MQTT keep-alives — over plain UDP and over
// DTLS with pre-shared keys. It is built on github.com/plgd-dev/go-coap/v3
// (its DTLS is pion/dtls) and is a thin adapter over the same entity calls
// as protocols/mqtt (Backend), with the same limits: the per-device rate
// bucket shared with the other protocols (protocols/devicerate), the
// payload size, and the point counts the grain enforces.
//
// # Resources (CONTRACT section 10)
//
//	POST   /devices/{id}/messages/events                telemetry → 2.04
//	GET    /devices/{id}/twin                           {"desired":…,"reported":…} → 2.05
//	GET    /devices/{id}/twin/desired                   with Observe: a notification per change
//	PATCH, iPATCH or POST /devices/{id}/twin/reported   merge patch → 2.04 {"$version":n}
//	GET    /devices/{id}/messages/devicebound           with Observe: the oldest pending message
//	DELETE /devices/{id}/messages/devicebound/{msgId}   completes it → 2.02
//
// A cloud-to-device message is {"messageId":…,"payload":…,"properties":…}:
// a JSON payload embedded as is, text as a string, other bytes in
// "payloadBase64". The inbox resource shows one message at a time, the
// oldest pending one; once the device completes it (DELETE), the next one
// is notified. An empty payload means nothing is pending.
//
// # Credentials
//
// On the plain listener every request carries a SAS token (protocols/sas)
// in the "sas" URI query: coap://host/devices/d1/twin?sas=<token,
// percent-encoded>. It travels in clear, so the node refuses to start with
// a plain listener off loopback unless told Insecure. Over DTLS the PSK
// identity is the device ID and the key is the device's primary or
// secondary key string (as the registry shows it, base64 text). A DTLS-PSK
// server has to give the handshake one key before it learns which one the
// client holds: the node offers the key the device last completed a
// handshake with (the primary at first), and after a handshake from an
// address fails, offers the other key to the next one from that address.
// A device that switches keys sees one failed handshake, which the node
// ends as soon as the client's Finished record fails to decrypt, with a
// decrypt_error alert, so that the client fails at once and retries. A device
// disabled or deleted loses its DTLS sessions and observations at once; a
// key regenerated does not end open sessions (as over MQTT).
//
// A device may use its own resources; a gateway also the telemetry and
// cloud-to-device messages of the devices connected via it. Anything else
// is 4.03.
//
// # Delivery
//
// A confirmable (CON) request is answered when the change is durable: the
// answer is the acknowledgement. go-coap keeps each answer in a per-
// endpoint exchange cache for EXCHANGE_LIFETIME (247 s; endpoints live at
// least that long after their last datagram), so a retransmission — same
// message ID from the same endpoint — gets the same answer and is never
// applied twice; a copy arriving while the first is still being stored is
// dropped, and the client's next retransmission gets the cached answer.
// The cache is memory: a retransmission that reaches a node restarted
// since is applied again. Non-confirmable (NON) telemetry is best effort,
// as MQTT QoS 0: queued (answered 2.04 at once, or 5.03 when the queue is
// full) and counted apart (twinmesh_coap_messages_total{type="non"}).
//
// Representations over one datagram travel block-wise (RFC 7959): a large
// reported patch is uploaded in Block1 blocks, each checked for size and
// credentials before go-coap buffers it; a large twin or notification goes
// out in Block2 blocks of 1024 bytes, and notifications carry only the
// first block and an ETag, the client fetching the rest with GET.
//
// # Observe (RFC 7641)
//
// Notifications are confirmable and carry 24-bit sequence numbers that
// increase per observation. An observer that does not acknowledge one
// (after the retransmissions), or answers it with a Reset, is dropped; so
// is one whose endpoint closes, or one registered with a SAS token once
// the token expires (it gets a final 4.01). Each observer is sent the
// current representation again at least every ObserveRefresh (default 2
// minutes), which keeps its endpoint and checks that it is still there.
// Observations are memory: after the node restarts, notifications stop,
// and the client must register again. Each notification carries a
// Max-Age of ObserveRefresh plus a minute; a client that has heard
// nothing for that long re-registers (a GET with Observe 0 and the same
// query), as RFC 7641 section 3.3.1 describes. A GET with Observe 1 from
// the observation's endpoint and token cancels it, with or without the
// query.
//
// # Connection state
//
// CoAP has no sessions: a device counts as connected while it has an
// observation or a DTLS session here, or sent a request within
// PresenceWindow (default 5 minutes); the twin's connection section shows
// "coap" or "coaps" as its protocol. A disconnection applies only while
// the twin says the device is connected through that protocol to this
// node, so a device that moved to another node or opened an MQTT session
// keeps what that one shows.
//
// # Errors
//
// The Backend's errors carry an errcode.Code, which codeOf maps once to
// the codes of CONTRACT section 10 — 4.00 bad input, 4.01 no or bad
// credentials, 4.03 another device's resource, 4.04 unknown, 4.13 too
// large (with Size1, the limit), 4.29 throttled (with Max-Age, when to try
// again), 5.03 when the node cannot take it now — with a diagnostic
// payload (RFC 7252 section 5.5.2) saying why. An unauthenticated request
// is never answered with more bytes than it carried: the diagnostic is
// cut to fit, and a datagram that reuses a recent message ID without being
// a retransmission of it is dropped rather than answered from the
// exchange cache, so a spoofed source address gains no amplification.
package coap
