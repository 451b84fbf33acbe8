package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestCoAPLibcoapBlockwiseObserveLossy: libcoap's coap-client-openssl
// observes a device's desired properties through a link that drops 20 %
// and duplicates 10 % of the datagrams; each of several 3 KB desired
// changes goes out block-wise (a notification with the first block, the
// client fetching the rest), and the observer must end with the last one.
// It fails today (3 runs of 3), as go-coap's client does on the same
// transfer (TestCoAPLossyLink's block-wise subtest): a known defect that
// keeps issue 15 open, most likely in the node since two clients fail.
// It runs on demand, so that `make test` stays a verdict.
func TestCoAPLibcoapBlockwiseObserveLossy(t *testing.T) {
	if os.Getenv("TWINMESH_COAP_LOSSY_BLOCKWISE") == "" {
		t.Skip("known defect, issue 15: block-wise observe under loss; set TWINMESH_COAP_LOSSY_BLOCKWISE=1 to run")
	}
	bin := testutil.RequireTool(t, "coap-client-openssl")
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	d := register(t, api, "lib-1", "")
	p := testutil.NewUDPProxy(t, n.Addr("coap"), 0.2, 0.1, 21)
	sasOpt := "15,sas=" + token(t, "lib-1", d.Primary, time.Hour) // option 15 is Uri-Query
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var obs bytes.Buffer // read after the client exits
	cmd := exec.CommandContext(ctx, bin, "-m", "get", "-s", "45", "-O", sasOpt, "coap://"+p.Addr()+"/devices/lib-1/twin/desired")
	cmd.Stdout, cmd.Stderr = &obs, &obs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the observation", func() bool { return scrapeMetric(t, n, "twinmesh_coap_observers") == 1 })
	var last string
	for i := 0; i < 6; i++ {
		last = strings.Repeat(fmt.Sprint(i), 3000)
		api.MustDo(t, "PATCH", "/api/v1/twins/lib-1", `{"desired":{"blob":"`+last+`"}}`, 200)
		time.Sleep(4 * time.Second)
	}
	_ = cmd.Wait()
	if !strings.Contains(obs.String(), last) {
		t.Fatalf("the observer did not get the last desired document (%d bytes of output; proxy dropped %d, duplicated %d)",
			obs.Len(), p.Dropped.Load(), p.Duplicated.Load())
	}
	if p.Dropped.Load() == 0 {
		t.Fatal("the proxy dropped nothing: the test says nothing about loss")
	}
	t.Logf("proxy relayed %d, dropped %d, duplicated %d", p.Relayed.Load(), p.Dropped.Load(), p.Duplicated.Load())
}
