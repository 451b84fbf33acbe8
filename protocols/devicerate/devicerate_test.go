package devicerate

import (
	"sync"
	"testing"
	"time"
)

func TestBurstThenRefill(t *testing.T) {
	l := New(10, 5)
	now := time.Unix(1000, 0)
	n := 0
	for i := 0; i < 100; i++ {
		if l.Allow("d", now) {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("burst allowed %d, want 5", n)
	}
	ok, wait := l.Take("d", now)
	if ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("empty bucket: ok=%v wait=%v, want refused with a wait of at most 100ms", ok, wait)
	}
	if !l.Allow("d", now.Add(150*time.Millisecond)) {
		t.Fatal("refill after 150ms at 10/s refused")
	}
	if !l.Allow("other", now) {
		t.Fatal("another device shares the bucket")
	}
}

// One bucket per device whatever calls it: two adapters sharing a Limiter
// together get the burst once.
func TestSharedAcrossCallers(t *testing.T) {
	l := New(1, 10)
	now := time.Unix(1000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if l.Allow("d", now) {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 10 {
		t.Fatalf("two callers were allowed %d, want the burst of 10 once", allowed)
	}
}

func TestIdleBucketsForgotten(t *testing.T) {
	l := New(100, 200) // full again after 2 s
	now := time.Unix(1000, 0)
	for _, d := range []string{"a", "b", "c"} {
		l.Allow(d, now)
	}
	if l.Len() != 3 {
		t.Fatalf("%d buckets, want 3", l.Len())
	}
	l.Allow("a", now.Add(2*time.Minute))
	if l.Len() != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", l.Len())
	}
}

func TestBadSettingsRaised(t *testing.T) {
	l := New(0, 0)
	if !l.Allow("d", time.Unix(1, 0)) {
		t.Fatal("a burst of at least one must be allowed")
	}
}
