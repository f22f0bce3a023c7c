package queue

import (
	"math"
	"sync/atomic"
)

// Stats are a queue's counters since New, and its state now.
type Stats struct {
	Lanes     int
	Capacity  int   // snapshots, all lanes together
	Depth     int   // snapshots waiting now, all lanes
	InFlight  int   // snapshots being written now
	LaneDepth []int // snapshots waiting now, per lane

	Enqueued    uint64            // snapshots admitted
	Refused     map[string]uint64 // snapshots refused, by reason (ReasonFull, ReasonClosed)
	Flushes     uint64            // writes
	Flushed     uint64            // snapshots written
	Failed      uint64            // snapshots whose write failed
	WriteErrors uint64            // failed writes

	FlushSize    Histogram // snapshots per write
	WriteLatency Histogram // seconds per write
}

// Histogram is a cumulative distribution: Counts[i] observations were <=
// Bounds[i] (and above Bounds[i-1]); the last count is above every bound.
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Count  uint64
	Sum    float64
	Max    float64
}

// Mean is Sum / Count (0 without observations).
func (h Histogram) Mean() float64 {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / float64(h.Count)
}

// Bucket bounds: flush sizes in powers of two, latencies from 100 µs to
// about 13 s in steps of 2×.
var (
	flushSizeBounds = expBounds(1, 2, 17)
	latencyBounds   = expBounds(0.0001, 2, 18)
)

func expBounds(start, factor float64, n int) []float64 {
	b := make([]float64, n)
	for i := range b {
		b[i] = start
		start *= factor
	}
	return b
}

// histogram is the lock-free recording side of Histogram.
type histogram struct {
	bounds []float64
	counts []atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Uint64 // float64 bits
	max    atomic.Uint64 // float64 bits
}

func (h *histogram) init(bounds []float64) {
	h.bounds = bounds
	h.counts = make([]atomic.Uint64, len(bounds)+1)
}

func (h *histogram) observe(v float64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.count.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			break
		}
	}
	for {
		old := h.max.Load()
		if v <= math.Float64frombits(old) || h.max.CompareAndSwap(old, math.Float64bits(v)) {
			break
		}
	}
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: h.bounds, Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
	}
	out.Count = h.count.Load()
	out.Sum = math.Float64frombits(h.sum.Load())
	out.Max = math.Float64frombits(h.max.Load())
	return out
}

// Stats returns the counters and the current depth.
func (q *Queue) Stats() Stats {
	s := Stats{
		Lanes:     len(q.lanes),
		Capacity:  q.cfg.Capacity,
		LaneDepth: make([]int, len(q.lanes)),
		Enqueued:  q.enqueued.Load(),
		Refused: map[string]uint64{
			ReasonFull:   q.refusedFull.Load(),
			ReasonClosed: q.refusedClosed.Load(),
		},
		Flushes:      q.flushes.Load(),
		Flushed:      q.flushed.Load(),
		Failed:       q.failed.Load(),
		WriteErrors:  q.writeErrs.Load(),
		FlushSize:    q.flushSize.snapshot(),
		WriteLatency: q.writeLatency.snapshot(),
	}
	for i, l := range q.lanes {
		d := int(l.depth.Load())
		s.LaneDepth[i] = d
		s.Depth += d
		s.InFlight += int(l.inFlight.Load())
	}
	return s
}
