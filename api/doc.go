// Package api serves twinmesh's HTTP surface: the REST API v1 of
// CONTRACT.md section 2, health and readiness probes, Prometheus metrics,
// and the mount points of the dashboard WebSocket hub (package api/ws) and
// the embedded dashboard (package api/dashboard).
//
// Handlers translate HTTP to calls on the actor layer and hold no state of
// their own. They answer with the package's own response types (Entity,
// Device, Message, TelemetryRecord), never with the store's records, so
// how something is stored does not leak onto the wire.
//
// Every route is declared once in routes.go with what it requires of the
// caller (a role, whether it touches cluster-wide data, the entities that
// must be in the caller's scope); one guard checks it through package
// api/authz before the handler runs, and the WebSocket hub uses the same
// Authorizer (CONTRACT section 13). Handlers narrow lists to the caller's
// scope with the helpers of routes.go, never with checks of their own.
//
// Errors carry an errcode.Code; [ErrorOf] is the one mapping from an error
// to an HTTP status and the {"code","message"} body, used by REST and by
// the WebSocket hub (package api/ws) alike. Errors the handlers make
// themselves are errcode.New errors, never local sentinels.
package api
