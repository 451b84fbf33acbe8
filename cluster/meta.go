package cluster

import (
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"

	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/hashicorp/memberlist"
)

// meta is what a member gossips about itself in memberlist's node metadata
// (at most memberlist.MetaMaxSize = 512 bytes). JSON keeps it readable in
// memberlist debugging tools; unknown fields are ignored, so fields can be
// added.
type meta struct {
	// Cluster is protoactor's cluster name; members of another cluster that
	// share the gossip network are never handed to protoactor.
	Cluster string `json:"cluster,omitempty"`
	// Node is the twinmesh node name (Config.NodeName); the memberlist name
	// is Node/ID, one per incarnation.
	Node string `json:"node,omitempty"`
	// ID is the actor-system ID: one per incarnation of the node.
	ID string `json:"id"`
	// Host and Port are the protoactor remote address.
	Host string `json:"host"`
	Port int    `json:"port"`
	// Kinds are the grain kinds the member hosts; a client has none.
	Kinds []string `json:"kinds,omitempty"`
}

var errBadMeta = errors.New("not twinmesh node metadata")

func (m meta) encode() []byte {
	b, _ := json.Marshal(m) // strings, ints and bools: cannot fail
	return b
}

// fits reports whether the metadata fits in memberlist's limit.
func (m meta) fits() (int, bool) {
	n := len(m.encode())
	return n, n <= memberlist.MetaMaxSize
}

// leaveNotice is the user message a gracefully leaving node sends every
// alive peer, over TCP, before memberlist's Leave: memberlist v0.7.0 does not
// tell the event delegate whether a node left or failed
// (hashicorp/memberlist#293), and a metadata update is not sure to reach
// every peer before the leave does.
type leaveNotice struct {
	Leaving string `json:"leaving"` // memberlist name of the incarnation leaving
	ID      string `json:"id"`      // actor-system ID of the incarnation leaving
}

func (n leaveNotice) encode() []byte {
	b, _ := json.Marshal(n)
	return b
}

func decodeLeaveNotice(b []byte) (leaveNotice, error) {
	var n leaveNotice
	if err := json.Unmarshal(b, &n); err != nil || n.Leaving == "" || n.ID == "" {
		return n, errors.New("not a leave notice")
	}
	return n, nil
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) == 0 || len(b) > memberlist.MetaMaxSize {
		return m, errBadMeta
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, errBadMeta
	}
	if m.ID == "" || m.Host == "" || m.Port <= 0 || m.Port > 65535 {
		return m, errBadMeta
	}
	return m, nil
}

// remote is the member's protoactor address.
func (m meta) remote() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// member is the member as protoactor wants it. protoactor forms addresses
// as Host+":"+Port, so an IPv6 host is given in brackets.
func (m meta) member() *pcluster.Member {
	host := m.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return &pcluster.Member{Id: m.ID, Host: host, Port: int32(m.Port), Kinds: append([]string(nil), m.Kinds...)}
}
