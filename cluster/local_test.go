package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/errcode"
	"github.com/twinmesh/twinmesh/persistence"
)

// fakeLocal records what Serve hands it.
type fakeLocal struct {
	mu      sync.Mutex
	events  []string
	buckets []string
	invoke  func(device, method string) (int, []byte, error)
}

func (l *fakeLocal) DeliverRemoteEvents(evs []json.RawMessage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range evs {
		l.events = append(l.events, string(e))
	}
}

func (l *fakeLocal) CatalogChanged(buckets []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range buckets {
		if !slices.Contains(l.buckets, b) {
			l.buckets = append(l.buckets, b)
		}
	}
}

func (l *fakeLocal) InvokeMethod(_ context.Context, device, method string, _ []byte) (int, []byte, error) {
	return l.invoke(device, method)
}

func (l *fakeLocal) seen() (events, buckets []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events), slices.Clone(l.buckets)
}

// serve runs p.Serve(local) until the end of the test.
func serve(t *testing.T, p *Placement, local Local) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, local) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
	})
}

// Events and catalog changes that arrive before Serve runs wait for it;
// then Serve hands them to Local.
func TestServeDeliversWhatArrivedBefore(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 2, 2)
	from, to := f.nodes[f.addrs[0]], f.nodes[f.addrs[1]]
	to.deliverEvents([]json.RawMessage{json.RawMessage(`{"n":1}`)})
	if err := from.CommitCatalog(ctx, []persistence.Op{
		persistence.PutDoc(persistence.BucketRules, "r1", []byte(`{"id":"r1"}`)),
		persistence.PutEntity(persistence.Entity{ID: "e1", Kind: "room"}),
	}); err != nil {
		t.Fatal(err)
	}
	local := &fakeLocal{}
	serve(t, to, local)
	to.deliverEvents([]json.RawMessage{json.RawMessage(`{"n":2}`), json.RawMessage(`{"n":3}`)})
	waitFor(t, 5*time.Second, "events and catalog change delivered", func() bool {
		evs, buckets := local.seen()
		return len(evs) == 3 && slices.Contains(buckets, string(persistence.BucketRules))
	})
	evs, _ := local.seen()
	if want := []string{`{"n":1}`, `{"n":2}`, `{"n":3}`}; !slices.Equal(evs, want) {
		t.Errorf("events %v, want %v in order", evs, want)
	}
}

// A direct-method call from another member reaches Serve's Local, and its
// answer or its error code goes back; the caller reads the member's own
// message, without a repeated prefix.
func TestServeInvoke(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 2, 2)
	caller, holder := f.nodes[f.addrs[0]], f.nodes[f.addrs[1]]
	serve(t, holder, &fakeLocal{invoke: func(device, method string) (int, []byte, error) {
		switch device {
		case "here":
			return 200, []byte(`"` + method + `"`), nil
		case "slow":
			return 0, nil, errcode.New(errcode.Timeout, "slow did not answer")
		}
		return 0, nil, errcode.New(errcode.NotConnected, "%s is not connected", device)
	}})
	tests := []struct {
		name, device string
		status       int
		code         errcode.Code
		msg          string
	}{
		{"answered", "here", 200, errcode.OK, ""},
		{"not connected", "away", 0, errcode.NotConnected, "away is not connected"},
		{"timeout", "slow", 0, errcode.Timeout, "slow did not answer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var res invokeRes
			err := caller.request(ctx, holder.self, opInvoke, invokeReq{Device: tc.device, Method: "ping", Timeout: 5000}, &res)
			if errcode.Of(err) != tc.code {
				t.Fatalf("err %v (code %v), want code %v", err, errcode.Of(err), tc.code)
			}
			if err != nil && err.Error() != tc.msg {
				t.Errorf("message %q, want %q", err.Error(), tc.msg)
			}
			if err == nil && (res.Status != tc.status || string(res.Payload) != `"ping"`) {
				t.Errorf("answer %d %s", res.Status, res.Payload)
			}
		})
	}
}

// Without Serve a call waits for its deadline; once the Placement shuts
// down it ends at once with ErrStopped.
func TestInvokeWithoutServe(t *testing.T) {
	f := newFakeNet(t, 1, 1)
	p := f.nodes[f.addrs[0]]
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := p.invokeLocal(ctx, invokeReq{Device: "d"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the deadline", err)
	}
	close(p.stop)
	if _, _, err := p.invokeLocal(context.Background(), invokeReq{Device: "d"}); !errors.Is(err, ErrStopped) || !errors.Is(err, errcode.ErrUnavailable) {
		t.Fatalf("err %v, want ErrStopped (unavailable)", err)
	}
}
