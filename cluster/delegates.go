package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// The memberlist delegates are views of the Provider. memberlist calls them
// on its own goroutines, the event delegate with its node lock held, so they
// only record under Provider.mu and mark the membership dirty; logging and
// talking to protoactor happen on the Provider's loop.

// nodeDelegate gives memberlist this node's metadata.
type nodeDelegate Provider

// NodeMeta returns the node's metadata; StartMember checked that it fits.
func (d *nodeDelegate) NodeMeta(limit int) []byte {
	p := (*Provider)(d)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.self.encode()
}

// NotifyMsg receives leave notices, sent directly or gossiped, and
// retirement notices (see Provider.Retired).
func (d *nodeDelegate) NotifyMsg(b []byte) {
	p := (*Provider)(d)
	if r, err := decodeRetiredNotice(b); err == nil {
		p.noticeRetired(r)
		return
	}
	n, err := decodeLeaveNotice(b)
	if err != nil {
		p.log.Debug("ignored a user message", "bytes", len(b), "err", err)
		return
	}
	if p.noticeLeaving(n) {
		p.relay.QueueBroadcast(noticeBroadcast{n, slices.Clone(b)})
		p.changed()
	}
}

// GetBroadcasts hands memberlist the leave notices to gossip.
func (d *nodeDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return (*Provider)(d).relay.GetBroadcasts(overhead, limit)
}

// LocalState gives memberlist's push/pull sync the leave notices of the
// incarnations still in the peer table, for peers that missed their gossip.
func (d *nodeDelegate) LocalState(join bool) []byte {
	p := (*Provider)(d)
	p.mu.Lock()
	var notices []leaveNotice
	for name, id := range p.leaving {
		if _, known := p.peers[name]; known {
			notices = append(notices, leaveNotice{Leaving: name, ID: id})
		}
	}
	p.mu.Unlock()
	b, _ := json.Marshal(notices)
	return b
}

// MergeRemoteState applies the leave notices of a peer's push/pull state.
func (d *nodeDelegate) MergeRemoteState(buf []byte, join bool) {
	p := (*Provider)(d)
	var notices []leaveNotice
	if err := json.Unmarshal(buf, &notices); err != nil {
		p.log.Debug("ignored remote state", "bytes", len(buf), "err", err)
		return
	}
	news := false
	for _, n := range notices {
		if n.Leaving != "" && n.ID != "" && p.noticeLeaving(n) {
			news = true
		}
	}
	if news {
		p.changed()
	}
}

// eventDelegate records joins, updates and departures.
type eventDelegate Provider

// NotifyJoin records a node that joined (or came back).
func (d *eventDelegate) NotifyJoin(n *memberlist.Node) { (*Provider)(d).observe(n, evJoin) }

// NotifyUpdate records a node whose metadata changed.
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { (*Provider)(d).observe(n, evUpdate) }

// NotifyLeave records a node that left or failed.
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) { (*Provider)(d).observe(n, evLeave) }

// pingDelegate notes acknowledged probes, from which Members derives
// StateSuspect.
type pingDelegate Provider

// AckPayload sends nothing with acks.
func (d *pingDelegate) AckPayload() []byte { return nil }

// NotifyPingComplete notes that other answered a direct probe.
func (d *pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	p := (*Provider)(d)
	p.mu.Lock()
	if pe := p.peers[other.Name]; pe != nil {
		pe.lastAck = time.Now()
	}
	p.mu.Unlock()
}

// mergeDelegate refuses to merge with the members of another protoactor
// cluster, or with members that link other kinds, so that a seed of the
// wrong cluster or a binary with other kinds fails the join (on both
// sides: memberlist asks the delegate of the node that joins and of the
// seed).
type mergeDelegate Provider

