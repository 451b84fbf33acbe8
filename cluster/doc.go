// Package cluster gives protoactor's cluster its membership from
// hashicorp/memberlist, and gives the node its view of the cluster for
// GET /api/v1/cluster.
//
// protoactor-go ships providers for consul, etcd, zookeeper and Kubernetes,
// but none that needs no external service; twinmesh runs as one static
// binary on plain VMs, so membership is gossiped with memberlist (the
// library behind Consul's and Nomad's LAN gossip). Each member advertises its
// protoactor address, actor-system ID and kinds in memberlist node metadata;
// on every membership change the Provider hands the alive members to
// protoactor with MemberList.UpdateClusterTopology.
//
// A node that restarts gets a new actor-system ID (protoactor blocks the IDs
// of members that left), so the ID identifies an incarnation, while the
// memberlist node name can be reused.
package cluster
