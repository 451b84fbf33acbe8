package actors

import (
	"context"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/twinmesh/twinmesh/actors/actorspb"
)

// localRequest is a request to a grain on this node. It is answered through
// its reply channel rather than through a protoactor future: a future
// registers a process, arms a timer and needed a goroutine of the caller's
// to wait on it, which together were 6 % of a node's CPU on the MQTT
// ingest path. Requests to grains on other members still go as
// *actorspb.Request with a future.
type localRequest struct {
	req   *actorspb.Request
	reply chan localReply // capacity 1: the grain's answer or a dead letter
}

// IgnoreDeadLetterLogging implements actor.IgnoreDeadLetterLogging: a
// request that meets a stopped grain is answered as undelivered (see
// watchDeadLetters) and resent, which is routine while grains passivate.
func (*localRequest) IgnoreDeadLetterLogging() {}

// localReply is the answer to a localRequest.
type localReply struct {
	res *actorspb.Response
	// undelivered: the request reached a stopped grain and went to the
	// dead letters unprocessed.
	undelivered bool
}

// localRequests recycles localRequests whose answer was taken: only then is
// nothing left that could still write to the channel.
var localRequests = sync.Pool{New: func() any {
	return &localRequest{reply: make(chan localReply, 1)}
}}

// watchDeadLetters answers a localRequest sent to a grain that had already
// stopped: protoactor's dead-letter process only answers requests that
// carry a sender PID, which a localRequest does not.
func watchDeadLetters(sys *actor.ActorSystem) {
	sys.EventStream.Subscribe(func(evt any) {
		dl, ok := evt.(*actor.DeadLetterEvent)
		if !ok {
			return
		}
		if lr, ok := dl.Message.(*localRequest); ok {
			select {
			case lr.reply <- localReply{undelivered: true}:
			default: // already answered
			}
		}
	})
}

// attemptLocal is attempt for a grain whose activation is on this node.
func (s *System) attemptLocal(ctx context.Context, id, kind string, pid *actor.PID, req *actorspb.Request, timeout time.Duration) (any, error) {
	died, unwatch := s.deaths.add(pid.Id)
	defer unwatch()
	lr := localRequests.Get().(*localRequest)
	lr.req = req
	s.actors.Root.Send(pid, lr)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	answer := func(r localReply) (any, error) {
		lr.req = nil
		localRequests.Put(lr)
		if r.undelivered {
			s.cluster.PidCache.Remove(id, kind)
			return nil, errNotDelivered
		}
		return r.res, nil
	}
	select {
	case r := <-lr.reply:
		return answer(r)
	case <-died:
		// An answer sent before the grain stopped is on its way: wait for
		// it briefly; without one the request was dropped unprocessed.
		select {
		case r := <-lr.reply:
			return answer(r)
		case <-time.After(diedGrace):
		}
		s.cluster.PidCache.Remove(id, kind)
		return nil, errNotDelivered
	case <-timer.C:
		s.cluster.PidCache.Remove(id, kind)
		return nil, actor.ErrTimeout // as a future's: the outcome is unknown
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
