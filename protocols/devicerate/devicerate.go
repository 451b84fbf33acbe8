// Package devicerate is the per-device message rate limit the protocol
// adapters share: one token bucket per device ID, whatever protocol the
// device speaks, so that a device cannot double its rate by publishing over
// MQTT and CoAP at once, and reconnecting (or changing its UDP port) does
// not refill its burst.
//
// A bucket starts full (Burst tokens), refills at Rate tokens per second and
// every allowed message takes one token (golang.org/x/time/rate). A bucket
// that has been idle long enough to be full again is forgotten: a new one is
// the same, so memory follows the number of recently active devices.
package devicerate

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter holds the buckets of all devices. It is safe for concurrent use;
// its zero value is not usable, build it with New.
type Limiter struct {
	rate  rate.Limit
	burst int
	// full is how long an empty bucket takes to fill again: an idle bucket
	// older than that is dropped.
	full time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

// New returns a Limiter of perSecond messages per device with bursts of
// burst. perSecond must be above 0 and burst at least 1; smaller values are
// raised to those.
func New(perSecond float64, burst int) *Limiter {
	if !(perSecond > 0) {
		perSecond = math.SmallestNonzeroFloat64
	}
	burst = max(burst, 1)
	full := time.Duration(float64(burst) / perSecond * float64(time.Second))
	if full <= 0 || full > 24*time.Hour {
		full = 24 * time.Hour
	}
	return &Limiter{rate: rate.Limit(perSecond), burst: burst, full: full, buckets: map[string]*bucket{}}
}

// Rate returns the messages per second a device may send.
func (l *Limiter) Rate() float64 { return float64(l.rate) }

// Allow takes one token from device's bucket at now and reports whether
// there was one.
func (l *Limiter) Allow(device string, now time.Time) bool {
	ok, _ := l.Take(device, now)
	return ok
}

// Take is Allow that also says, when it refuses, how long until the next
// token.
func (l *Limiter) Take(device string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketOf(device, now)
	b.last = now
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - b.lim.TokensAt(now)
	return false, time.Duration(missing / float64(l.rate) * float64(time.Second))
}

// Len returns the number of buckets held (devices active recently).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// bucketOf returns device's bucket, dropping full idle ones once a minute.
// l.mu must be held.
func (l *Limiter) bucketOf(device string, now time.Time) *bucket {
	if now.Sub(l.lastSweep) > time.Minute {
		l.lastSweep = now
		for k, b := range l.buckets {
			if now.Sub(b.last) > l.full {
				delete(l.buckets, k) // full again: a new one is the same
			}
		}
	}
	b := l.buckets[device]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[device] = b
	}
	return b
}
