package cluster

import (
	"context"
	"fmt"
	"time"
)

// downAskTimeout bounds a request that asks every member (a claim, a read's
// confirmation) to a member marked down: it is probably dead, and the
// others' answers usually suffice.
const downAskTimeout = 300 * time.Millisecond

// askCtx is ctx for a request to addr made while asking every member:
// bounded by downAskTimeout when addr is marked down.
func (p *Placement) askCtx(ctx context.Context, addr string) (context.Context, context.CancelFunc) {
	if p.isDown(addr) {
		return context.WithTimeout(ctx, downAskTimeout)
	}
	return context.WithCancel(ctx)
}

// opFence asks a member for the fence it holds of a grain (fenceRes).
const opFence = "fence"

type fenceRes struct {
	Fence uint64 `json:"fence"`
}

// Confirm tells whether the activation of identity that claimed epoch is
// still its owner: it asks every member for the highest epoch it saw
// claimed or written for the grain and returns nil once a majority of the
// known members (this node included) hold none above epoch; ErrFenced as
// soon as one holds a newer one; ErrNoQuorum when no majority answers.
//
// It is what makes a read linearizable. A newer owner's claim was accepted
// by a majority before its first write, and every majority meets that one,
// so a read confirmed after it started cannot miss a write that finished
// before it started; a paused or partitioned former owner, which holds an
// older state in memory, finds out and answers with an error instead.
// A cluster of one confirms at once.
func (p *Placement) Confirm(ctx context.Context, identity string, epoch uint64) error {
	n := p.known()
	if n <= 1 {
		return nil
	}
	need := quorum(n)
	addrs := p.memberAddrs()
	type reply struct {
		fence uint64
		err   error
	}
	replies := make(chan reply, len(addrs))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, a := range addrs {
		go func() {
			cctx, cancel := p.askCtx(ctx, a)
			defer cancel()
			var res fenceRes
			err := p.request(cctx, a, opFence, claimReq{ID: identity}, &res)
			replies <- reply{res.Fence, err}
		}()
	}
	confirmed := 0
	var lastErr error
	for range addrs {
		r := <-replies
		switch {
		case r.err != nil:
			lastErr = r.err
		case r.fence > epoch:
			p.metrics.fenced.Inc()
			return fmt.Errorf("%w: %s was claimed with epoch %d after %d", ErrFenced, identity, r.fence, epoch)
		default:
			confirmed++
			if confirmed >= need {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: ownership of %s confirmed by %d of %d members (last error: %v)", ErrNoQuorum, identity, confirmed, n, lastErr)
}
