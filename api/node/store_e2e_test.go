package node

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
	"github.com/twinmesh/twinmesh/persistence"
)

// runBin runs the twinmesh binary and returns its exit code and output.
func runBin(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Binary(t), args...)
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// Issue 12, item 10: a damaged twinmesh.db made serve panic (a bbolt
// assertion while rebuilding the freelist) and exit 2, which systemd's
// unit treats as "do not restart", and an empty file was silently a fresh
// store. serve opens the store in a child process first: exit 1 with a
// message naming the file and what to do. `twinmesh check` finds the damage too, and `twinmesh backup` copies a
// sound store, from the running node or from the file.
func TestStoreToolsAndDamagedStore(t *testing.T) {
	data := t.TempDir()
	n := testutil.Start(t, data)
	n.Client().MustDo(t, "PUT", "/api/v1/devices/keep-1", nil, 201)
	online := filepath.Join(t.TempDir(), "online.db")
	if code, out := runBin(t, "backup", "--data", data, "--out", online); code != 0 {
		t.Fatalf("backup of a running node: exit %d\n%s", code, out)
	}
	if code, out := runBin(t, "compact", "--data", data); code != 1 || !strings.Contains(out, "stop the node first") {
		t.Fatalf("compact of a running node's store: exit %d\n%s", code, out)
	}
	if code := n.Stop(); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	offline := filepath.Join(t.TempDir(), "offline.db")
	if code, out := runBin(t, "backup", "--data", data, "--out", offline); code != 0 {
		t.Fatalf("backup of a stopped node: exit %d\n%s", code, out)
	}
	for _, copyPath := range []string{online, offline} {
		db, err := persistence.OpenReadOnly(copyPath)
		if err != nil {
			t.Fatalf("open the backup: %v", err)
		}
		_, err = db.GetIdentity("keep-1")
		db.Close()
		if err != nil {
			t.Fatalf("backup %s lacks the device: %v", copyPath, err)
		}
	}
	if code, out := runBin(t, "check", "--data", data); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("check of a sound store: exit %d\n%s", code, out)
	}
	if code, out := runBin(t, "compact", "--data", data); code != 0 || !strings.Contains(out, "bytes") {
		t.Fatalf("compact of a stopped node's store: exit %d\n%s", code, out)
	}
	if code, out := runBin(t, "check", "--data", data); code != 0 {
		t.Fatalf("check after compaction: exit %d\n%s", code, out)
	}
	if db, err := persistence.OpenReadOnly(filepath.Join(data, "twinmesh.db")); err != nil {
		t.Fatal(err)
	} else {
		_, err = db.GetIdentity("keep-1")
		db.Close()
		if err != nil {
			t.Fatalf("the compacted store lacks the device: %v", err)
		}
	}

	sound, err := os.ReadFile(filepath.Join(data, "twinmesh.db"))
	if err != nil {
		t.Fatal(err)
	}
	damaged := append(append([]byte{}, sound[:8192]...), bytes.Repeat([]byte{0xAB}, len(sound)-8192)...)
	for _, tc := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"garbage pages", damaged, "damaged"},
		{"empty file", nil, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "twinmesh.db")
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if code, out := runBin(t, "check", "--data", dir); code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("check: exit %d, want 1 mentioning %q:\n%s", code, tc.want, out)
			}
			code, out := runBin(t, "serve", "--data", dir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--coap", "",
				"--gossip", "127.0.0.1:0", "--remote", "127.0.0.1:0")
			if code != 1 || !strings.Contains(out, path) || !strings.Contains(out, tc.want) || !strings.Contains(out, "restore") {
				t.Fatalf("serve on a %s store: exit %d, want 1 naming the file and what to do:\n%.2000s", tc.name, code, out)
			}
		})
	}
}
