// Package streamclient is both ends of a twinmesh device stream (CONTRACT
// section 11) for Go programs: Dial and Proxy on the service side (a
// WebSocket to the node, or a local TCP port forwarded through one), and
// Agent on the device side (answering stream requests that arrive over
// the device's MQTT session, connecting back to the node and to a target
// it allows). `twinmesh stream proxy` and `twinmesh stream agent` are thin
// wrappers around it; a device's own Go program can embed Agent and
// RunMQTT, or call Agent.Handle from its own MQTT client.
//
// # The exchange, for devices in other languages
//
// The device subscribes to $iothub/streams/POST/# on its IoT Hub MQTT
// session. A request arrives as a publish on
//
//	$iothub/streams/POST/{name}/?$rid={rid}
//
// with the JSON payload {"url":"ws://node:8080/api/v1/streams/{id}",
// "authorizationToken":"…"}. The device answers on
//
//	$iothub/streams/res/{status}/?$rid={rid}
//
// (payload ignored): 200 accepts, any other status refuses (the service
// gets 403). Having accepted, it opens a WebSocket to url within the
// token's lifetime (10 s by default) with the header "Authorization:
// Bearer {authorizationToken}" (or ?access_token=). The token is bound to
// that stream and works once. Bytes then travel as binary frames; a close
// frame from either side ends the stream.
package streamclient
