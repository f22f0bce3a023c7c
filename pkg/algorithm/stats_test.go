package algorithm

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestEWMA(t *testing.T) {
	if _, err := NewEWMA(0); err == nil {
		t.Fatal("alpha 0 accepted")
	}
	if _, err := NewEWMA(math.NaN()); err == nil {
		t.Fatal("alpha NaN accepted")
	}
	e, err := NewEWMA(0.5)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ x, want float64 }{{10, 10}, {20, 15}, {15, 15}, {7, 11}} {
		e.Add(c.x)
		if e.Value() != c.want {
			t.Fatalf("after %v: %v, want %v", c.x, e.Value(), c.want)
		}
	}
	if e.Count() != 4 {
		t.Fatalf("count %d", e.Count())
	}
}

// TestMovingStatsMatchesRecomputation checks the O(1) sliding mean and
// variance against a direct computation over the window, on values with a
// large offset (where a naive sum of squares loses precision).
func TestMovingStatsMatchesRecomputation(t *testing.T) {
	if _, err := NewMovingStats(1); err == nil {
		t.Fatal("window of 1 accepted")
	}
	const n = 7
	s, err := NewMovingStats(n)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var all []float64
	for i := range 1000 {
		x := 1e9 + rng.NormFloat64()*5
		all = append(all, x)
		s.Add(x)
		w := all[max(0, len(all)-n):]
		var mean float64
		for _, v := range w {
			mean += v
		}
		mean /= float64(len(w))
		var varc float64
		for _, v := range w {
			varc += (v - mean) * (v - mean)
		}
		if len(w) >= 2 {
			varc /= float64(len(w) - 1)
		} else {
			varc = 0
		}
		if s.Len() != len(w) || math.Abs(s.Mean()-mean) > 1e-6 || math.Abs(s.Variance()-varc) > 1e-6*max(1, varc) {
			t.Fatalf("step %d: len %d mean %v var %v, want %d %v %v", i, s.Len(), s.Mean(), s.Variance(), len(w), mean, varc)
		}
	}
}

func TestLinearFit(t *testing.T) {
	cases := []struct {
		name        string
		xs, ys      []float64
		slope, icpt float64
		err         error
	}{
		{"known line at Unix-time x", []float64{1.7e9, 1.7e9 + 10, 1.7e9 + 20, 1.7e9 + 35}, nil, 2.5, 7, nil},
		{"flat", []float64{0, 1, 2}, []float64{4, 4, 4}, 0, 4, nil},
		{"one point", []float64{1}, []float64{1}, 0, 0, ErrTooFewPoints},
		{"same x", []float64{5, 5}, []float64{1, 2}, 0, 0, ErrTooFewPoints},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ys := c.ys
			if ys == nil {
				for _, x := range c.xs {
					ys = append(ys, 2.5*(x-1.7e9)+7)
				}
				// fit against x relative to 1.7e9 so the intercept is 7
				xs := make([]float64, len(c.xs))
				for i, x := range c.xs {
					xs[i] = x - 1.7e9
				}
				f, err := LinearFit(c.xs, ys)
				if err != nil || math.Abs(f.Slope-c.slope) > 1e-12 || f.R2 < 1-1e-12 {
					t.Fatalf("absolute x: %+v %v", f, err)
				}
				c.xs = xs
			}
			f, err := LinearFit(c.xs, ys)
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if err == nil && (math.Abs(f.Slope-c.slope) > 1e-12 || math.Abs(f.Intercept-c.icpt) > 1e-9) {
				t.Fatalf("fit %+v, want slope %v intercept %v", f, c.slope, c.icpt)
			}
		})
	}
	if _, err := LinearFit([]float64{1, 2}, []float64{1}); err == nil {
		t.Fatal("mismatched lengths accepted")
	}
}
