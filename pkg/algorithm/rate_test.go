package algorithm

import (
	"math"
	"strconv"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// step is one reading: the time, the counters observed, and what each
// Observe must return (NaN: no rate).
type step struct {
	at       float64
	obs      map[string]uint64
	want     map[string]float64
	noCommit bool
}

func run(t *testing.T, window time.Duration, steps []step) *Rates[string] {
	t.Helper()
	r := NewRates[string](window)
	for i, s := range steps {
		r.Begin(at(s.at))
		for k, v := range s.obs {
			got, ok := r.Observe(k, v)
			want := s.want[k]
			switch {
			case math.IsNaN(want) && ok:
				t.Errorf("step %d key %s: rate %v, want none", i, k, got)
			case !math.IsNaN(want) && (!ok || math.Abs(got-want) > 1e-9):
				t.Errorf("step %d key %s: rate %v ok=%v, want %v", i, k, got, ok, want)
			}
		}
		if !s.noCommit {
			r.Commit()
		}
	}
	return r
}

var none = math.NaN()

func TestRates(t *testing.T) {
	cases := []struct {
		name   string
		window time.Duration
		steps  []step
	}{
		{"first reading has no rate, then the difference quotient", 0, []step{
			{at: 0, obs: map[string]uint64{"a": 100}, want: map[string]float64{"a": none}},
			{at: 2, obs: map[string]uint64{"a": 300}, want: map[string]float64{"a": 100}},
			{at: 3, obs: map[string]uint64{"a": 300}, want: map[string]float64{"a": 0}},
		}},
		{"a new key waits one reading", 0, []step{
			{at: 0, obs: map[string]uint64{"a": 1}, want: map[string]float64{"a": none}},
			{at: 1, obs: map[string]uint64{"a": 2, "b": 5}, want: map[string]float64{"a": 1, "b": none}},
			{at: 2, obs: map[string]uint64{"a": 3, "b": 9}, want: map[string]float64{"a": 1, "b": 4}},
		}},
		{"a counter that goes backwards restarts, never negative", 0, []step{
			{at: 0, obs: map[string]uint64{"a": 1000}, want: map[string]float64{"a": none}},
			{at: 1, obs: map[string]uint64{"a": 10}, want: map[string]float64{"a": none}},
			{at: 2, obs: map[string]uint64{"a": 15}, want: map[string]float64{"a": 5}},
		}},
		{"an uncommitted reading leaves no trace", 0, []step{
			{at: 0, obs: map[string]uint64{"a": 0}, want: map[string]float64{"a": none}},
			{at: 1, obs: map[string]uint64{"a": 1000}, want: map[string]float64{"a": 1000}, noCommit: true},
			{at: 2, obs: map[string]uint64{"a": 6}, want: map[string]float64{"a": 3}},
		}},
		{"no time passed: no rate", 0, []step{
			{at: 5, obs: map[string]uint64{"a": 1}, want: map[string]float64{"a": none}},
			{at: 5, obs: map[string]uint64{"a": 2}, want: map[string]float64{"a": none}},
		}},
		{"a window spans several readings", 10 * time.Second, []step{
			{at: 0, obs: map[string]uint64{"a": 0}, want: map[string]float64{"a": none}},
			{at: 5, obs: map[string]uint64{"a": 50}, want: map[string]float64{"a": 10}},
			{at: 10, obs: map[string]uint64{"a": 200}, want: map[string]float64{"a": 20}}, // (200-0)/10
			{at: 15, obs: map[string]uint64{"a": 250}, want: map[string]float64{"a": 20}}, // (250-50)/10
			{at: 20, obs: map[string]uint64{"a": 250}, want: map[string]float64{"a": 5}},  // (250-200)/10
		}},
		{"a window shorter than the interval uses the previous reading", time.Second, []step{
			{at: 0, obs: map[string]uint64{"a": 0}, want: map[string]float64{"a": none}},
			{at: 5, obs: map[string]uint64{"a": 50}, want: map[string]float64{"a": 10}},
			{at: 10, obs: map[string]uint64{"a": 60}, want: map[string]float64{"a": 2}},
		}},
		{"a reset inside a window drops the old readings", 10 * time.Second, []step{
			{at: 0, obs: map[string]uint64{"a": 100}, want: map[string]float64{"a": none}},
			{at: 5, obs: map[string]uint64{"a": 200}, want: map[string]float64{"a": 20}},
			{at: 10, obs: map[string]uint64{"a": 5}, want: map[string]float64{"a": none}},
			{at: 15, obs: map[string]uint64{"a": 15}, want: map[string]float64{"a": 2}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { run(t, c.window, c.steps) })
	}
}

func TestRatesForgetKeysNotObserved(t *testing.T) {
	r := run(t, 0, []step{
		{at: 0, obs: map[string]uint64{"a": 1, "b": 1}, want: map[string]float64{"a": none, "b": none}},
		{at: 1, obs: map[string]uint64{"a": 2}, want: map[string]float64{"a": 1}},
		// b went away for a reading: it starts over when it comes back.
		{at: 2, obs: map[string]uint64{"a": 3, "b": 100}, want: map[string]float64{"a": 1, "b": none}},
	})
	if r.Len() != 2 {
		t.Fatalf("tracking %d keys, want 2", r.Len())
	}
	r.Begin(at(3))
	r.Commit()
	if r.Len() != 0 {
		t.Fatalf("tracking %d keys after an empty reading, want 0", r.Len())
	}
}

func TestRatesWindowMemoryIsBounded(t *testing.T) {
	r := NewRates[int](30 * time.Second)
	for i := range 1000 {
		r.Begin(at(float64(i)))
		r.Observe(1, uint64(i*10))
		r.Commit()
	}
	if n := len(r.series[1].samples); n > 32 {
		t.Fatalf("a 30 s window at 1 s readings holds %d samples", n)
	}
	r.Begin(at(1000))
	if v, ok := r.Observe(1, 10000); !ok || math.Abs(v-10) > 1e-9 {
		t.Fatalf("rate %v %v, want 10", v, ok)
	}
}

func BenchmarkRatesObserve(b *testing.B) {
	for _, keys := range []int{16, 256} {
		b.Run(strconv.Itoa(keys)+"keys", func(b *testing.B) {
			r := NewRates[int](0)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				r.Begin(at(float64(i)))
				for k := range keys {
					r.Observe(k, uint64(i*k))
				}
				r.Commit()
			}
		})
	}
}
