package node

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/internal/testutil"
)

// TestCoAPLibcoapBlockwiseObserveLossy: libcoap's coap-client-openssl
// observes a device's desired properties through a link that drops 20 %
// and duplicates 10 % of the datagrams; each of several 3 KB desired
// changes goes out block-wise (a notification with the first block, the
// client fetching the rest), and the observer must end with the last one.
// It used to miss it in every run: a notification whose acknowledgement
// was lost held back the later ones for its whole retransmission window
// (about 93 s), until a change superseded it (RFC 7641 section 4.5.2).
// The test ends as soon as the client printed the last document; the
// client's own retransmissions (2 to 3 s, doubling) set how long that
// takes.
func TestCoAPLibcoapBlockwiseObserveLossy(t *testing.T) {
	bin := testutil.RequireTool(t, "coap-client-openssl")
	n := testutil.Start(t, t.TempDir())
	api := n.Client()
	d := register(t, api, "lib-1", "")
	p := testutil.NewUDPProxy(t, n.Addr("coap"), 0.2, 0.1, 21)
	sasOpt := "15,sas=" + token(t, "lib-1", d.Primary, time.Hour) // option 15 is Uri-Query
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var obs lockedBuffer
	cmd := exec.CommandContext(ctx, bin, "-m", "get", "-s", "120", "-B", "120", "-O", sasOpt, "coap://"+p.Addr()+"/devices/lib-1/twin/desired")
	cmd.Stdout, cmd.Stderr = &obs, &obs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	testutil.Eventually(t, 30*time.Second, "the observation", func() bool { return scrapeMetric(t, n, "twinmesh_coap_observers") == 1 })
	var last string
	for i := 0; i < 3; i++ {
		last = strings.Repeat(fmt.Sprint(i), 3000)
		api.MustDo(t, "PATCH", "/api/v1/twins/lib-1", `{"desired":{"blob":"`+last+`"}}`, 200)
		time.Sleep(time.Second)
	}
	start := time.Now()
	deadline := start.Add(100 * time.Second)
	for !strings.Contains(obs.String(), last) {
		if time.Now().After(deadline) {
			t.Fatalf("the observer did not get the last desired document (%d bytes of output; proxy dropped %d, duplicated %d)",
				obs.Len(), p.Dropped.Load(), p.Duplicated.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p.Dropped.Load() == 0 {
		t.Fatal("the proxy dropped nothing: the test says nothing about loss")
	}
	t.Logf("the last document %v after the last change; proxy relayed %d, dropped %d, duplicated %d",
		time.Since(start).Round(time.Millisecond), p.Relayed.Load(), p.Dropped.Load(), p.Duplicated.Load())
}

// lockedBuffer is a bytes.Buffer a process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}
