// Package authz is the one authorization layer of the REST API and the
// WebSocket hub (CONTRACT section 13): who the caller is, what its role
// allows, and which entities it may see and touch.
//
// A caller is a [Principal]: the node's admin token (--api-token), or an
// access token minted by POST /api/v1/tokens, which has a role (viewer,
// operator, admin), an expiry and, unless it is an admin token for the
// whole tree, a scope: the entity named by its "under" and that entity's
// descendants in the topology store.
//
// Every REST route and WebSocket op declares a [Need] (a minimum role, and
// whether it touches cluster-wide data) and the entities it touches; the
// [Authorizer] checks them before the handler runs:
//
//   - no token, an unknown, garbled, forged, revoked or expired one: 401;
//   - a valid token whose role is too low, or that is scoped where the
//     request needs the whole tree, or an entity outside its scope: 403.
//
// An entity that does not exist is outside every scope, so a scoped
// caller cannot tell a missing entity from one it may not see. Lists are
// filtered by the handlers, which ask the layer for the caller's scope.
//
// # Tokens
//
// An access token reads "tmk_<id>_<secret>": a 16-hex-digit ID, by which
// the node finds the stored record, and 64 hex digits of secret, of which
// the record holds only the SHA-256 ([ParseToken], [Mint]). Records are
// cluster-wide catalog data kept in memory by the actors System, so
// authenticating a request reads no disk; a scope check walks the
// entity's parents in the local store (a few bbolt reads).
//
// # Caveats
//
// A token's scope follows the topology as it is now: re-parenting an
// entity out of the subtree takes it out of the scope at once. Revoking a
// token closes its WebSockets on every member as the change reaches them
// (the catalog copy, usually within milliseconds); a member cut off from
// the one that revoked it accepts the token until the change reaches it
// (a repeated DELETE sends it again; a restarted member copies the
// catalog).
package authz
