package testutil

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// rabbitBin is where Debian's rabbitmq-server puts the scripts that do not
// switch to the rabbitmq user (shared/DEPENDENCIES.md).
const rabbitBin = "/usr/lib/rabbitmq/bin/"

// Rabbit is a RabbitMQ node with its AMQP 1.0 plugin, on loopback, in a
// temporary folder: one per test process, shared by the tests of a package
// (StopRabbitMQ in TestMain ends it).
type Rabbit struct {
	dir  string
	Port int // the AMQP listener
	// TLSPort is the AMQPS listener, with a certificate for 127.0.0.1
	// signed by CA (PEM).
	TLSPort int
	CA      string
	env     []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd ended
}

var (
	rabbitOnce sync.Once
	rabbit     *Rabbit
	rabbitErr  error
)

// RabbitMQ returns the process's broker, starting it on first use. It skips
// the test when rabbitmq-server is not installed, or fails it under CI=true
// (scripts/test-deps.sh installs it).
func RabbitMQ(t testing.TB) *Rabbit {
	t.Helper()
	if _, err := os.Stat(rabbitBin + "rabbitmq-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("rabbitmq-server is required in CI (scripts/test-deps.sh installs it): %v", err)
		}
		t.Skipf("rabbitmq-server not installed (run scripts/test-deps.sh)")
	}
	rabbitOnce.Do(func() { rabbit, rabbitErr = startRabbit() })
	if rabbitErr != nil {
		t.Fatalf("start rabbitmq: %v", rabbitErr)
	}
	return rabbit
}

// StopRabbitMQ stops the process's broker and its epmd, if one started.
func StopRabbitMQ() {
	if rabbit != nil {
		rabbit.Stop()
		rabbit.killEpmd() // epmd outlives the broker
		_ = os.RemoveAll(rabbit.dir)
	}
}

func startRabbit() (*Rabbit, error) {
	dir, err := os.MkdirTemp("", "twinmesh-rabbit-")
	if err != nil {
		return nil, err
	}
	// The four listeners stay open until all are chosen, so that the
	// kernel cannot hand the same port out twice, and they listen on all
	// interfaces: the broker checks its distribution port that way and
	// fails the boot (dist_port_already_used) when anything holds it.
	var ports [4]int
	var held []net.Listener
	for i := range ports {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			return nil, err
		}
		held = append(held, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range held {
		l.Close()
	}
	r := &Rabbit{dir: dir, Port: ports[0], TLSPort: ports[3]}
	if r.CA, err = writeTestCerts(dir); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("listeners.tcp.1 = 127.0.0.1:%d\nloopback_users = none\n"+
		"listeners.ssl.1 = 127.0.0.1:%d\nssl_options.cacertfile = %s\nssl_options.certfile = %s\n"+
		"ssl_options.keyfile = %s\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
		r.Port, r.TLSPort, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[rabbitmq_amqp1_0].\n"), 0o600); err != nil {
		return nil, err
	}
	r.env = append(os.Environ(), "HOME="+dir,
		"RABBITMQ_NODENAME=twinmesh"+strconv.Itoa(ports[1])+"@localhost",
		"RABBITMQ_DIST_PORT="+strconv.Itoa(ports[1]),
		"ERL_EPMD_PORT="+strconv.Itoa(ports[2]), "ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PLUGINS_EXPAND_DIR="+filepath.Join(dir, "plugins"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
		// Not the test's working directory, the package's source folder.
		"ERL_CRASH_DUMP="+filepath.Join(dir, "erl_crash.dump"))
	if err := r.Start(); err != nil {
		r.killEpmd()
		return nil, err
	}
	return r, nil
}

// writeTestCerts writes a CA and a server certificate for 127.0.0.1 signed
// by it into dir, returning the CA's PEM.
func writeTestCerts(dir string) (string, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "twinmesh test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for name, b := range map[string][]byte{
		"ca.pem":   caPEM,
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return "", err
		}
	}
	return string(caPEM), nil
}

// TLSURL is the broker's AMQPS URL with the default guest account.
func (r *Rabbit) TLSURL() string { return fmt.Sprintf("amqps://guest:guest@127.0.0.1:%d", r.TLSPort) }

// URL is the broker's AMQP URL with the default guest account.
func (r *Rabbit) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d", r.Port) }

// Start starts the broker (again, after Stop, with the same queues) and
// waits until it serves.
func (r *Rabbit) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(rabbitBin + "rabbitmq-server")
	cmd.Env = r.env
	out, err := os.OpenFile(filepath.Join(r.dir, "server.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); out.Close(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		// await_startup fails at once until the node registered with epmd.
		c := exec.CommandContext(ctx, rabbitBin+"rabbitmqctl", "await_startup", "--timeout", "30")
		c.Env = r.env
		if err := c.Run(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(filepath.Join(r.dir, "server.out"))
			return fmt.Errorf("rabbitmq did not start: %s", b)
		case <-time.After(time.Second):
		}
	}
}

// Stop stops the broker (its epmd stays for a Start).
func (r *Rabbit) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := exec.Command(rabbitBin+"rabbitmqctl", "stop")
	c.Env = r.env
	if err := c.Run(); err != nil && r.cmd != nil {
		_ = r.cmd.Process.Kill()
	}
	// rabbitmqctl stop returns before the node let go of its ports: a
	// Start before that fails with dist_port_already_used.
	if r.cmd != nil {
		select {
		case <-r.exited:
		case <-time.After(30 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
	}
	r.cmd = nil
}

// Ctl runs rabbitmqctl with args against the broker.
func (r *Rabbit) Ctl(args ...string) ([]byte, error) {
	c := exec.Command(rabbitBin+"rabbitmqctl", args...)
	c.Env = r.env
	return c.CombinedOutput()
}

// killEpmd stops the broker's epmd (on its own port).
func (r *Rabbit) killEpmd() {
	c := exec.Command("epmd", "-kill")
	c.Env = r.env
	_ = c.Run()
}

// Log returns the broker's log files joined, for a failing test to show.
func (r *Rabbit) Log() string {
	files, _ := filepath.Glob(filepath.Join(r.dir, "log", "*.log"))
	var out []byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		out = append(out, b...)
	}
	return string(out)
}
