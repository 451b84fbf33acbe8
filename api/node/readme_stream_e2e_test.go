package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// readmeBlocks returns the first n fenced sh blocks of README.md after the
// line that contains marker.
func readmeBlocks(t *testing.T, marker string, n int) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	var out []string
	for len(out) < n {
		var block string
		if _, rest, ok = strings.Cut(rest, "```sh\n"); !ok {
			t.Fatalf("fewer than %d sh blocks after %q", n, marker)
		}
		block, rest, _ = strings.Cut(rest, "```")
		out = append(out, block)
	}
	return out
}

// freePort returns a loopback port nothing listens on (it was free a
// moment ago).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// startSSHD runs an OpenSSH server on loopback that admits the current
// user with a key of the test's; it returns its address and the ssh
// options that log in.
func startSSHD(t *testing.T) (addr, sshOpts string) {
	t.Helper()
	sshd := "/usr/sbin/sshd" // not on a non-root PATH
	if _, err := os.Stat(sshd); err != nil {
		sshd = testutil.RequireTool(t, "sshd")
	}
	keygen := testutil.RequireTool(t, "ssh-keygen")
	dir := t.TempDir()
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := strings.Join([]string{"Port " + port, "ListenAddress 127.0.0.1", "HostKey " + filepath.Join(dir, "host"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"), "PidFile " + filepath.Join(dir, "sshd.pid"),
		"StrictModes no", "UsePAM no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
		"KbdInteractiveAuthentication no", "Subsystem sftp internal-sftp", ""}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd's privilege separation needs this folder (the package's
	// service would create it).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sshd:\n%s", logs.String())
		}
	})
	addr = "127.0.0.1:" + port
	testutil.Eventually(t, 10*time.Second, "sshd to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return addr, "-i " + filepath.Join(dir, "user") + " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
}

// TestReadmeStreamSSH runs the README's SSH walkthrough as written, with
// the test's ports, folders and user: a real sshd reached by ssh and scp
// through `twinmesh stream proxy` → node → `twinmesh stream agent`.
func TestReadmeStreamSSH(t *testing.T) {
	for _, tool := range []string{"ssh", "scp", "curl", "bash"} {
		testutil.RequireTool(t, tool)
	}
	sshdAddr, sshOpts := startSSHD(t)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	n := testutil.Start(t, data)
	api := n.Client()
	for _, e := range []string{`hq {"kind":"building"}`, `hq-1 {"kind":"floor","parent":"hq"}`, `hq-1-lab {"kind":"room","parent":"hq-1"}`} {
		id, body, _ := strings.Cut(e, " ")
		api.MustDo(t, "PUT", "/api/v1/entities/"+id, body, 201)
	}
	work, remote := t.TempDir(), t.TempDir()
	firmware := make([]byte, 1<<20)
	_, _ = rand.Read(firmware)
	if err := os.WriteFile(filepath.Join(work, "firmware.bin"), firmware, 0o600); err != nil {
		t.Fatal(err)
	}
	proxyPort := freePort(t)
	blocks := readmeBlocks(t, "checked by TestReadmeStreamSSH", 3)
	r := strings.NewReplacer(
		"data/admin.token", filepath.Join(data, "admin.token"),
		"localhost:8080", n.Addr("http"),
		"node.example.com:1883", n.Addr("mqtt"),
		"node.example.com:8080", n.Addr("http"),
		"--listen 127.0.0.1:2222 &", "--listen 127.0.0.1:"+proxyPort+" 2> proxy.log &\n"+
			"until grep -q listening proxy.log; do sleep 0.1; done",
		"ssh=127.0.0.1:22", "ssh="+sshdAddr,
		"ssh -p 2222 pi@127.0.0.1", "ssh $SSH_OPTS -p "+proxyPort+" "+me.Username+"@127.0.0.1",
		"scp -P 2222 firmware.bin pi@127.0.0.1:/tmp/", "scp $SSH_OPTS -P "+proxyPort+" firmware.bin "+me.Username+"@127.0.0.1:"+remote+"/",
	)
	// The agent runs in the background, as it would on the device; the
	// test waits for it to subscribe, and stops what the script started.
	script := "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + r.Replace(blocks[0]) +
		strings.TrimSpace(r.Replace(blocks[1])) + " 2> agent.log &\n" +
		"until grep -q 'waiting for stream requests' agent.log; do sleep 0.1; done\n" + r.Replace(blocks[2])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = work
	cmd.Stdin = strings.NewReader("echo through-the-stream from $(whoami)\n")
	cmd.Env = append(os.Environ(), "SSH_OPTS="+sshOpts,
		"PATH="+filepath.Dir(testutil.Binary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	logs := func(name string) string { b, _ := os.ReadFile(filepath.Join(work, name)); return string(b) }
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s\n--- script:\n%s\n--- agent:\n%s--- proxy:\n%s--- node:\n%s",
			err, out, script, logs("agent.log"), logs("proxy.log"), n.Logs())
	}
	if want := "through-the-stream from " + me.Username; !strings.Contains(string(out), want) {
		t.Errorf("ssh's output lacks %q:\n%s", want, out)
	}
	if got, err := os.ReadFile(filepath.Join(remote, "firmware.bin")); err != nil || !bytes.Equal(got, firmware) {
		t.Errorf("scp: the copy differs (%d bytes, %v)", len(got), err)
	}
	closed := regexp.MustCompile(`msg="stream closed" .*device=pi-7 name=ssh who="on-call \(token [0-9a-f]+\)"`).FindAllString(n.Logs(), -1)
	if len(closed) != 2 {
		t.Errorf("the node logged %d streams of pi-7 (want 2, ssh and scp):\n%s", len(closed), n.Logs())
	}
	t.Logf("ssh and scp through a stream; the node logged:\n%s", strconv.Quote(strings.Join(closed, "\n")))
}
