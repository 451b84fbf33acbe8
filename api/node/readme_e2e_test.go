package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// readmeBlock returns the first fenced block of README.md after the line
// that contains marker.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, block, ok := strings.Cut(after, "```sh\n")
	if !ok {
		t.Fatalf("no sh block after %q", marker)
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// localhostCert writes a self-signed certificate for localhost and
// 127.0.0.1 (the names the README's commands use) and its key.
func localhostCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestReadmeMosquittoCommands runs the README's ready-to-paste mosquitto
// commands, as they are written, against a node (only the ports, the data
// folder and the CA file are the test's own), and checks what they did.
func TestReadmeMosquittoCommands(t *testing.T) {
	for _, tool := range []string{"mosquitto_pub", "mosquitto_sub", "mosquitto_rr", "curl", "bash"} {
		testutil.RequireTool(t, tool)
	}
	cert, key := localhostCert(t)
	data := t.TempDir()
	n := testutil.Start(t, data, "--mqtts", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
	api := n.Client()
	register(t, api, "thermo-1", "")
	_, mqttPort, _ := net.SplitHostPort(n.Addr("mqtt"))
	_, mqttsPort, _ := net.SplitHostPort(n.Addr("mqtts"))
	script := strings.NewReplacer("-p 1883", "-p "+mqttPort, "-p 8883", "-p "+mqttsPort, "localhost:8080", n.Addr("http"),
		"--data ./data", "--data "+data, "--cafile ca.pem", "--cafile "+cert).Replace(readmeBlock(t, "checked by TestReadmeMosquittoCommands"))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "H=Authorization: Bearer "+n.Token,
		"PATH="+filepath.Dir(testutil.Binary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s\n--- script:\n%s\n--- node:\n%s", err, out, script, n.Logs())
	}
	for _, want := range []string{`"firmware":"1.0.0"`, `"hello":"device"`, `$iothub/twin/PATCH/properties/desired/?$version=`, `"setpoint":22`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	tw := twinOf(t, api, "thermo-1")
	if tw.Telemetry["temperature"]["value"] != 21.7 || tw.Telemetry["humidity"]["value"] != 40.0 {
		t.Errorf("telemetry in the twin: %v", tw.Telemetry)
	}
	if tw.Reported["firmware"] != "1.0.0" {
		t.Errorf("reported %v", tw.Reported)
	}
	t.Logf("output of the README's commands:\n%s", out)
}
