package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConnectionStringCommand: the policies are generated on first use
// and read back after; a missing --host or an unknown policy is a usage
// error (exit 2).
func TestConnectionStringCommand(t *testing.T) {
	data := t.TempDir()
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := Main(append([]string{"connection-string", "--data", data}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	code, first, errOut := run("--host", "hub.local:8443")
	if code != 0 || !strings.HasPrefix(first, "HostName=hub.local:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=") {
		t.Fatalf("exit %d: %q %q", code, first, errOut)
	}
	if st, err := os.Stat(filepath.Join(data, "policies.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("policies.json: %v %v", st, err)
	}
	if code, again, _ := run("--host", "hub.local:8443"); code != 0 || again != first {
		t.Fatalf("second run: exit %d %q, want %q", code, again, first)
	}
	if code, other, _ := run("--host", "h", "--policy", "registryRead"); code != 0 || !strings.Contains(other, "SharedAccessKeyName=registryRead;") {
		t.Fatalf("registryRead: exit %d %q", code, other)
	}
	for _, args := range [][]string{{}, {"--host", "h", "--policy", "nobody"}, {"--host", "h", "extra"}} {
		if code, _, errOut := run(args...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d %q, want a usage error", args, code, errOut)
		}
	}
}