// NotifyMerge rejects a merge that brings members of another cluster, or
// live members whose kinds differ from this node's (a *KindsError).
func (d *mergeDelegate) NotifyMerge(peers []*memberlist.Node) error {
	p := (*Provider)(d)
	p.mu.Lock()
	mine := p.self.Cluster
	p.mu.Unlock()
	for _, n := range peers {
		if m, err := decodeMeta(n.Meta); err == nil && m.Cluster != mine {
			return fmt.Errorf("node %s belongs to cluster %q, not %q", n.Name, m.Cluster, mine)
		}
	}
	for _, n := range peers {
		if n.State != memberlist.StateAlive && n.State != memberlist.StateSuspect {
			continue // a dead or departed incarnation links nothing any more
		}
		if err := p.checkKinds(n); err != nil {
			p.refuseKinds(n, err)
			return err
		}
	}
	return nil
}

// aliveDelegate refuses members that link other kinds when memberlist
// hears of them outside a join (gossip, or a push/pull that the merge
// delegate does not see), so that they never become peers.
type aliveDelegate Provider

// NotifyAlive rejects a member whose kinds differ from this node's. It is
// called with memberlist's node lock held: it only records.
func (d *aliveDelegate) NotifyAlive(n *memberlist.Node) error {
	p := (*Provider)(d)
	if err := p.checkKinds(n); err != nil {
		p.refuseKinds(n, err)
		return err
	}
	return nil
}

type event int

const (
	evJoin event = iota
	evUpdate
	evLeave
)

// note is a membership event waiting to be logged by the loop.
type note struct {
	msg    string
	level  slog.Level
	name   string
	gossip string
	m      meta
	err    error
}

// observe applies a memberlist event to the peer table. It must not block.
func (p *Provider) observe(n *memberlist.Node, ev event) {
	m, metaErr := decodeMeta(n.Meta)
	gossip := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	p.mu.Lock()
	defer p.changed()
	defer p.mu.Unlock()
	pe := p.peers[n.Name]
	if pe == nil && ev == evLeave {
		return // never seen alive, or already forgotten
	}
	if pe == nil {
		p.seq++
		pe = &peer{name: n.Name, seq: p.seq}
		p.peers[n.Name] = pe
	}
	pe.addr, pe.port, pe.gossip = slices.Clone(n.Addr), n.Port, gossip
	pe.meta, pe.metaErr = m, metaErr
	nt := note{level: slog.LevelInfo, name: pe.nodeName(), gossip: gossip, m: m, err: metaErr}
	pe.gone = ev == evLeave
	noticed := metaErr == nil && p.leaving[n.Name] == m.ID // it sent a leave notice
	switch {
	case noticed:
		// memberlist catching up with a leave notice: nothing new.
		pe.state = StateLeft
	case ev == evJoin:
		pe.state, pe.lastAck = StateAlive, time.Now()
		nt.msg = "member joined"
		if metaErr != nil || m.Cluster != p.self.Cluster {
			nt.msg, nt.level = "member joined that is not of this cluster; ignored", slog.LevelWarn
		}
	case ev == evUpdate:
		pe.state = StateAlive
		nt.msg = "member updated"
	case ev == evLeave:
		// memberlist v0.7.0 passes Node.State == StateAlive here whatever
		// happened (hashicorp/memberlist#293): only the leave notice tells
		// a departure from a failure.
		pe.state, nt.msg, nt.level = StateDead, "member failed", slog.LevelWarn
		pe.deadAt = time.Now()
	}
	if nt.msg != "" {
		p.noteLocked(nt)
	}
	p.pruneLocked(pe.nodeName())
	alive := 0
	for _, pe := range p.peers {
		if pe.state == StateAlive {
			alive++
		}
	}
	p.numNodes.Store(int64(alive))
}

// pruneLocked forgets the incarnations of a node that memberlist has let
// go and that have a newer incarnation, so that the peer table does not grow
// with restarts.
func (p *Provider) pruneLocked(node string) {
	newest := 0
	for _, pe := range p.peers {
		if pe.nodeName() == node {
			newest = max(newest, pe.seq)
		}
	}
	for name, pe := range p.peers {
		if pe.nodeName() == node && pe.seq < newest && pe.gone {
			delete(p.peers, name)
			delete(p.leaving, name)
		}
	}
}

