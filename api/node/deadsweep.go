package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/twinmesh/twinmesh/cluster"
)

// deadSweepEvery is how often a member looks for members declared dead
// whose device sessions are still marked connected.
const deadSweepEvery = 2 * time.Second

// sessionSweeper is what sweepDeadMembers needs of the actor system.
type sessionSweeper interface {
	SweepSessions(ctx context.Context, node string, before time.Time) (int, error)
}

// deadMembers returns the members to sweep: declared dead by memberlist
// (a crash; a member that left gracefully disconnected its own sessions),
// with no newer incarnation of the same name alive, and not swept before
// (keyed by incarnation). It returns nothing while this node sees fewer
// than a majority of known members alive: on the minority side of a
// partition, the "dead" members are alive on the other side and hold
// their sessions, and the sweep's writes could not be acknowledged here
// anyway.
func deadMembers(ms []cluster.Member, known int, swept map[string]bool) []cluster.Member {
	alive := 0
	for _, m := range ms {
		if m.Self || m.State == cluster.StateAlive || m.State == cluster.StateSuspect {
			alive++
		}
	}
	if alive < known/2+1 {
		return nil
	}
	var out []cluster.Member
	for _, m := range ms {
		if m.Self || m.State != cluster.StateDead || m.ID == "" || swept[m.ID] || len(m.Kinds) == 0 {
			continue
		}
		out = append(out, m)
	}
	return out
}

// sweepDeadMembers marks disconnected, every deadSweepEvery until ctx ends,
// the devices whose twins say they are connected to a member declared dead
// (issue 12: after a member's crash its devices showed "connected", and
// their buildings counted them, until it came back). Every surviving
// member sweeps the copies in its own store, so that together they reach
// every device; a disconnection is conditional (the device's twin still
// names the dead node with a session older than the sweep), so a device
// that reconnected elsewhere keeps its state, and sweeps of one device by
// several members change it once. A cut-off member that comes back is
// retired and restarts (cluster.Provider.Retired), which ends its sessions
// too: their devices reconnect and are marked connected again.
func sweepDeadMembers(ctx context.Context, log *slog.Logger, members func() []cluster.Member, known func() int, sys sessionSweeper) {
	t := time.NewTicker(deadSweepEvery)
	defer t.Stop()
	swept := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, m := range deadMembers(members(), known(), swept) {
			n, err := sys.SweepSessions(ctx, m.Name, time.Now())
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// Retried at the next tick: a write may have lacked its
				// quorum while the cluster settled.
				log.Warn("sessions of a dead member", "member", m.Name, "err", err, "disconnected", n)
				continue
			}
			swept[m.ID] = true
			if n > 0 {
				log.Info("devices of a dead member marked disconnected", "member", m.Name, "devices", n)
			}
		}
	}
}
