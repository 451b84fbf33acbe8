package cluster

import (
	"context"
	"errors"
	"testing"
)

// TestConfirm: an owner's read is confirmed by a majority; after a newer
// claim (the owner was paused or cut off while another member took the
// grain over) it is fenced, and without a majority it is refused — the
// stale reads the Jepsen harness saw on a partitioned former owner.
func TestConfirm(t *testing.T) {
	ctx := context.Background()
	f := newFakeNet(t, 3, 2)
	r := f.ranked("d1")
	owner, other, third := r[0], r[1], r[2]
	epoch, err := owner.Claim(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Confirm(ctx, "d1", epoch); err != nil {
		t.Fatalf("current owner: %v", err)
	}

	// Cut off from both others: no majority.
	f.kill(other.self)
	f.kill(third.self)
	if err := owner.Confirm(ctx, "d1", epoch); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("owner cut off: %v, want ErrNoQuorum", err)
	}
	f.mu.Lock()
	f.dead = map[string]bool{}
	f.mu.Unlock()
	owner.down.Delete(other.self)
	owner.down.Delete(third.self)

	// Another member takes the grain over (the owner was paused).
	if _, err := other.Claim(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if err := owner.Confirm(ctx, "d1", epoch); !errors.Is(err, ErrFenced) {
		t.Fatalf("superseded owner: %v, want ErrFenced", err)
	}
	// The new owner's claim reached the old owner too; with that member
	// alone answering, the fence is still found (every majority meets the
	// claim's).
	f.kill(third.self)
	if err := owner.Confirm(ctx, "d1", epoch); !errors.Is(err, ErrFenced) {
		t.Fatalf("superseded owner with one member down: %v, want ErrFenced", err)
	}
}
