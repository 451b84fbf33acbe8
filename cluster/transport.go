package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// Wire messages between nodes: JSON bodies in actorspb envelopes, like the
// grains' own (protoactor's remote carries only protobuf messages).
const (
	opApply    = "apply"
	opClaim    = "claim"
	opSnapshot = "snapshot"
	opCatalog  = "catalog"
	opInvoke   = "invoke"
	opStats    = "stats"
	opEvents   = "events"
)

// catalogPageTimeout bounds one page of a catalog copy (opCatalog); a
// variable for tests.
var catalogPageTimeout = 10 * time.Second

// applyReq asks a member to apply ops. With an Epoch they are fenced by
// it: a write of the grain's sequence carries its place (Prev, Seq:
// persistence.ApplyEpoch); a page of a copy (Reset on the first, Copied on
// the last) or the catalog part of a write to a member that is not a
// replica carries neither (persistence.FenceEpoch).
type applyReq struct {
	ID     string               `json:"id,omitempty"`
	Epoch  uint64               `json:"epoch,omitempty"` // 0: catalog only, not fenced
	Ops    []persistence.WireOp `json:"ops"`
	Prev   *persistence.Epoch   `json:"prev,omitempty"`
	Seq    uint64               `json:"seq,omitempty"`
	Reset  bool                 `json:"reset,omitempty"`  // first page of a copy: drop what the member holds of the grain, unless it holds From or newer
	From   *persistence.Epoch   `json:"from,omitempty"`   // first page of a copy: the source's (Wrote, Seq)
	Copied *persistence.Epoch   `json:"copied,omitempty"` // last page of a copy: the source's (Wrote, Seq)
	Copy   uint64               `json:"copy,omitempty"`   // every page of a copy: its token (persistence.ContinueCopyEpoch)
	Adopt  *persistence.Epoch   `json:"adopt,omitempty"`  // no ops: the member's copy, standing at Adopt, becomes Epoch's (persistence.AdoptEpoch)
}

// applyRes answers an applyReq; Held: the member already held the write,
// or a copy at least as new as the one offered (nothing was written).
type applyRes struct {
	Held bool `json:"held,omitempty"`
}

type claimReq struct {
	ID    string `json:"id"`
	Epoch uint64 `json:"epoch"`
	// From is the claiming member's address: an activation of the grain on
	// any other member that accepts the claim is superseded and stops.
	From string `json:"from,omitempty"`
}

type claimRes struct {
	Fenced bool                   `json:"fenced,omitempty"`
	State  persistence.GrainState `json:"state"`
}

type snapshotReq struct {
	ID    string `json:"id"`
	After int64  `json:"after"`
	Limit int    `json:"limit"`
}

type snapshotRes struct {
	Ops  []persistence.WireOp `json:"ops"`
	Next int64                `json:"next"`
}

type catalogReq struct {
	Cursor string `json:"cursor"`
}

type catalogRes struct {
	Ops  []persistence.WireOp `json:"ops"`
	Next string               `json:"next"`
}

type invokeReq struct {
	Device  string `json:"device"`
	Method  string `json:"method"`
	Payload []byte `json:"payload"`
	Timeout int64  `json:"timeoutMs"`
}

type invokeRes struct {
	Status  int    `json:"status"`
	Payload []byte `json:"payload"`
}

type statsRes struct {
	Grains int64 `json:"grains"`
}

// Error codes in actorspb.MemberResponse.Code between nodes: the names of
// errcode's codes ("fenced", "not_connected", "timeout", …), so that an
// error keeps its code from one member to the next; codeFailed is
// errcode.Internal.
const (
	codeFenced = "fenced"
	codeGap    = "gap" // persistence.ErrGap: the replica's copy misses writes
	// codeAbandoned: persistence.ErrCopyAbandoned, another copy replaced
	// the one this page belongs to.
	codeAbandoned = "copy-abandoned"
	codeFailed    = "failed"
)

// downFor is how long a member whose request failed at the transport is
// skipped by writes (it gets copies in the background) and given a short
// deadline by claims; memberlist declares a crash in about 5–6 s.
const downFor = 10 * time.Second

// markDown marks addr down and, the first time, forgets every grain PID
// cached on it, so that callers stop waiting on a crashed member.
func (p *Placement) markDown(addr string) {
	if _, was := p.down.Swap(addr, time.Now().Add(downFor)); was {
		return
	}
	if ch, ok := p.downCh.LoadAndDelete(addr); ok {
		close(ch.(chan struct{}))
	}
	p.log.Warn("member not answering; passing over it until it answers or leaves", "member", addr)
	if p.c == nil {
		return
	}
	for _, m := range *p.members.Load() {
		if m.Address() == addr {
			p.c.PidCache.RemoveByMember(m)
		}
	}
}

