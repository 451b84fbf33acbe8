package actors

import (
	"context"
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
)

// call sends a Request to the grain of (id, kind) and waits for its answer,
// turning error responses back into errcode errors. While a grain moves
// between nodes (a member joined, left or crashed) a request can meet a
// stopped or moving activation, or none: call retries those, with backoff,
// until the deadline, as the grain did not process the request. When the
// outcome is unknown — the member stopped answering, or the answer did not
// come in time, after the request may have been processed — only a request
// that can be repeated without effect (retrySafe) is sent again; any other
// fails with ErrUnavailable, as sending it again could apply it twice (the
// Jepsen harness saw a desired patch applied again ten seconds later).
func (s *System) call(ctx context.Context, id, kind string, req *actorspb.Request) (*actorspb.Response, error) {
	if !s.Ready() {
		return nil, errcode.New(errcode.Unavailable, "node not started or stopping")
	}
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	start := time.Now()
	defer func() { s.metrics.requests.WithLabelValues(opName(req)).Observe(time.Since(start).Seconds()) }()
	backoff := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		left := time.Until(deadline)
		if left <= 0 {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, errcode.New(errcode.Unavailable, "grain %s/%s: no answer before the deadline", kind, id)
		}
		res, err := s.send(ctx, id, kind, req, left)
		if err == nil {
			r, ok := res.(*actorspb.Response)
			if !ok {
				return nil, errcode.New(errcode.Unavailable, "grain %s/%s answered %T", kind, id, res)
			}
			if r.Code == 0 {
				return r, nil
			}
			rerr := &errcode.Error{Code: errcode.Code(r.Code), Msg: r.Message}
			if rerr.Code != errcode.Fenced || !s.Ready() {
				return nil, rerr
			}
			// The activation we reached is stale or moving and did not
			// process the request: forget it so the next attempt asks the
			// placement again.
			s.cluster.PidCache.Remove(id, kind)
			err = rerr
		} else if !errors.Is(err, errNotDelivered) && !retrySafe(req) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, errcode.New(errcode.Unavailable, "grain %s/%s: %v (the request may have been applied)", kind, id, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !s.Ready() || time.Until(deadline) <= backoff {
			return nil, errcode.New(errcode.Unavailable, "grain %s/%s: %v", kind, id, err)
		}
		s.log.Debug("grain call retried", "entity", id, "op", opName(req), "attempt", attempt, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// retrySafe reports whether req may be sent again after an attempt whose
// outcome is unknown: reads, and telemetry with a message ID (the grain
// recognises a message it stored).
func retrySafe(req *actorspb.Request) bool {
	switch b := req.Body.(type) {
	case *actorspb.Request_Get, *actorspb.Request_TelemetryQuery, *actorspb.Request_InboxList, *actorspb.Request_InboxPending,
		*actorspb.Request_OutboxSettle: // deleting an absent entry changes nothing
		return true
	case *actorspb.Request_Telemetry:
		return b.Telemetry.GetMessageId() != ""
	}
	return false
}

// opName names a request for metrics and logs.
func opName(req *actorspb.Request) string {
	switch req.Body.(type) {
	case *actorspb.Request_Get:
		return "get"
	case *actorspb.Request_PutEntity:
		return "put-entity"
	case *actorspb.Request_Delete:
		return "delete"
	case *actorspb.Request_Patch:
		return "patch"
	case *actorspb.Request_Reported:
		return "reported"
	case *actorspb.Request_Telemetry:
		return "telemetry"
	case *actorspb.Request_Connection:
		return "connection"
	case *actorspb.Request_Touch:
		return "touch"
	case *actorspb.Request_TelemetryQuery:
		return "telemetry-query"
	case *actorspb.Request_InboxSend, *actorspb.Request_InboxPending, *actorspb.Request_InboxDelivered, *actorspb.Request_InboxList:
		return "inbox"
	case *actorspb.Request_Alert:
		return "alert"
	case *actorspb.Request_OutboxSettle:
		return "outbox-settle"
	case *actorspb.Request_Call:
		return "call"
	case *actorspb.Request_Timer:
		return "timer"
	}
	return "unknown"
}

// diedGrace is how long an attempt waits for the answer of a local grain
// that stopped (see deathWatch): the answer, if any, was sent before.
const diedGrace = 200 * time.Millisecond

// errUnreachable: the member holding the grain's cached PID was found not
// answering while a request to it was pending.
var errUnreachable = errors.New("the grain's member stopped answering")

// errNotDelivered: no activation received the request (no owner could be
// placed, or the PID was dead): sending it again is safe.
var errNotDelivered = errors.New("the request reached no activation")

// attempt sends req once to the grain's activation and waits for the
// answer. It resolves the PID and sends the message itself rather than
// through protoactor's Cluster.Request, which sends the message again to a
// newly resolved PID after a dead letter: an attempt the caller abandoned
// (its member unreachable) could then be delivered to the next owner
// seconds after the caller's own retry was applied there. A request to a
// grain whose member crashed would wait out its whole timeout; when the
// replication layer finds the member unreachable (its cached PIDs are then
// forgotten), the attempt ends at once. The request's future ends with its
// own timeout.
func (s *System) attempt(ctx context.Context, id, kind string, req *actorspb.Request, timeout time.Duration) (any, error) {
	pid, _ := s.cluster.PidCache.Get(id, kind)
	if pid == nil {
		if pid = s.cluster.Get(id, kind); pid == nil {
			return nil, errNotDelivered
		}
		s.cluster.PidCache.Set(id, kind, pid)
	}
	if pid.Address == s.actors.Address() {
		return s.attemptLocal(ctx, id, kind, pid, req, timeout)
	}
	var unreachable <-chan struct{}
	if r := s.cfg.Replication; r != nil {
		unreachable = r.Unreachable(pid.Address)
	}
	type result struct {
		res any
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := s.actors.Root.RequestFuture(pid, req, timeout).Result()
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		switch {
		case r.err == nil:
			return r.res, nil
		case errors.Is(r.err, actor.ErrDeadLetter), errors.Is(r.err, remote.ErrDeadLetter):
			s.cluster.PidCache.Remove(id, kind)
			return nil, errNotDelivered
		}
		s.cluster.PidCache.Remove(id, kind)
		return nil, r.err
	case <-unreachable:
		return nil, errUnreachable
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
