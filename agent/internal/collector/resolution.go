package collector

import (
	"math"
	"time"

	"github.com/monitorhq/monitor/pkg/algorithm"
)

// Resolution of derived values.
//
// Shares (100·part/whole) and per-second rates (Δcount/Δt) come out of a
// division with 16 significant digits, most of them noise far below what
// the counts behind them can resolve: one jiffy of 2 CPUs over 5 s is
// 0.1 %, one byte over 5 s is 0.2 B/s. No lossless encoding removes that
// noise — the compact storage layout keeps a value with a few decimals in
// a few bits and a noisy float64 in 40–60. So every derived value is
// rounded to a decimal step that is still at least ten times finer than
// its quantum, the smallest change its inputs can show:
//
//   - a rate of a counter counting in units of u over a span of s seconds
//     moves by u/s per count; its timestamp is also uncertain by the time
//     the read of /proc takes (readJitter), which moves a rate r by
//     r·readJitter/s. The quantum is the larger of the two (the second
//     only matters above 10^5 units per second: a large rate keeps 7
//     significant digits over 1 s, 8 over 5 s);
//   - a CPU share over t jiffies moves by 100/t %;
//   - a share of two gauges that are sent exactly too (mem.used_percent
//     next to mem.used_bytes and mem.total_bytes) is rounded to 0.01 %:
//     its exact value is in those series, and no chart or threshold
//     needs a share finer than that.
//
// The span is the longest a rate of the reading can cover: the time since
// the previous reading or the rate window, whichever is longer (a longer
// span only makes the step finer). The step is the largest power of ten at
// most a fifteenth of the quantum: the margin over ten keeps the step
// steady when the quantum sits on a power of ten, as it does for 2 CPUs
// read every 5 s (1000 jiffies, give or take one).

// readJitter bounds from below how far a counter's reading is from its
// timestamp: reading a /proc file takes tens of microseconds.
const readJitter = 10 * time.Microsecond

// finer is how much finer than its quantum a value's step is at least.
const finer = 15

// gaugePercentDecimals are the decimals of a share of two gauges that are
// sent exactly too (mem.used_percent; see Resolution of derived values).
const gaugePercentDecimals = 2

// maxDecimals is the most decimals round keeps (storage's decimal
// coding stops at 15 too).
const maxDecimals = 15

// pow10 holds 10^0 … 10^22, all exact in float64.
var pow10 = func() (p [23]float64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// round returns v rounded to d decimals (d < 0: to a multiple of 10^−d),
// as the float64 nearest that decimal, so that storage's decimal coding
// recognises it (47.83 is 4783/10^2). d is clamped to −15…15. NaN and ±Inf
// come back as they are, and so does a value too large to have that many
// decimals in a float64 (|v|·10^d ≥ 2^53): it has no noise digits there.
// A result of zero is +0, whatever the sign of v.
func round(v float64, d int) float64 {
	d = min(max(d, -maxDecimals), maxDecimals)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	var r float64
	if d >= 0 {
		s := v * pow10[d]
		if !(math.Abs(s) < 1<<53) {
			return v
		}
		r = math.Round(s) / pow10[d]
	} else {
		r = math.Round(v/pow10[-d]) * pow10[-d]
	}
	if r == 0 {
		return 0 // not −0, which storage's decimal coding refuses
	}
	return r
}

// decimals returns the decimals round keeps for a value whose quantum is
// q: those of the largest power of ten at most q/finer. A quantum that is
// not a positive number (no span to divide by) keeps all of them.
func decimals(q float64) int {
	if !(q > 0) || math.IsInf(q, 0) {
		return maxDecimals
	}
	return min(max(-int(math.Floor(math.Log10(q/finer))), -maxDecimals), maxDecimals)
}

// rateQuantum is the quantum of rate, the per-second rate of a counter
// counting in units of unit, over span (see Resolution of derived values).
func rateQuantum(unit, rate float64, span time.Duration) float64 {
	if span <= 0 {
		return math.NaN()
	}
	return max(unit, math.Abs(rate)*readJitter.Seconds()) / span.Seconds()
}

// counterRates turns counters into rates (algorithm.Rates) and knows the
// longest span those rates can cover, so they can be rounded. Begin,
// Observe and Commit are algorithm.Rates'.
type counterRates[K comparable] struct {
	*algorithm.Rates[K]
	window    time.Duration
	now, last time.Time // the current reading, the last committed one
}

func newCounterRates[K comparable](window time.Duration) *counterRates[K] {
	return &counterRates[K]{Rates: algorithm.NewRates[K](window), window: max(window, 0)}
}

// Begin starts a reading taken at now.
func (r *counterRates[K]) Begin(now time.Time) {
	r.Rates.Begin(now)
	r.now = now
}

// Commit applies the current reading.
func (r *counterRates[K]) Commit() {
	r.Rates.Commit()
	r.last = r.now
}

// span is the longest a rate of the current reading can cover: its base
// is the oldest reading inside the window or, when none is, the previous
// committed reading. 0 on the first reading.
func (r *counterRates[K]) span() time.Duration {
	if r.last.IsZero() {
		return 0
	}
	return max(r.now.Sub(r.last), r.window)
}

// Rate observes the counter v of key, counting in units of unit (1 for
// packets, 512 for a sector count turned into bytes…), and returns its
// per-second rate rounded to its resolution; ok as Observe's.
func (r *counterRates[K]) Rate(key K, v uint64, unit float64) (perSec float64, ok bool) {
	x, ok := r.Observe(key, v)
	if !ok {
		return x, false
	}
	return round(x, decimals(rateQuantum(unit, x, r.span()))), true
}
