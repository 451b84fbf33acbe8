package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/twinmesh/twinmesh/actors"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/persistence"
)

// replication adapts the cluster's Placement to the actor layer, turning
// the cluster package's sentinels into the actor layer's.
type replication struct{ *tmcluster.Placement }

func (r replication) Invoke(ctx context.Context, node, device, method string, payload []byte) (int, []byte, error) {
	st, resp, err := r.Placement.Invoke(ctx, node, device, method, payload)
	switch {
	case errors.Is(err, tmcluster.ErrRemoteNotConnected), errors.Is(err, tmcluster.ErrNoMember):
		return 0, nil, fmt.Errorf("%w: %v", actors.ErrNotConnected, err)
	case errors.Is(err, tmcluster.ErrRemoteTimeout):
		return 0, nil, fmt.Errorf("%w: %v", actors.ErrTimeout, err)
	case err != nil:
		return 0, nil, fmt.Errorf("%w: %v", actors.ErrUnavailable, err)
	}
	return st, resp, nil
}

var _ actors.Replication = replication{}

// remoteInvoke answers another member's direct-method call for a device
// whose session is on this node.
func remoteInvoke(local actors.Commander) func(ctx context.Context, device, method string, payload []byte) (int, []byte, error) {
	return func(ctx context.Context, device, method string, payload []byte) (int, []byte, error) {
		st, resp, err := local.InvokeMethod(ctx, device, method, payload)
		switch {
		case errors.Is(err, actors.ErrNotConnected):
			return 0, nil, fmt.Errorf("%w: %v", tmcluster.ErrRemoteNotConnected, err)
		case errors.Is(err, actors.ErrTimeout):
			return 0, nil, fmt.Errorf("%w: %v", tmcluster.ErrRemoteTimeout, err)
		}
		return st, resp, err
	}
}

// catalogChanged tells the actor system which document buckets another
// member changed.
func catalogChanged(sys *actors.System) func(ops []persistence.WireOp) {
	return func(ops []persistence.WireOp) {
		var buckets []string
		for _, w := range ops {
			if w.B != "" && !slices.Contains(buckets, w.B) {
				buckets = append(buckets, w.B)
			}
		}
		if len(buckets) > 0 {
			sys.CatalogChanged(buckets)
		}
	}
}

// resolveNode returns the protoactor address of the live member named node.
func resolveNode(p *tmcluster.Provider, node string) (string, bool) {
	for _, m := range p.Members() {
		if m.Name == node && m.Remote != "" && (m.State == tmcluster.StateAlive || m.State == tmcluster.StateSuspect) {
			return m.Remote, true
		}
	}
	return "", false
}

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
