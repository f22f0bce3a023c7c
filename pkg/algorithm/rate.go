// Package algorithm holds small streaming statistics shared by the
// components: today the sliding-window rate that turns monotonically
// increasing counters (bytes read, packets, context switches, CPU ticks) into
// per-second rates. Every type here is pure computation — no I/O, no clock:
// callers pass the time of each reading — so results are reproducible in
// tests.
//
// Concurrency: values of these types are not safe for concurrent use; each
// belongs to one goroutine (an agent collector, a detector).
package algorithm

import "time"

// Rates turns counters into per-second rates over a sliding window of
// readings, per key (a device, an interface, a process).
//
// A reading is one round of observations: Begin(now), then Observe for each
// key, then Commit. A round that is not committed (the reading failed half
// way) leaves no trace: the next Begin discards it. Commit forgets keys not
// observed in that round (a device that went away), so the memory held is
// bounded by the keys of the last reading.
//
// The rate of a key is (newest − oldest) / (time between them), where oldest
// is the oldest reading of the key still inside the window. With a window
// of zero (or shorter than the time between readings) that is the previous
// reading: the plain difference quotient. A longer window smooths the rate
// as Prometheus's rate() over a range does. There is no rate on a key's
// first reading, and a counter that went backwards (a reset: reboot,
// re-created device, wrapped 32-bit counter) restarts the key's window and
// gives no rate for that reading — never a negative or a huge bogus rate.
type Rates[K comparable] struct {
	window time.Duration
	series map[K]*series
	round  uint64 // current round number; 0 before the first Begin
	now    time.Time
}

// sample is one committed reading of a counter.
type sample struct {
	at time.Time
	v  uint64
}

type series struct {
	samples []sample // committed, oldest first, all within the window but the oldest kept as base
	// pending is this round's observation, applied by Commit.
	pending      sample
	pendingRound uint64
	reset        bool // pending restarts the window (counter went backwards)
}

// NewRates returns an empty Rates whose rates span window (0: consecutive
// readings).
func NewRates[K comparable](window time.Duration) *Rates[K] {
	return &Rates[K]{window: max(window, 0), series: map[K]*series{}}
}

// Begin starts a reading taken at now, discarding an uncommitted one.
func (r *Rates[K]) Begin(now time.Time) {
	r.round++
	r.now = now
}

// Observe records the counter value v of key in the current reading and
// returns its per-second rate over the window; ok is false on the key's
// first reading, after a reset, or when no time passed since the oldest
// reading in the window. Observing the same key twice in one reading keeps
// the last value.
func (r *Rates[K]) Observe(key K, v uint64) (perSec float64, ok bool) {
	w := r.series[key]
	if w == nil {
		w = &series{}
		r.series[key] = w
	}
	w.pending, w.pendingRound, w.reset = sample{at: r.now, v: v}, r.round, false
	if len(w.samples) == 0 {
		return 0, false
	}
	if v < w.samples[len(w.samples)-1].v {
		w.reset = true
		return 0, false
	}
	base := w.samples[0]
	// The oldest sample still inside the window, or the newest one when
	// none is (the window is shorter than the reading interval).
	for i, s := range w.samples {
		if r.now.Sub(s.at) <= r.window || i == len(w.samples)-1 {
			base = s
			break
		}
	}
	dt := r.now.Sub(base.at).Seconds()
	if dt <= 0 || v < base.v {
		return 0, false
	}
	return float64(v-base.v) / dt, true
}

// Commit applies the current reading: keys observed in it keep their
// window, with the new reading appended and readings older than the window
// trimmed; keys not observed in it are forgotten.
func (r *Rates[K]) Commit() {
	for k, w := range r.series {
		if w.pendingRound != r.round {
			delete(r.series, k)
			continue
		}
		if w.reset {
			w.samples = w.samples[:0]
		}
		w.samples = append(w.samples, w.pending)
		// Readings older than the window can no longer be a base: a later
		// reading uses the oldest one inside its window, or the newest.
		cut := 0
		for cut < len(w.samples)-1 && r.now.Sub(w.samples[cut].at) > r.window {
			cut++
		}
		if cut > 0 {
			n := copy(w.samples, w.samples[cut:])
			w.samples = w.samples[:n]
		}
	}
}

// Len returns how many keys are tracked.
func (r *Rates[K]) Len() int { return len(r.series) }
