// Package twin implements the twin document of one entity (CONTRACT
// section 4): tags, desired and reported properties with their "$version"
// and metadata, the delta between desired and reported, last-known
// telemetry, connection state, rollup and alerts.
//
// # A pure state machine
//
// A [Twin] does no IO, starts no goroutines and reads no clock: the time of
// a change is passed in. Every method that changes the twin returns a
// [Change] describing what changed (or that nothing did, [Change.Noop]),
// and the caller does the rest — persist the document, publish an event,
// answer the device. This keeps the twin testable without an actor system.
//
// # Versions
//
// The twin "version" is the document's ETag. It rises by one on every
// accepted change of what clients write or a device reports — desired,
// reported and tags ([Twin.Patch]) — and of the entity's own attributes,
// which the caller keeps outside the twin and reports with
// [Twin.AttributesChanged]. Desired and reported also count their own
// changes in "$version". Telemetry, connection, rollup and alerts are live
// state: they change without moving "version", so a client's GET followed
// by a PATCH with If-Match is not refused because a device sent telemetry
// or reconnected in between. Each carries its own timestamps instead:
// telemetry points their "ts", the connection its "since", rollup and
// alerts a "$lastUpdated" in the document's metadata. A no-op changes
// nothing at all.
//
// # Usage
//
// The owning grain keeps one *Twin in memory and serializes access to it
// (a Twin is not safe for concurrent use):
//
//	tw := twin.New("dev-1", "device")       // or New then UnmarshalJSON(stored)
//	next := tw.Clone()                      // try the change on a copy
//	c, err := next.Patch(twin.Reported, body, now, limits)
//	switch {
//	case err != nil:                        // ErrMalformed, ErrReservedKey → 400,
//		return err                          // ErrTooLarge, ErrTooDeep → 413; tw is unchanged
//	case c.Noop:                            // nothing to persist or publish
//	default:
//		doc, _ := next.MarshalJSON()        // persist doc, then
//		tw = next                           // publish c.Data at c.Version
//	}
//
// Patch itself refuses a bad patch whole, so patching tw directly is also
// safe; Clone is for callers that apply several changes and want all or
// none of them, or that may fail to persist.
//
// # Caveats
//
// JSON numbers are decoded as float64, so integers beyond 2^53 lose
// precision. Values handed in (patches, telemetry, rollup, alerts) are
// copied, and values handed out are copies: nothing outside the package can
// reach the twin's state.
package twin