// noticeLeaving records a leave notice; it reports whether it was news (to
// be relayed). The incarnation named is StateLeft from then on, whatever
// memberlist says.
func (p *Provider) noticeLeaving(n leaveNotice) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leaving[n.Leaving] == n.ID || n.Leaving == p.mlName {
		return false
	}
	p.leaving[n.Leaving] = n.ID
	pe := p.peers[n.Leaving]
	if pe == nil || pe.metaErr != nil || pe.meta.ID != n.ID {
		return true // not seen yet, or another incarnation: relay only
	}
	// The notice commits the node to leaving: only Shutdown(true) sends it,
	// and memberlist's Leave and Shutdown follow whatever happens.
	// memberlist may not know yet (its death notice is gossiped with fewer
	// retransmissions, and failure detection is the fallback).
	pe.state = StateLeft
	p.noteLocked(note{msg: "member left", level: slog.LevelInfo, name: pe.nodeName(), gossip: pe.gossip, m: pe.meta})
	return true
}

// noticeBroadcast is a leave notice in memberlist's gossip; a newer notice
// for the same node replaces it.
type noticeBroadcast struct {
	n   leaveNotice
	msg []byte
}

// Invalidates reports whether b is an older notice for the same node.
func (b noticeBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(noticeBroadcast)
	return ok && o.n.Leaving == b.n.Leaving
}

// Message returns the encoded notice.
func (b noticeBroadcast) Message() []byte { return b.msg }

// Finished is called when memberlist is done with the notice.
func (b noticeBroadcast) Finished() {}

// noteLocked queues a membership event for the loop to log.
func (p *Provider) noteLocked(nt note) {
	if len(p.notes) < maxNotes {
		p.notes = append(p.notes, nt)
	} else {
		p.dropped++
	}
}

// flushNotes logs the membership events recorded since the last call.
func (p *Provider) flushNotes() {
	p.mu.Lock()
	notes, dropped := p.notes, p.dropped
	p.notes, p.dropped = nil, 0
	p.mu.Unlock()
	for _, nt := range notes {
		attrs := []any{"member", nt.name, "gossip", nt.gossip}
		if nt.err != nil {
			attrs = append(attrs, "err", nt.err)
		} else {
			attrs = append(attrs, "id", nt.m.ID, "remote", nt.m.remote(), "kinds", nt.m.Kinds)
		}
		p.log.Log(context.Background(), nt.level, nt.msg, attrs...)
	}
	if dropped > 0 {
		p.log.Warn("membership events not logged: queue full", "dropped", dropped)
	}
}

// memberlistLog routes memberlist's standard-library log lines to slog:
// [WARN] and [ERR] at warn level, the rest at debug.
type memberlistLog struct{ l *slog.Logger }

// Write logs one memberlist line.
func (w memberlistLog) Write(b []byte) (int, error) {
	s := strings.TrimSuffix(string(b), "\n")
	lvl := slog.LevelDebug
	for _, prefix := range []string{"[WARN] ", "[ERR] ", "[INFO] ", "[DEBUG] "} {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			if prefix == "[WARN] " || prefix == "[ERR] " {
				lvl = slog.LevelWarn
			}
			s = strings.TrimPrefix(rest, "memberlist: ")
			break
		}
	}
	w.l.Log(context.Background(), lvl, s, "source", "memberlist")
	return len(b), nil
}

var (
	_ memberlist.Delegate      = (*nodeDelegate)(nil)
	_ memberlist.EventDelegate = (*eventDelegate)(nil)
	_ memberlist.PingDelegate  = (*pingDelegate)(nil)
	_ memberlist.MergeDelegate = (*mergeDelegate)(nil)
	_ memberlist.AliveDelegate = (*aliveDelegate)(nil)
	_ memberlist.Broadcast     = noticeBroadcast{}
)
