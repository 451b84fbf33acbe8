package node

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// noisy are log lines that say nothing useful: mochi's empty messages and
// packet dumps, and its own line about a refusal the hook already logged.
var noisy = regexp.MustCompile(`msg="?"? |msg="error processing packet" error="not authorized"| pk=`)

// TestRefusalsAreLoggedWithDeviceAddressAndReason: a forged password, an
// unknown device and another device's topic each give one line that names
// the device, its address and the reason, and nothing else (issue 18).
func TestRefusalsAreLoggedWithDeviceAddressAndReason(t *testing.T) {
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	d := register(t, api, "lamp-1", "")
	broker := "tcp://" + n.Addr("mqtt")
	if c, err := connect(broker, d.ID, "hub.test/"+d.ID+"/?api-version=2021-04-12", "SharedAccessSignature sr=x&sig=AAAA&se=9999999999"); err == nil {
		c.Disconnect(10)
		t.Fatal("forged password accepted")
	}
	if c, err := connect(broker, "ghost-7", "hub.test/ghost-7/?api-version=2021-04-12", token(t, "ghost-7", d.Primary, time.Hour)); err == nil {
		c.Disconnect(10)
		t.Fatal("unknown device accepted")
	}
	dev := connectDevice(t, n, d)
	dev.Publish("devices/lamp-2/messages/events/", 1, false, `{"on":true}`).WaitTimeout(5 * time.Second)

	want := []*regexp.Regexp{
		regexp.MustCompile(`level=WARN msg="connection refused" component=mqtt device=lamp-1 client=lamp-1 remote=127\.0\.0\.1:\d+ reason=bad_token`),
		regexp.MustCompile(`level=WARN msg="connection refused" component=mqtt device=ghost-7 client=ghost-7 remote=127\.0\.0\.1:\d+ reason=unknown_device`),
		regexp.MustCompile(`level=WARN msg="publish refused" component=mqtt device=lamp-1 remote=127\.0\.0\.1:\d+ topic=devices/lamp-2/messages/events/ reason="another device's topic`),
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, re := range want {
		for !re.MatchString(n.Logs()) {
			if time.Now().After(deadline) {
				t.Fatalf("no line matches %s:\n%s", re, n.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, line := range strings.Split(n.Logs(), "\n") {
		if noisy.MatchString(line) {
			t.Errorf("noisy line: %s", line)
		}
	}
}

// TestGracefulClusterStopIsQuiet: two members that stop one after the
// other with SIGTERM log no ERROR and no WARN (protoactor's endpoint
// writer and memberlist used to, about connections closed on purpose).
func TestGracefulClusterStopIsQuiet(t *testing.T) {
	root := t.TempDir()
	n1 := ceStart(t, "q1", "q1#1", filepath.Join(root, "q1"), "")
	n2 := ceStart(t, "q2", "q2#1", filepath.Join(root, "q2"), n1.node.Addr("gossip"))
	waitAlive(t, 60*time.Second, []*cmember{n1, n2})
	ceDo(t, 30*time.Second, []*cmember{n1}, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201, 200)
	ceDo(t, 30*time.Second, []*cmember{n2}, "PUT", "/api/v1/devices/d1", `{"parent":"b1"}`, 201, 200)
	for _, m := range []*cmember{n2, n1} {
		if code := m.node.Stop(); code != 0 {
			t.Fatalf("%s exited %d", m.label, code)
		}
	}
	for _, m := range []*cmember{n1, n2} {
		for _, line := range strings.Split(m.node.Logs(), "\n") {
			if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
				t.Errorf("%s: %s", m.label, line)
			}
		}
	}
}
