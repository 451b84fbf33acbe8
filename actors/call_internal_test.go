package actors

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinmesh/twinmesh/actors/actorspb"
	tmcluster "github.com/twinmesh/twinmesh/cluster"
	"github.com/twinmesh/twinmesh/persistence"
)

// TestCallRepeatsOnlyWhatIsSafe is the regression test of a desired patch
// applied twice (Jepsen seed 16166532: a value written at version 382 came
// back at version 471, ten seconds later). The member holding the grain
// died while a patch was in flight; the caller retried on the next owner,
// and the abandoned attempt, resent by protoactor after a dead letter,
// reached the owner after that. Now an attempt is sent once, and after an
// attempt whose outcome is unknown only requests that can be repeated
// without effect are sent again; a request that reached no activation is
// always sent again.
// startInternal starts a lone node on a NoSync store for the tests of
// this package's internals; both stop when the test ends.
func startInternal(t *testing.T, name string) *System {
	t.Helper()
	db, err := persistence.Open(filepath.Join(t.TempDir(), "n.db"), &persistence.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	prov, err := tmcluster.NewProvider(tmcluster.Config{NodeName: name, GossipAddr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{NodeName: "n1", Provider: prov, Store: db, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(false) })
	return s
}

func TestCallRepeatsOnlyWhatIsSafe(t *testing.T) {
	s := startInternal(t, "t-call")

	patch := &actorspb.Request{Body: &actorspb.Request_Patch{Patch: &actorspb.PatchTwin{}}}
	get := &actorspb.Request{Body: &actorspb.Request_Get{Get: &actorspb.Get{}}}
	tel := func(mid string) *actorspb.Request {
		return &actorspb.Request{Body: &actorspb.Request_Telemetry{Telemetry: &actorspb.Telemetry{MessageId: mid}}}
	}
	tests := []struct {
		name      string
		req       *actorspb.Request
		first     error // the first attempt's error
		wantSends int
		wantErr   bool
	}{
		{"patch, member unreachable", patch, errUnreachable, 1, true},
		{"patch, no answer in time", patch, errors.New("future: timeout"), 1, true},
		{"patch, reached no activation", patch, errNotDelivered, 2, false},
		{"read, member unreachable", get, errUnreachable, 2, false},
		{"telemetry with a message id, member unreachable", tel("m1"), errUnreachable, 2, false},
		{"telemetry without one, member unreachable", tel(""), errUnreachable, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sends := 0
			s.send = func(context.Context, string, string, *actorspb.Request, time.Duration) (any, error) {
				sends++
				if sends == 1 {
					return nil, tt.first
				}
				return &actorspb.Response{}, nil
			}
			_, err := s.call(context.Background(), "d1", "device", tt.req)
			if sends != tt.wantSends || (err != nil) != tt.wantErr {
				t.Fatalf("sent %d times, err %v; want %d sends, error %v", sends, err, tt.wantSends, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrUnavailable) {
				t.Errorf("error %v is not ErrUnavailable", err)
			}
		})
	}
}

// A request sent to the PID of a grain that has stopped goes to protoactor's
// dead letters; it must come back as undelivered at once (and be sent again
// to a new activation), not wait out the request timeout.
func TestLocalRequestToStoppedGrain(t *testing.T) {
	s := startInternal(t, "t-dead-pid")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := s.PutEntity(ctx, "z1", EntitySpec{Kind: "device"}); err != nil {
		t.Fatal(err)
	}
	pid, ok := s.cluster.PidCache.Get("z1", "device")
	if !ok {
		t.Fatal("no cached PID after a request")
	}
	s.actors.Root.StopFuture(pid).Wait()
	s.cluster.PidCache.Set("z1", "device", pid) // a stale entry

	req := &actorspb.Request{Body: &actorspb.Request_Get{Get: &actorspb.Get{}}}
	start := time.Now()
	if _, err := s.attempt(ctx, "z1", "device", req, 10*time.Second); !errors.Is(err, errNotDelivered) {
		t.Fatalf("attempt on a stopped grain: %v, want errNotDelivered", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("attempt on a stopped grain took %v", d)
	}
	if _, _, err := s.GetTwin(ctx, "z1"); err != nil {
		t.Fatalf("get after the grain stopped: %v", err)
	}
}
