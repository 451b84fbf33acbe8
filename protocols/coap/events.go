package coap

import (
	"encoding/json"

	"github.com/twinmesh/twinmesh/actors"
)

// HandleEvent is an actors.EventSink: a desired change is notified to the
// device's desired observers, an inbox change to its inbox observers; any
// identity change forgets the verified SAS tokens; a disabled or deleted
// device loses its DTLS sessions, observations and presence. It runs
// inside grains, so it never blocks: the work is queued, and dropped (and
// counted) when the queue is full — an observer still gets the change with
// the next periodic notification.
func (s *Server) HandleEvent(ev actors.Event) {
	switch ev.Type {
	case actors.EventTwin:
		if ev.Section != "desired" {
			return
		}
		id := ev.Entity
		s.enqueueEvent(func() { s.pokeDevice(id, ResourceDesired) })
	case actors.EventInbox:
		id := ev.Entity
		s.enqueueEvent(func() { s.pokeDevice(id, ResourceInbox) })
	case actors.EventIdentity:
		s.auth.purge()
		var st struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(ev.Data, &st) == nil && st.Status == "disabled" {
			id := ev.Entity
			s.enqueueEvent(func() { s.endSessions(id) })
		}
	case actors.EventTopology:
		var t struct {
			Deleted bool `json:"deleted"`
		}
		if json.Unmarshal(ev.Data, &t) == nil && t.Deleted {
			s.auth.purge()
			id := ev.Entity
			s.enqueueEvent(func() { s.endSessions(id) })
		}
	}
}

var _ actors.EventSink = (*Server)(nil).HandleEvent
