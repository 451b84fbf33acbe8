package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"sync"

	"github.com/twinmesh/twinmesh/persistence"
)

// Local is this node as other members reach it: what it does with the
// events, catalog changes and direct-method calls they send. The actor
// system and the protocol adapter implement it together (the wiring
// embeds both in one value). Serve calls it.
type Local interface {
	// DeliverRemoteEvents hands events published on other members (JSON
	// documents) to this node's subscribers. Serve calls it from one
	// goroutine, in arrival order; it must not block for long.
	DeliverRemoteEvents(events []json.RawMessage)
	// CatalogChanged tells the node which document buckets of its store
	// other members changed (catalog ops applied, a catalog copied at
	// join), so that it reloads what it keeps in memory, such as rules.
	// Serve calls it from the same goroutine as DeliverRemoteEvents; the
	// changes of several batches may arrive in one call.
	CatalogChanged(buckets []string)
	// InvokeMethod runs a direct method on a device whose session is on
	// this node; a device not connected here is errcode.NotConnected, no
	// answer in time errcode.Timeout. Serve calls it on a goroutine of its
	// own for every call; it must be safe for concurrent use.
	InvokeMethod(ctx context.Context, device, method string, payload []byte) (status int, resp []byte, err error)
}

// Serve hands what other members send this node to local until ctx is
// done or the Placement shuts down; it returns once the calls it started
// have returned. Call it once, as soon as the actor system has started:
// what arrives before waits for it (events in a bounded queue, beyond
// which they are dropped and counted; catalog changes merged; a
// direct-method call until its deadline).
//
// The Placement does not hold local: it is a producer, Serve its consumer,
// so the Placement can be built before the actor system that implements
// local, and the actor system with the Placement.
func (p *Placement) Serve(ctx context.Context, local Local) error {
	var calls sync.WaitGroup
	defer calls.Wait()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.stop:
			return nil
		case evs := <-p.inEvents:
			local.DeliverRemoteEvents(evs)
		case <-p.inCatalog.ready:
			if buckets := p.inCatalog.take(); len(buckets) > 0 {
				local.CatalogChanged(buckets)
			}
		case c := <-p.inCalls:
			calls.Add(1)
			go func() {
				defer calls.Done()
				var r callResult
				if c.stream != nil {
					r.status, r.err = requestStream(c.ctx, local, *c.stream)
				} else {
					r.status, r.resp, r.err = local.InvokeMethod(c.ctx, c.req.Device, c.req.Method, c.req.Payload)
				}
				c.reply <- r // buffered: never blocks
			}()
		}
	}
}

// deliverEvents queues an event batch from another member for Serve; it
// never blocks (a full queue drops the batch and counts it).
func (p *Placement) deliverEvents(evs []json.RawMessage) {
	select {
	case p.inEvents <- evs:
	default:
		p.metrics.eventsInDropped.Add(float64(len(evs)))
	}
}

// catalogChanged records the buckets that ops touched, for Serve.
func (p *Placement) catalogChanged(ops []persistence.WireOp) {
	var buckets []string
	for _, w := range ops {
		if w.B != "" && !slices.Contains(buckets, w.B) {
			buckets = append(buckets, w.B)
		}
	}
	if slices.Contains(buckets, string(persistence.BucketMembers)) {
		if err := p.loadNodes(); err != nil {
			p.log.Warn("reload cluster members", "err", err)
		}
	}
	p.inCatalog.add(buckets)
}

// invokeLocal passes a direct-method call from another member to Serve and
// waits for its answer, for ctx, or for the Placement to shut down.
func (p *Placement) invokeLocal(ctx context.Context, req invokeReq) (int, []byte, error) {
	return p.callLocal(ctx, call{ctx: ctx, req: req, reply: make(chan callResult, 1)})
}

// callLocal passes c to Serve and waits for its answer, for ctx, or for
// the Placement to shut down.
func (p *Placement) callLocal(ctx context.Context, c call) (int, []byte, error) {
	select {
	case p.inCalls <- c:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-p.stop:
		return 0, nil, ErrStopped
	}
	select {
	case r := <-c.reply:
		return r.status, r.resp, r.err
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-p.stop:
		return 0, nil, ErrStopped
	}
}

// call is a direct-method call (or, with stream set, a stream request)
// from another member waiting for Serve.
type call struct {
	ctx    context.Context
	req    invokeReq
	stream *streamReq
	reply  chan callResult
}

type callResult struct {
	status int
	resp   []byte
	err    error
}

// bucketSet merges catalog changes until Serve takes them.
type bucketSet struct {
	mu      sync.Mutex
	buckets []string
	ready   chan struct{} // capacity 1: set while buckets waits to be taken
}

func newBucketSet() *bucketSet { return &bucketSet{ready: make(chan struct{}, 1)} }

func (s *bucketSet) add(buckets []string) {
	if len(buckets) == 0 {
		return
	}
	s.mu.Lock()
	for _, b := range buckets {
		if !slices.Contains(s.buckets, b) {
			s.buckets = append(s.buckets, b)
		}
	}
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default: // already signalled
	}
}

func (s *bucketSet) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets
	s.buckets = nil
	return b
}
