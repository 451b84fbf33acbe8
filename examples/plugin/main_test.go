package main

import (
	"testing"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestCustomBinaryServesPluginKind builds this example and checks that the
// node it runs accepts comfort sensors, which the stock binary refuses.
func TestCustomBinaryServesPluginKind(t *testing.T) {
	bin := testutil.Build(t, "./examples/plugin")
	n := testutil.StartBinary(t, bin, t.TempDir())
	c := n.Client()
	c.MustDo(t, "PUT", "/api/v1/entities/lab", `{"kind":"room"}`, 201)
	c.MustDo(t, "PUT", "/api/v1/devices/s1", `{"kind":"comfort-sensor","parent":"lab"}`, 201)
	c.MustDo(t, "GET", "/api/v1/twins/s1", nil, 200)

	stock := testutil.Start(t, t.TempDir())
	stock.Client().MustDo(t, "PUT", "/api/v1/devices/s1", `{"kind":"comfort-sensor"}`, 400)
}
