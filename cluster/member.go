package cluster

// Member states, as Member.State reports them.
const (
	// StateAlive: memberlist counts the member in (it may be under
	// memberlist's own suspicion, which memberlist does not expose).
	StateAlive = "alive"
	// StateSuspect: alive for memberlist, but no direct probe of this node
	// has been acknowledged for longer than two probe rounds. memberlist
	// does not expose its own suspect state, so this is our approximation,
	// advisory only: the member stays in protoactor's topology until
	// memberlist declares it dead.
	StateSuspect = "suspect"
	// StateDead: memberlist declared the member failed.
	StateDead = "dead"
	// StateLeft: the member left gracefully (Shutdown(true)).
	StateLeft = "left"
)

// Member is one member of the gossip cluster as this node sees it (View
// shows part of it, with grain counts). Members returns copies: callers own
// them.
type Member struct {
	// Name is the memberlist node name.
	Name string `json:"name"`
	// Gossip is the member's gossip address ("ip:port").
	Gossip string `json:"gossip"`
	// Remote is the member's protoactor remote address, equal to its
	// ActorSystem.Address(); empty if its metadata could not be read.
	Remote string `json:"remote"`
	// ID is the member's actor-system ID, one per incarnation of the node.
	ID string `json:"id"`
	// State is StateAlive, StateSuspect, StateDead or StateLeft.
	State string `json:"state"`
	// Self marks this node.
	Self bool `json:"self,omitempty"`
	// Kinds are the grain kinds the member hosts, sorted; a client has none.
	Kinds []string `json:"kinds,omitempty"`
	// InTopology reports that this node last handed the member to
	// protoactor as part of the cluster topology, so that grains may be
	// placed on it. Clients, members leaving, members of another cluster and
	// incarnations protoactor has blocked (an ID that once dropped out of the
	// topology is never readmitted) are not in it.
	InTopology bool `json:"inTopology"`
}
