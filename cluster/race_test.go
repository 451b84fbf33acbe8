//go:build race

package cluster

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestTwoNodesWithoutRace runs TestTwoNodes, which two protoactor members in
// one process keep from passing under -race (see there), in a child
// `go test` built without -race.
func TestTwoNodesWithoutRace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package without -race")
	}
	cmd := exec.Command("go", "test", "-count=1", "-run", "^TestTwoNodes$", "-v", ".")
	var flags []string // GOFLAGS without -race
	for _, f := range strings.Fields(os.Getenv("GOFLAGS")) {
		if f != "-race" && f != "-race=true" {
			flags = append(flags, f)
		}
	}
	cmd.Env = append(os.Environ(), "GOFLAGS="+strings.Join(flags, " "))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test -run TestTwoNodes (without -race): %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
