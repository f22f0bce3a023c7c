package auth

import (
	"sync"
	"time"
)

// maxBuckets bounds the limiter's memory: when this many client addresses
// have buckets, full ones (idle clients) are forgotten first, and if none
// is full the whole table is reset — a flood of addresses then gets a
// fresh burst each, which bcrypt's cost still bounds.
const maxBuckets = 10000

// Limiter is a token bucket per key (a client address, or a user name):
// Burst attempts at once, refilled at Rate per second.
type Limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter returns a limiter of burst attempts refilled at rate per
// second; now nil means time.Now.
func NewLimiter(rate float64, burst int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// Allow takes a token from key's bucket. When it is empty it returns false
// and how long until the next token.
func (l *Limiter) Allow(key string) (bool, time.Duration) { return l.take(key, true) }

// Peek reports what Allow would, without taking a token: a caller that
// charges only for failures (the per-user login limit) asks first and
// calls Allow after a failure.
func (l *Limiter) Peek(key string) (bool, time.Duration) { return l.take(key, false) }

func (l *Limiter) take(key string, consume bool) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if !consume {
			return true, 0 // a full bucket; not stored until charged
		}
		if len(l.buckets) >= maxBuckets {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		if consume {
			b.tokens--
		}
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

func (l *Limiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxBuckets {
		l.buckets = map[string]*bucket{}
	}
}
