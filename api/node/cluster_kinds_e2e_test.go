package node

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestClusterRefusesOtherKinds: the plugin example links one kind more than
// the stock binary, so neither may join a cluster of the other: the
// joining serve exits 1 naming the kind, and the member it tried to join
// carries on alone.
func TestClusterRefusesOtherKinds(t *testing.T) {
	root := t.TempDir()
	stockBin, pluginBin := testutil.Binary(t), testutil.Build(t, "./examples/plugin")
	tests := []struct {
		name          string
		seed, joiner  string // binaries
		seedName      string
		wantInMessage string
	}{
		{"plugin joins stock", stockBin, pluginBin, "s1",
			`cluster: this node links kinds \[[^\]]+\] that member s1 lacks — every member must link the same kinds`},
		{"stock joins plugin", pluginBin, stockBin, "p1",
			`cluster: member p1 links kinds \[[^\]]+\] that this node lacks — every member must link the same kinds`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seed := testutil.StartBinary(t, tc.seed, filepath.Join(root, tc.seedName), "--node-name", tc.seedName)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, tc.joiner, "serve", "--data", filepath.Join(root, tc.seedName+"-joiner"),
				"--http", "127.0.0.1:0", "--mqtt", "", "--coap", "", "--gossip", "127.0.0.1:0", "--remote", "127.0.0.1:0",
				"--node-name", "joiner", "--join", seed.Addr("gossip"))
			out, err := cmd.CombinedOutput()
			if err == nil || cmd.ProcessState.ExitCode() != 1 {
				t.Fatalf("joiner exited %v, want status 1:\n%s", err, out)
			}
			if !regexp.MustCompile(tc.wantInMessage).Match(out) {
				t.Fatalf("output does not match %q:\n%s", tc.wantInMessage, out)
			}
			if !aliveExactly(seed.Client(), tc.seedName) {
				t.Errorf("the seed's view after the refused join: %s", clusterSummary(seed.Client()))
			}
		})
	}
}
