package mqtt

import (
	"encoding/json"

	"github.com/twinmesh/twinmesh/actors"
)

// eventQueue bounds the device work that events cause and that waits for
// the event worker.
const eventQueue = 4096

// HandleEvent is an actors.EventSink: it decides what the devices with a
// session here must hear of an event — a desired change is published to
// the device, a disabled identity or a deleted entity ends its session, new
// inbox messages are delivered — and queues that work for the event
// worker. It runs inside grains, so it never blocks: with a full queue the
// work is dropped (a device recovers a missed desired change with a twin
// GET; a disconnect or a delivery is retried by the next event).
func (s *Server) HandleEvent(ev actors.Event) {
	switch ev.Type {
	case actors.EventTwin:
		if ev.Section != "desired" {
			return
		}
		id, v, data := ev.Entity, ev.SectionVersion, ev.Data
		s.enqueueEvent(func() { s.NotifyDesired(id, v, data) })
	case actors.EventIdentity:
		var st struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(ev.Data, &st) == nil && st.Status == "disabled" {
			id := ev.Entity
			s.enqueueEvent(func() { s.Disconnect(id) })
		}
	case actors.EventTopology:
		var t struct {
			Deleted bool `json:"deleted"`
		}
		if json.Unmarshal(ev.Data, &t) == nil && t.Deleted {
			id := ev.Entity
			s.enqueueEvent(func() { s.Disconnect(id) })
		}
	case actors.EventInbox:
		id := ev.Entity
		s.enqueueEvent(func() { s.DeliverPending(id) })
	}
}

func (s *Server) enqueueEvent(f func()) {
	select {
	case s.events <- f:
	default:
		s.metrics.eventsDropped.Inc()
	}
}

// eventWorker runs queued event work until the server closes.
func (s *Server) eventWorker() {
	defer s.wg.Done()
	for {
		select {
		case f := <-s.events:
			f()
		case <-s.stop:
			return
		}
	}
}

var _ actors.EventSink = (*Server)(nil).HandleEvent
