package cluster

import "errors"

var (
	// ErrConfig is wrapped by every error NewProvider returns for a Config it
	// rejects (bad gossip address, key length, profile, join address).
	ErrConfig = errors.New("cluster: invalid config")

	// ErrJoin is wrapped by the error of StartMember or StartClient when
	// Config.Join is non-empty and none of the seeds could be contacted.
	ErrJoin = errors.New("cluster: no seed reachable")

	// ErrMetaTooLarge is wrapped by the error of StartMember when the node's
	// metadata (protoactor address, actor-system ID and kinds) does not fit in
	// memberlist's 512-byte node metadata; register fewer or shorter kinds.
	ErrMetaTooLarge = errors.New("cluster: node metadata too large")

	// ErrKindsMismatch is matched by the *KindsError of StartMember when a
	// member met while joining links other entity kinds than this node:
	// every member of a cluster must link the same kinds.
	ErrKindsMismatch = errors.New("cluster: members link different kinds")
)
