package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/twinmesh/twinmesh/actors/actorspb"
)

// Event interest. Every event a grain publishes used to be encoded and sent
// to every other member, so that a dashboard or a device session there
// could see it. Telemetry and rollup events are most of them (one per
// message) and only WebSocket subscribers read them on other members, so a
// member says which of these bulk types it wants, and the others send it
// only those. Every other event type always goes to every member (device
// sessions, CoAP observers and caches there depend on them).
//
// A member that has not said (an older version, or one just joined), or
// whose word is older than interestTTL, gets every event: the default is
// the old behaviour, so nothing is lost by a member that never speaks.

// opInterest carries a member's interest (interestMsg), as a request when
// it changed (the sender waits for the answers before a new subscription is
// acknowledged) and as a notification every interestEvery.
const opInterest = "interest"

// bulkTypes are the event types sent only to members that want them; an
// event type's bit is 1 << its index.
var bulkTypes = [...]string{"telemetry", "rollup"}

const allBulk = uint8(1<<len(bulkTypes) - 1)

const (
	interestEvery = 2 * time.Second
	interestTTL   = 3 * interestEvery
	// interestWait bounds how long an announcement of a changed interest
	// waits for the other members' answers.
	interestWait = time.Second
)

// interestMsg is the body of opInterest.
type interestMsg struct {
	From  string   `json:"from"`  // the sender's protoactor address
	Wants []string `json:"wants"` // the bulk types it wants
}

// bulkBit returns the bit of a bulk event type, 0 for the others.
func bulkBit(eventType string) uint8 {
	for i, t := range bulkTypes {
		if t == eventType {
			return 1 << i
		}
	}
	return 0
}

// interests is what other members said they want.
type interests struct {
	mu      sync.Mutex
	local   func(eventType string) bool // nil: this node wants everything
	said    uint8                       // what this node last announced
	saidOK  bool
	members map[string]heard // by protoactor address
}

type heard struct {
	bits uint8
	at   time.Time
}

// SetEventInterest tells the placement which bulk event types (telemetry,
// rollup) this node's sinks want from grains on other members; wants is
// asked again on every announcement. Without it the node wants everything.
// Call it before Start.
func (p *Placement) SetEventInterest(wants func(eventType string) bool) {
	p.interest.mu.Lock()
	p.interest.local = wants
	p.interest.mu.Unlock()
}

// localBits is what this node wants now.
func (p *Placement) localBits() uint8 {
	p.interest.mu.Lock()
	f := p.interest.local
	p.interest.mu.Unlock()
	if f == nil {
		return allBulk
	}
	var b uint8
	for i, t := range bulkTypes {
		if f(t) {
			b |= 1 << i
		}
	}
	return b
}

// InterestChanged announces this node's interest to the other members when
// it changed, and waits (at most a second) for their answers, so that
// events published after it returns reach this node's new subscribers.
// The WebSocket hub calls it before it acknowledges a subscription.
func (p *Placement) InterestChanged(ctx context.Context) {
	bits := p.localBits()
	p.interest.mu.Lock()
	same := p.interest.saidOK && p.interest.said == bits
	p.interest.said, p.interest.saidOK = bits, true
	p.interest.mu.Unlock()
	if same || p.Members() <= 1 || p.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, interestWait)
	defer cancel()
	msg := interestMsg{From: p.self, Wants: wantsOf(bits)}
	var wg sync.WaitGroup
	for _, a := range p.memberAddrs() {
		if a == p.self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.request(ctx, a, opInterest, msg, nil); err != nil {
				p.log.Debug("event interest not acknowledged", "member", a, "err", err)
			}
		}()
	}
	wg.Wait()
}

func wantsOf(bits uint8) []string {
	var out []string
	for i, t := range bulkTypes {
		if bits&(1<<i) != 0 {
			out = append(out, t)
		}
	}
	return out
}

// announceInterest sends this node's interest to every other member, so
// that members that joined since, or missed a change, learn it. It runs
// every interestEvery (see Placement.every).
func (p *Placement) announceInterest() {
	addrs := p.memberAddrs()
	p.forgetInterests(addrs)
	bits := p.localBits()
	p.interest.mu.Lock()
	p.interest.said, p.interest.saidOK = bits, true
	p.interest.mu.Unlock()
	body, _ := json.Marshal(interestMsg{From: p.self, Wants: wantsOf(bits)})
	for _, a := range addrs {
		if a != p.self {
			p.c.ActorSystem.Root.Send(actor.NewPID(a, nodeActorName), &actorspb.MemberNotify{Op: opInterest, Body: body})
		}
	}
}

// heardInterest records what a member said it wants.
func (p *Placement) heardInterest(body []byte) error {
	var m interestMsg
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	var bits uint8
	for _, t := range m.Wants {
		bits |= bulkBit(t)
	}
	p.interest.mu.Lock()
	if p.interest.members == nil {
		p.interest.members = map[string]heard{}
	}
	p.interest.members[m.From] = heard{bits: bits, at: time.Now()}
	p.interest.mu.Unlock()
	return nil
}

// wantedBy returns the bulk types the member at addr wants: everything when
// it has not said lately.
func (p *Placement) wantedBy(addr string, now time.Time) uint8 {
	p.interest.mu.Lock()
	defer p.interest.mu.Unlock()
	h, ok := p.interest.members[addr]
	if !ok || now.Sub(h.at) > interestTTL {
		return allBulk
	}
	return h.bits
}

// wantedByAny reports whether some other member wants events of bit (a
// bulk type's), so that Broadcast does not encode events nobody reads.
func (p *Placement) wantedByAny(bit uint8) bool {
	now := time.Now()
	ms := p.members.Load()
	if ms == nil {
		return false
	}
	for _, m := range *ms {
		if a := m.Address(); a != p.self && p.wantedBy(a, now)&bit != 0 {
			return true
		}
	}
	return false
}

// forgetInterests drops what members no longer in the cluster said.
func (p *Placement) forgetInterests(alive []string) {
	p.interest.mu.Lock()
	for a := range p.interest.members {
		if !slices.Contains(alive, a) {
			delete(p.interest.members, a)
		}
	}
	p.interest.mu.Unlock()
}
