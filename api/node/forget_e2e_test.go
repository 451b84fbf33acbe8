package node

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// A member counts in the cluster's majorities after it crashed and after
// the node that saw it restarted, until an operator forgets it: refused
// (409) while it is alive, 204 once it is down, and then no longer
// counted (GET /cluster "known").
func TestForgetMember(t *testing.T) {
	root := t.TempDir()
	n1 := ceStart(t, "n1", "n1#1", filepath.Join(root, "n1"), "")
	n2 := ceStart(t, "n2", "n2#1", filepath.Join(root, "n2"), n1.node.Addr("gossip"))
	n3 := ceStart(t, "n3", "n3#1", filepath.Join(root, "n3"), n1.node.Addr("gossip"))
	waitAlive(t, 60*time.Second, []*cmember{n1, n2, n3})
	known := func(m *cmember) int {
		v, err := ceReadCluster(m.api)
		if err != nil {
			return -1
		}
		return v.Known
	}
	testutil.Eventually(t, 10*time.Second, "n1 counts 3 members", func() bool { return known(n1) == 3 })
	ceDo(t, 10*time.Second, []*cmember{n1}, "DELETE", "/api/v1/cluster/members/n2", nil, 409)
	ceDo(t, 10*time.Second, []*cmember{n1}, "DELETE", "/api/v1/cluster/members/n1", nil, 409)

	n3.node.Kill()
	testutil.Eventually(t, 30*time.Second, "n1 to see n3 dead", func() bool {
		v, err := ceReadCluster(n1.api)
		if err != nil {
			return false
		}
		for _, m := range v.Members {
			if m.Name == "n3" {
				return m.State == "dead"
			}
		}
		return true // already out of the view
	})
	// n2 restarts: it still counts the crashed n3.
	n2.node.Stop()
	n2 = ceStart(t, "n2", "n2#2", n2.data, n1.node.Addr("gossip"))
	waitAlive(t, 60*time.Second, []*cmember{n1, n2})
	if k := known(n2); k != 3 {
		t.Fatalf("restarted n2 counts %d members, want 3 (n3 crashed, not forgotten)", k)
	}
	ceDo(t, 30*time.Second, []*cmember{n1}, "DELETE", "/api/v1/cluster/members/n3", nil, 204)
	for _, m := range []*cmember{n1, n2} {
		testutil.Eventually(t, 10*time.Second, m.label+" counts 2 members", func() bool { return known(m) == 2 })
	}
	// The two go on accepting writes.
	ceDo(t, 30*time.Second, []*cmember{n2}, "PUT", "/api/v1/entities/b1", `{"kind":"building"}`, 201, 200)
}
