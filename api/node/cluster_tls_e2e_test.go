package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// writeClusterPKI writes a CA and a node certificate for 127.0.0.1 into dir.
func writeClusterPKI(t *testing.T, dir string) (cert, key, ca string, pool *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "twinmesh test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nodeTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "twinmesh node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeTmpl, caCert, &nodeKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(nodeKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	return write("node.crt", "CERTIFICATE", nodeDER), write("node.key", "EC PRIVATE KEY", keyDER), write("ca.crt", "CERTIFICATE", caDER), pool
}

// TestClusterTLS: two nodes speak mutual TLS to each other (grain calls,
// replication and events cross it), and the remote port refuses a peer
// without a certificate signed by the cluster CA.
func TestClusterTLS(t *testing.T) {
	root := t.TempDir()
	cert, key, ca, pool := writeClusterPKI(t, root)
	tlsFlags := []string{"--cluster-tls-cert", cert, "--cluster-tls-key", key, "--cluster-tls-ca", ca}
	n1 := testutil.Start(t, filepath.Join(root, "n1"), append([]string{"--node-name", "n1"}, tlsFlags...)...)
	n2 := testutil.Start(t, filepath.Join(root, "n2"), append([]string{"--node-name", "n2", "--join", n1.Addr("gossip")}, tlsFlags...)...)
	c1, c2 := n1.Client(), n2.Client()
	testutil.Eventually(t, 60*time.Second, "two members alive on both nodes", func() bool {
		return aliveExactly(c1, "n1", "n2") && aliveExactly(c2, "n1", "n2")
	})
	// Ten twins: with rendezvous placement over two members some grains
	// live on each node, so writes through n2 and reads through n1 cross
	// the TLS connection both ways.
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("tls-dev-%d", i)
		c1.MustDo(t, "PUT", "/api/v1/devices/"+id, nil, 201)
		c2.MustDo(t, "PATCH", "/api/v1/twins/"+id, fmt.Sprintf(`{"desired":{"n":%d}}`, i), 200)
		var tw struct {
			Desired map[string]any `json:"desired"`
		}
		if err := json.Unmarshal(c1.MustDo(t, "GET", "/api/v1/twins/"+id, nil, 200), &tw); err != nil {
			t.Fatal(err)
		}
		if tw.Desired["n"] != float64(i) {
			t.Fatalf("twin %s read through n1: desired %v", id, tw.Desired)
		}
	}
	var grains int
	for _, c := range []*testutil.Client{c1} {
		doc, err := ceReadCluster(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range doc.Members {
			grains += m.Grains
			if m.Grains < 0 {
				t.Errorf("member %s did not report its grains over TLS", m.Name)
			}
		}
	}
	if grains == 0 {
		t.Error("no grains reported")
	}

	// A client without a certificate is refused by the remote listener.
	addr := n1.Addr("remote")
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		_ = conn.Close()
	}
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("remote accepted a TLS client without a certificate (err %v)", err)
	}
	// And a plain TCP client gets no gRPC service either: its bytes are not TLS.
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	nr, _ := raw.Read(buf)
	_ = raw.Close()
	if nr > 0 && buf[0] != 0x15 { // 0x15: a TLS alert record
		t.Fatalf("plain HTTP/2 got a non-TLS answer: %q", buf[:nr])
	}
}
