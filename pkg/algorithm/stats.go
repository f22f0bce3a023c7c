package algorithm

import (
	"errors"
	"fmt"
	"math"
)

// EWMA is an exponentially weighted moving average: each value moves the
// average by Alpha of the difference, so a value k readings old weighs
// Alpha·(1−Alpha)^k. The first value sets the average.
type EWMA struct {
	alpha float64
	value float64
	n     uint64
}

// NewEWMA returns an empty average with smoothing factor alpha in (0, 1].
func NewEWMA(alpha float64) (*EWMA, error) {
	if !(alpha > 0 && alpha <= 1) {
		return nil, fmt.Errorf("ewma alpha %v: want a number in (0, 1]", alpha)
	}
	return &EWMA{alpha: alpha}, nil
}

// Add folds x into the average.
func (e *EWMA) Add(x float64) {
	if e.n == 0 {
		e.value = x
	} else {
		e.value += e.alpha * (x - e.value)
	}
	e.n++
}

// Value returns the average (0 before the first Add).
func (e *EWMA) Value() float64 { return e.value }

// Count returns how many values were added.
func (e *EWMA) Count() uint64 { return e.n }

// MovingStats is the mean and variance of the last N values (a sliding
// window by count), updated in O(1) per value with Welford's recurrence
// extended to removal; the sums are recomputed from the window every N
// values so rounding error cannot accumulate without bound.
type MovingStats struct {
	buf   []float64
	next  int // where the next value goes
	full  bool
	mean  float64
	m2    float64 // sum of squared deviations from mean
	since int     // values since the last recompute
}

// NewMovingStats returns an empty window of n ≥ 2 values.
func NewMovingStats(n int) (*MovingStats, error) {
	if n < 2 {
		return nil, fmt.Errorf("moving window of %d values: want at least 2", n)
	}
	return &MovingStats{buf: make([]float64, n)}, nil
}

// Add pushes x into the window, dropping the oldest value when it is full.
func (s *MovingStats) Add(x float64) {
	if !s.full {
		s.buf[s.next] = x
		k := float64(s.next + 1)
		d := x - s.mean
		s.mean += d / k
		s.m2 += d * (x - s.mean)
	} else {
		old := s.buf[s.next]
		s.buf[s.next] = x
		n := float64(len(s.buf))
		oldMean := s.mean
		s.mean += (x - old) / n
		s.m2 += (x - old) * (x - s.mean + old - oldMean)
	}
	s.next++
	if s.next == len(s.buf) {
		s.next, s.full = 0, true
	}
	if s.since++; s.since >= len(s.buf) {
		s.recompute()
	}
	if s.m2 < 0 {
		s.m2 = 0
	}
}

func (s *MovingStats) recompute() {
	s.since = 0
	vs := s.buf[:s.Len()]
	var sum float64
	for _, v := range vs {
		sum += v
	}
	s.mean = sum / float64(len(vs))
	s.m2 = 0
	for _, v := range vs {
		s.m2 += (v - s.mean) * (v - s.mean)
	}
}

// Len returns how many values the window holds.
func (s *MovingStats) Len() int {
	if s.full {
		return len(s.buf)
	}
	return s.next
}

// Mean returns the mean of the window (0 when empty).
func (s *MovingStats) Mean() float64 { return s.mean }

// Variance returns the sample variance of the window (0 below 2 values).
func (s *MovingStats) Variance() float64 {
	if n := s.Len(); n >= 2 {
		return s.m2 / float64(n-1)
	}
	return 0
}

// StdDev returns the sample standard deviation of the window.
func (s *MovingStats) StdDev() float64 { return math.Sqrt(s.Variance()) }

// Fit is a least-squares line y = Intercept + Slope·x.
type Fit struct {
	Slope     float64
	Intercept float64
	R2        float64 // coefficient of determination; 1 for a flat y exactly fitted
	N         int
}

// ErrTooFewPoints is returned by LinearFit without two distinct x.
var ErrTooFewPoints = errors.New("a line needs at least two points with distinct x")

// LinearFit fits a least-squares line to the points (xs[i], ys[i]). It
// centres x and y first, so large x (Unix timestamps) lose no precision.
func LinearFit(xs, ys []float64) (Fit, error) {
	if len(xs) != len(ys) {
		return Fit{}, fmt.Errorf("linear fit: %d x values and %d y values", len(xs), len(ys))
	}
	n := len(xs)
	if n < 2 {
		return Fit{}, ErrTooFewPoints
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(n)
	my /= float64(n)
	var sxx, sxy, syy float64
	for i := range xs {
		dx, dy := xs[i]-mx, ys[i]-my
		sxx += dx * dx
		sxy += dx * dy
		syy += dy * dy
	}
	if sxx == 0 {
		return Fit{}, ErrTooFewPoints
	}
	f := Fit{Slope: sxy / sxx, N: n}
	f.Intercept = my - f.Slope*mx
	f.R2 = 1
	if syy > 0 {
		f.R2 = sxy * sxy / (sxx * syy)
	}
	return f, nil
}
