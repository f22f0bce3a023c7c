package c

import (
	"fmt"
	"testing"
)

// The benchmarks compare the build's Ring (the C11 ring through cgo when
// cgo is on), GoRing, and a buffered channel, for one value at a time and
// for batches, single-threaded (the cost of the operations) and with
// goroutines pushing and popping in parallel (the cost under contention).

type benchQueue struct {
	name string
	make func(int) Queue
}

// chanQueue adapts a buffered channel to Queue.
type chanQueue chan uint64

func (q chanQueue) Push(v uint64) bool {
	select {
	case q <- v:
		return true
	default:
		return false
	}
}

func (q chanQueue) PushBatch(vs []uint64) int {
	for i, v := range vs {
		if !q.Push(v) {
			return i
		}
	}
	return len(vs)
}

func (q chanQueue) Pop() (uint64, bool) {
	select {
	case v := <-q:
		return v, true
	default:
		return 0, false
	}
}

func (q chanQueue) PopBatch(dst []uint64) int {
	for i := range dst {
		v, ok := q.Pop()
		if !ok {
			return i
		}
		dst[i] = v
	}
	return len(dst)
}

func (q chanQueue) Len() int { return len(q) }
func (q chanQueue) Cap() int { return cap(q) }

var benchQueues = []benchQueue{
	{"Ring-" + Implementation, func(n int) Queue { r, _ := New(n); return r }},
	{"GoRing", func(n int) Queue { r, _ := NewGo(n); return r }},
	{"chan", func(n int) Queue { return make(chanQueue, n) }},
}

func BenchmarkPushPop(b *testing.B) {
	for _, q := range benchQueues {
		b.Run(q.name+"/single", func(b *testing.B) {
			r := q.make(1024)
			b.ReportAllocs()
			for i := uint64(0); b.Loop(); i++ {
				r.Push(i)
				r.Pop()
			}
		})
		for _, n := range []int{16, 64} {
			b.Run(fmt.Sprintf("%s/batch%d", q.name, n), func(b *testing.B) {
				r := q.make(1024)
				in, out := make([]uint64, n), make([]uint64, n)
				b.ReportAllocs()
				for b.Loop() {
					r.PushBatch(in)
					r.PopBatch(out)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/value")
			})
		}
	}
}

// BenchmarkParallel has GOMAXPROCS goroutines each pushing and popping: the
// contended MPMC case.
func BenchmarkParallel(b *testing.B) {
	for _, q := range benchQueues {
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/batch%d", q.name, n), func(b *testing.B) {
				r := q.make(1024)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					in, out := make([]uint64, n), make([]uint64, n)
					for pb.Next() {
						if n == 1 {
							r.Push(1)
							r.Pop()
							continue
						}
						r.PushBatch(in)
						r.PopBatch(out)
					}
				})
			})
		}
	}
}
