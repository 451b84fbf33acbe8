package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/memberlist"
)

// KindsError is the refusal of a member that links other entity kinds
// than this node: every member must link the same kinds (a plugin binary
// with one kind more cannot join a cluster of stock binaries, nor the
// reverse). It matches ErrKindsMismatch.
type KindsError struct {
	// Member is the other member's node name.
	Member string
	// Missing are the kinds the member links and this node lacks; Extra
	// the kinds this node links and the member lacks. Both sorted.
	Missing, Extra []string
}

// Error names the difference both ways.
func (e *KindsError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, fmt.Sprintf("member %s links kinds %v that this node lacks", e.Member, e.Missing))
	}
	if len(e.Extra) > 0 {
		if len(parts) == 0 {
			parts = append(parts, fmt.Sprintf("this node links kinds %v that member %s lacks", e.Extra, e.Member))
		} else {
			parts = append(parts, fmt.Sprintf("this node links %v that %s lacks", e.Extra, e.Member))
		}
	}
	return "cluster: " + strings.Join(parts, "; ") + " — every member must link the same kinds"
}

// Is makes errors.Is(err, ErrKindsMismatch) hold.
func (e *KindsError) Is(target error) bool { return target == ErrKindsMismatch }

// checkKinds returns a *KindsError when the memberlist node n is a member
// of this cluster whose kinds differ from this node's. Clients (no kinds,
// on either side), members of other clusters, unreadable metadata and
// other incarnations of this node are not its business.
func (p *Provider) checkKinds(n *memberlist.Node) error {
	m, err := decodeMeta(n.Meta)
	p.mu.Lock()
	self := p.self
	p.mu.Unlock()
	if err != nil || m.Cluster != self.Cluster || m.Node == self.Node || len(m.Kinds) == 0 || len(self.Kinds) == 0 {
		return nil
	}
	missing, extra := kindsDiff(self.Kinds, m.Kinds)
	if len(missing) == 0 && len(extra) == 0 {
		return nil
	}
	name := m.Node
	if name == "" {
		name = n.Name
	}
	return &KindsError{Member: name, Missing: missing, Extra: extra}
}

// kindsDiff returns the kinds only theirs has and those only mine has,
// sorted.
func kindsDiff(mine, theirs []string) (missing, extra []string) {
	for _, k := range theirs {
		if !slices.Contains(mine, k) {
			missing = append(missing, k)
		}
	}
	for _, k := range mine {
		if !slices.Contains(theirs, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	return missing, extra
}

// refuseKinds records that a member with other kinds was refused. While
// this node is joining (StartMember has not returned), the first refusal
// fails the start: the newcomer is the one that leaves. Once it is a
// member, it refuses the newcomer and logs it, once per incarnation.
func (p *Provider) refuseKinds(n *memberlist.Node, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.joining {
		if p.joinRefused == nil {
			p.joinRefused = err
		}
		return
	}
	if p.refused[n.Name] {
		return
	}
	p.refused[n.Name] = true
	gossip := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	p.noteLocked(note{msg: "member refused", level: slog.LevelWarn, name: n.Name, gossip: gossip, err: err})
	p.changed()
}
