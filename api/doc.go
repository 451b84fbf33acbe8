// Package api serves twinmesh's HTTP surface: the REST API v1 of
// CONTRACT.md section 2, health and readiness probes, Prometheus metrics,
// and the mount points of the dashboard WebSocket hub (package api/ws) and
// the embedded dashboard (package api/dashboard).
//
// Handlers translate HTTP to calls on the actor layer and map its sentinel
// errors to statuses; they hold no state of their own.
package api
