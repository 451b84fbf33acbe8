package cluster

import (
	"fmt"
	"testing"

	"github.com/twinmesh/twinmesh/persistence"
)

func TestContribCopiesCoalesce(t *testing.T) {
	var c contribCopies
	put := func(k, v string) persistence.WireOp {
		return persistence.WireOp{T: "doc.put", B: string(persistence.BucketContrib), K: k, V: []byte(v)}
	}
	if !c.add("a", []persistence.WireOp{put("r/c/d1", "1"), put("r/c/d2", "1")}) {
		t.Fatal("refused into an empty buffer")
	}
	if !c.add("a", []persistence.WireOp{put("r/c/d1", "2")}) || !c.add("b", []persistence.WireOp{put("r/c/d1", "9")}) {
		t.Fatal("refused")
	}
	del := persistence.WireOp{T: "doc.del", B: string(persistence.BucketContrib), K: "r/c/d2"}
	c.add("a", []persistence.WireOp{del})
	got := c.take()
	if len(got["a"]) != 2 || string(got["a"]["r/c/d1"].V) != "2" || got["a"]["r/c/d2"].T != "doc.del" || string(got["b"]["r/c/d1"].V) != "9" {
		t.Fatalf("queued %+v", got)
	}
	if c.take() != nil {
		t.Fatal("take left something behind")
	}

	// Full: the caller sends its own ops.
	ops := make([]persistence.WireOp, 0, contribMaxKeys)
	for i := range contribMaxKeys {
		ops = append(ops, put(fmt.Sprintf("r/c/%d", i), "1"))
	}
	if !c.add("a", ops) {
		t.Fatal("refused up to the bound")
	}
	if c.add("a", []persistence.WireOp{put("r/c/new", "1")}) {
		t.Fatal("took more than the bound")
	}
}
