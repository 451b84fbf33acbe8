package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/twinmesh/twinmesh/actors"
	"github.com/twinmesh/twinmesh/actors/errcode"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
)

// local is this node as other members reach it: the actor system takes
// their events and catalog changes, the device sessions their direct-method
// calls and stream requests.
type local struct {
	*actors.System
	actors.Commander
	streams actors.StreamSignaller
}

// noSessions is the device sessions of a node without MQTT: none.
type noSessions struct{}

func (noSessions) InvokeMethod(context.Context, string, string, []byte) (int, []byte, error) {
	return 0, nil, errcode.New(errcode.NotConnected, "MQTT is not running on this node")
}

var (
	_ actors.Replication    = (*tmcluster.Placement)(nil)
	_ tmcluster.Local       = local{}
	_ tmcluster.StreamLocal = local{}
	_ actors.Commander      = noSessions{}
)

// clusterTLS loads the node's certificate and the cluster CA for mutual TLS
// between nodes: every node presents its certificate and accepts only peers
// whose certificate the CA signed. Peers are dialled by their --remote
// address, so a certificate must name it (an IP SAN for an IP address).
func clusterTLS(c *serveConfig) (*actors.RemoteTLS, error) {
	if c.ClusterTLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.ClusterTLSCert, c.ClusterTLSKey)
	if err != nil {
		return nil, fmt.Errorf("%w: cluster TLS key pair: %v", errUsage, err)
	}
	pem, err := os.ReadFile(c.ClusterTLSCA)
	if err != nil {
		return nil, fmt.Errorf("%w: cluster TLS CA: %v", errUsage, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: cluster TLS CA %s holds no PEM certificate", errUsage, c.ClusterTLSCA)
	}
	return &actors.RemoteTLS{
		Server: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
		Client: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
	}, nil
}
