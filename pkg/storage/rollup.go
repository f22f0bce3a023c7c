package storage

import (
	"errors"
	"fmt"
	"time"
)

// Resolution is the width of a rollup bucket in seconds. Buckets are
// aligned to multiples of it in Unix time (a minute bucket starts at a
// timestamp divisible by 60).
type Resolution int64

// The resolutions every backend keeps. Raw (0) means the stored snapshots
// themselves; it is never a rollup.
const (
	Raw    Resolution = 0
	Minute Resolution = 60
	Hour   Resolution = 3600
)

// RollupResolutions are the resolutions a backend maintains, finest first.
func RollupResolutions() [2]Resolution { return [2]Resolution{Minute, Hour} }

// Default rollup retentions: 30 days of minutes, a year of hours.
const (
	DefaultMinuteRetention = 30 * 24 * time.Hour
	DefaultHourRetention   = 365 * 24 * time.Hour
)

// ErrNoRollups is returned by RangeRollup of a store opened with rollups
// disabled.
var ErrNoRollups = errors.New("rollups are disabled in this store")

// String is "raw", "1m" or "1h" (or the width in seconds).
func (r Resolution) String() string {
	switch r {
	case Raw:
		return "raw"
	case Minute:
		return "1m"
	case Hour:
		return "1h"
	}
	return fmt.Sprintf("%ds", int64(r))
}

// BucketStart is the start of the bucket of width r holding ts.
func (r Resolution) BucketStart(ts int64) int64 {
	w := int64(r)
	b := ts - ts%w
	if ts < 0 && ts%w != 0 {
		b -= w
	}
	return b
}

// Aggregate summarises one series' samples in one bucket: the seed's window
// aggregates. Last is the value with the greatest timestamp (LastTS), not
// the one written last, so late data cannot move it back; Unit is the unit
// that sample carried.
type Aggregate struct {
	Min, Max, Sum float64
	Count         int64
	Last          float64
	LastTS        int64
	Unit          string
}

// Avg is Sum/Count (0 for an empty aggregate).
func (a *Aggregate) Avg() float64 {
	if a.Count == 0 {
		return 0
	}
	return a.Sum / float64(a.Count)
}

// Add counts one sample taken at ts.
func (a *Aggregate) Add(ts int64, v float64, unit string) {
	a.Merge(Aggregate{Min: v, Max: v, Sum: v, Count: 1, Last: v, LastTS: ts, Unit: unit})
}

// Merge folds b into a. On equal LastTS, b's Last wins.
func (a *Aggregate) Merge(b Aggregate) {
	if b.Count == 0 {
		return
	}
	if a.Count == 0 {
		*a = b
		return
	}
	a.Min = min(a.Min, b.Min)
	a.Max = max(a.Max, b.Max)
	a.Sum += b.Sum
	a.Count += b.Count
	if b.LastTS >= a.LastTS {
		a.Last, a.LastTS, a.Unit = b.Last, b.LastTS, b.Unit
	}
}

// RollupPoint is one bucket of one series.
type RollupPoint struct {
	Start int64 // bucket start, Unix seconds
	Aggregate
}

// RollupSeries is one series' buckets in ascending time order.
type RollupSeries struct {
	Series string
	Points []RollupPoint
}

// RollupQuery selects one host's buckets of one resolution that overlap
// From..To (both inclusive): start <= To and start+Resolution > From.
// Match, when set, keeps only the series it accepts.
type RollupQuery struct {
	HostID     string
	Resolution Resolution
	From, To   int64
	Match      *Matcher
}

// ValidateRollupQuery checks the parts of q that reach a key.
func ValidateRollupQuery(q *RollupQuery) error {
	if err := ValidateHostID(q.HostID); err != nil {
		return err
	}
	if q.Resolution != Minute && q.Resolution != Hour {
		return fmt.Errorf("%w: resolution %s is not a rollup; allowed are %s and %s", ErrInvalid, q.Resolution, Minute, Hour)
	}
	return nil
}

// RollupRetention is how long each rollup resolution is kept; a zero field
// takes its default.
type RollupRetention struct {
	Minute time.Duration
	Hour   time.Duration
}

// WithDefaults fills zero fields with the defaults.
func (r RollupRetention) WithDefaults() RollupRetention {
	if r.Minute == 0 {
		r.Minute = DefaultMinuteRetention
	}
	if r.Hour == 0 {
		r.Hour = DefaultHourRetention
	}
	return r
}

// Of returns the retention of res (0 for a resolution that is not a rollup).
func (r RollupRetention) Of(res Resolution) time.Duration {
	switch res {
	case Minute:
		return r.Minute
	case Hour:
		return r.Hour
	}
	return 0
}

// Validate refuses retentions shorter than one bucket.
func (r RollupRetention) Validate() error {
	if r.Minute < time.Minute {
		return fmt.Errorf("minute rollup retention %v is shorter than 1m", r.Minute)
	}
	if r.Hour < time.Hour {
		return fmt.Errorf("hour rollup retention %v is shorter than 1h", r.Hour)
	}
	return nil
}

// LastSamples returns samples with each series once: where a series
// repeats, its last sample, as a stored snapshot keeps it. It returns
// samples itself when no series repeats.
func LastSamples(samples []Sample) []Sample {
	sorted := true
	for i := 1; i < len(samples); i++ {
		if samples[i-1].Series >= samples[i].Series {
			sorted = false
			break
		}
	}
	if sorted {
		return samples
	}
	last := make(map[string]int, len(samples))
	for i := range samples {
		last[samples[i].Series] = i
	}
	if len(last) == len(samples) {
		return samples
	}
	out := make([]Sample, 0, len(last))
	for i := range samples {
		if last[samples[i].Series] == i {
			out = append(out, samples[i])
		}
	}
	return out
}