// Unreachable returns a channel that is closed when the member at addr is
// marked down (at once if it is down now).
func (p *Placement) Unreachable(addr string) <-chan struct{} {
	if p.isDown(addr) {
		return closedChan
	}
	ch, _ := p.downCh.LoadOrStore(addr, make(chan struct{}))
	return ch.(chan struct{})
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (p *Placement) isDown(addr string) bool {
	v, ok := p.down.Load(addr)
	if !ok {
		return false
	}
	if time.Now().After(v.(time.Time)) {
		p.down.Delete(addr)
		return false
	}
	return true
}

// sendRemote is the transport between members: a protoactor request to
// the member's node actor.
func (p *Placement) sendRemote(addr string, req *actorspb.MemberRequest, timeout time.Duration) (any, error) {
	return p.c.ActorSystem.Root.RequestFuture(actor.NewPID(addr, nodeActorName), req, timeout).Result()
}

// request sends op to the member at addr and decodes the answer into out.
// A request to this node is handled in place.
func (p *Placement) request(ctx context.Context, addr, op string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	var res *actorspb.MemberResponse
	if addr == p.self {
		res = p.handle(ctx, &actorspb.MemberRequest{Op: op, Body: body})
	} else {
		timeout := p.cfg.PeerTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		if op == opInvoke || op == opStream || op == opSnapshot || op == opCatalog || op == opCatchUp {
			if dl, ok := ctx.Deadline(); ok {
				timeout = time.Until(dl)
			} else {
				timeout = 30 * time.Second
			}
		}
		if op == opCatalog {
			// A page is quick to serve. A request or answer lost on
			// the way (a member that had not yet let go of this node's
			// previous incarnation) must not hold a joining node for the
			// whole copy's deadline: the next member is asked instead.
			timeout = min(timeout, catalogPageTimeout)
		}
		if timeout <= 0 {
			return context.DeadlineExceeded
		}
		r, err := p.send(addr, &actorspb.MemberRequest{Op: op, Body: body}, timeout)
		if err != nil {
			if ctx.Err() == nil {
				p.markDown(addr)
			}
			return fmt.Errorf("%s to %s: %w", op, addr, err)
		}
		p.down.Delete(addr)
		var ok bool
		if res, ok = r.(*actorspb.MemberResponse); !ok {
			return fmt.Errorf("%s to %s: answered %T", op, addr, r)
		}
	}
	if res.Status >= 400 {
		switch res.Code {
		case codeFenced:
			return fmt.Errorf("%w: %s", ErrFenced, res.Message)
		case codeGap:
			return fmt.Errorf("%s on %s: %w: %s", op, addr, persistence.ErrGap, res.Message)
		case codeAbandoned:
			return fmt.Errorf("%s on %s: %w: %s", op, addr, persistence.ErrCopyAbandoned, res.Message)
		}
		if c := errcode.Parse(res.Code); c != errcode.Internal {
			return errcode.New(c, "%s", res.Message) // the member's own words and code
		}
		return fmt.Errorf("%s on %s: %s", op, addr, res.Message)
	}
	if out != nil {
		return json.Unmarshal(res.Body, out)
	}
	return nil
}

// handle answers one request from a member (or from this node).
func (p *Placement) handle(ctx context.Context, req *actorspb.MemberRequest) *actorspb.MemberResponse {
	body, err := p.serve(ctx, req.Op, req.Body)
	if err != nil {
		code := codeFailed
		if errors.Is(err, persistence.ErrFenced) {
			code = codeFenced
		} else if errors.Is(err, persistence.ErrGap) {
			code = codeGap
		} else if errors.Is(err, persistence.ErrCopyAbandoned) {
			code = codeAbandoned
		} else if c := errcode.Of(err); c != errcode.Internal {
			code = c.String()
		}
		return &actorspb.MemberResponse{Status: 500, Code: code, Message: err.Error()}
	}
	return &actorspb.MemberResponse{Status: 200, Body: body}
}

func (p *Placement) serve(ctx context.Context, op string, body []byte) ([]byte, error) {
	store := p.cfg.Store
	switch op {
	case opApply:
		var r applyReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		ops := make([]persistence.Op, 0, len(r.Ops)+4)
		switch {
		case r.Epoch > 0 && r.Adopt != nil:
			if len(r.Ops) > 0 || r.Reset || r.Copied != nil {
				return nil, fmt.Errorf("%w: an adoption carries no ops", persistence.ErrInvalid)
			}
			ops = append(ops, persistence.AdoptEpoch(r.ID, r.Epoch, *r.Adopt))
		case r.Epoch > 0 && r.Prev != nil:
			ops = append(ops, persistence.ApplyEpoch(r.ID, r.Epoch, *r.Prev, r.Seq))
		case r.Epoch > 0 && r.Reset && r.From != nil:
			ops = append(ops, persistence.StartCopyEpoch(r.ID, r.Epoch, *r.From, r.Copy))
		case r.Epoch > 0 && r.Copy != 0:
			ops = append(ops, persistence.ContinueCopyEpoch(r.ID, r.Epoch, r.Copy))
		case r.Epoch > 0:
			ops = append(ops, persistence.FenceEpoch(r.ID, r.Epoch))
		}
		if r.Reset && r.ID != "" {
			ops = append(ops, persistence.ResetGrainData(r.ID), persistence.EmptyCopyEpoch(r.ID))
		}
		catalog := false
		for _, w := range r.Ops {
			op := persistence.FromWire(w)
			catalog = catalog || op.Catalog()
			ops = append(ops, op)
		}
		if r.Copied != nil && r.ID != "" {
			ops = append(ops, persistence.CopiedEpoch(r.ID, *r.Copied))
		}
		if err := store.Commit(ctx, ops...); err != nil {
			switch {
			case errors.Is(err, persistence.ErrApplied):
				// A retry, or a copy already held it; a copy that would
				// replace newer data stops there.
				return json.Marshal(applyRes{Held: true})
			case errors.Is(err, persistence.ErrFenced):
				p.metrics.fenced.Inc()
			}
			return nil, err
		}
		if catalog && r.Epoch == 0 {
			// Catalog pushed by a member that rejoined: deletions it
			// learned of arrive as tombstones.
			if _, err := p.enforceTombstones(ctx, r.Ops); err != nil {
				return nil, err
			}
		}
		if catalog {
			p.catalogChanged(r.Ops)
		}
		return []byte(`{}`), nil
	case opClaim:
		var r claimReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		var res claimRes
		if err := store.Commit(ctx, persistence.ClaimEpoch(r.ID, r.Epoch)); err != nil {
			if !errors.Is(err, persistence.ErrFenced) {
				return nil, err
			}
			res.Fenced = true
		} else if r.From != "" && r.From != p.self {
			// Another member owns the grain from now on. An activation
			// here (this node took the claimer for dead, or was paused)
			// would serve reads from a state that no longer moves: it
			// steps aside, and callers retry where the placement says.
			p.supersede(r.ID)
		}
		st, err := store.GrainState(r.ID)
		if err != nil {
			return nil, err
		}
		res.State = st
		return json.Marshal(res)
	case opSnapshot:
		var r snapshotReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		ops, next, err := store.GrainSnapshot(r.ID, r.After, r.Limit)
		if err != nil {
			return nil, err
		}
		return json.Marshal(snapshotRes{Ops: ops, Next: next})
	case opCatalog:
		var r catalogReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		ops, next, err := store.CatalogSnapshot(r.Cursor, 1000)
		if err != nil {
			return nil, err
		}
		return json.Marshal(catalogRes{Ops: ops, Next: next})
	case opInvoke:
		var r invokeReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		ictx, cancel := context.WithTimeout(ctx, time.Duration(r.Timeout)*time.Millisecond)
		defer cancel()
		st, resp, err := p.invokeLocal(ictx, r)
		if err != nil {
			return nil, err
		}
		return json.Marshal(invokeRes{Status: st, Payload: resp})
	case opStream:
		return p.serveStream(ctx, body)
	case opStates:
		return p.serveStates(body)
	case opCatchUp:
		return p.serveCatchUp(ctx, body)
	case opRepair:
		return p.serveRepair(ctx, body)
	case opFence:
		var r claimReq
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		e, err := store.GetEpoch(r.ID)
		if err != nil {
			return nil, err
		}
		return json.Marshal(fenceRes{Fence: e.Fence})
	case opStats:
		return json.Marshal(statsRes{Grains: p.ActiveGrains()})
	case opInterest:
		return nil, p.heardInterest(body)
	case opQuery:
		return p.serveQuery(ctx, body)
	}
	return nil, fmt.Errorf("unknown operation %q", op)
}
