package c

import "sync/atomic"

// cacheLine pads the two counters apart, as ring.c does.
const cacheLine = 64

type goCell struct {
	seq   atomic.Uint64
	value uint64 // written before seq is published, read after seq is seen
}

// GoRing is ring.c's algorithm in Go: see ring.h for the invariants. It is
// Ring in builds without cgo and the comparison point in benchmarks.
type GoRing struct {
	_          [cacheLine]byte
	enqueuePos atomic.Uint64
	_          [cacheLine - 8]byte
	dequeuePos atomic.Uint64
	_          [cacheLine - 8]byte
	mask       uint64
	cells      []goCell
}

// NewGo returns an empty GoRing of capacity cells (a power of two).
func NewGo(capacity int) (*GoRing, error) {
	if err := checkCapacity(capacity); err != nil {
		return nil, err
	}
	r := &GoRing{}
	r.init(capacity)
	return r, nil
}

func (r *GoRing) init(capacity int) {
	r.mask, r.cells = uint64(capacity-1), make([]goCell, capacity)
	for i := range r.cells {
		r.cells[i].seq.Store(uint64(i))
	}
}

// claim is ring.c's claim: see there.
func (r *GoRing) claim(counter *atomic.Uint64, lag uint64, n int) (first uint64, k int) {
	pos := counter.Load()
	for {
		var diff int64
		k = 0
		for ; k < n; k++ {
			seq := r.cells[(pos+uint64(k))&r.mask].seq.Load()
			diff = int64(seq - (pos + uint64(k) + lag))
			if diff != 0 {
				break
			}
		}
		if k == 0 {
			if diff < 0 {
				return 0, 0
			}
			pos = counter.Load()
			continue
		}
		if counter.CompareAndSwap(pos, pos+uint64(k)) {
			return pos, k
		}
		pos = counter.Load()
	}
}

// Push implements Queue.
func (r *GoRing) Push(v uint64) bool {
	pos, k := r.claim(&r.enqueuePos, 0, 1)
	if k == 0 {
		return false
	}
	c := &r.cells[pos&r.mask]
	c.value = v
	c.seq.Store(pos + 1)
	return true
}

// PushBatch implements Queue.
func (r *GoRing) PushBatch(vs []uint64) int {
	if len(vs) == 0 {
		return 0
	}
	pos, k := r.claim(&r.enqueuePos, 0, len(vs))
	for i := range k {
		c := &r.cells[(pos+uint64(i))&r.mask]
		c.value = vs[i]
		c.seq.Store(pos + uint64(i) + 1)
	}
	return k
}

// Pop implements Queue.
func (r *GoRing) Pop() (uint64, bool) {
	pos, k := r.claim(&r.dequeuePos, 1, 1)
	if k == 0 {
		return 0, false
	}
	c := &r.cells[pos&r.mask]
	v := c.value
	c.seq.Store(pos + r.mask + 1)
	return v, true
}

// PopBatch implements Queue.
func (r *GoRing) PopBatch(dst []uint64) int {
	if len(dst) == 0 {
		return 0
	}
	pos, k := r.claim(&r.dequeuePos, 1, len(dst))
	for i := range k {
		c := &r.cells[(pos+uint64(i))&r.mask]
		dst[i] = c.value
		c.seq.Store(pos + uint64(i) + r.mask + 1)
	}
	return k
}

// Len implements Queue.
func (r *GoRing) Len() int {
	deq := r.dequeuePos.Load()
	enq := r.enqueuePos.Load()
	if enq <= deq {
		return 0
	}
	return int(min(enq-deq, r.mask+1))
}

// Cap implements Queue.
func (r *GoRing) Cap() int { return int(r.mask + 1) }

// Close releases nothing (the garbage collector owns a GoRing's memory); it
// exists so GoRing and Ring have the same API.
func (r *GoRing) Close() {}
