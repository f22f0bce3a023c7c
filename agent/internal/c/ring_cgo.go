//go:build cgo

package c

/*
#cgo CFLAGS: -O2 -std=c11 -Wall -Wextra
#include "ring.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Implementation names the ring this build uses ("c11" or "go").
const Implementation = "c11"

// Ring is the C11 ring (ring.c) behind a Go API. Its memory is C memory,
// freed by Close (or, as a safety net, when the Ring is garbage collected).
type Ring struct {
	r       *C.mon_ring
	cleanup runtime.Cleanup
}

// New returns an empty Ring of capacity cells (a power of two).
func New(capacity int) (*Ring, error) {
	if err := checkCapacity(capacity); err != nil {
		return nil, err
	}
	p := C.mon_ring_new(C.size_t(capacity))
	if p == nil {
		return nil, fmt.Errorf("allocate a ring of %d cells: out of memory", capacity)
	}
	r := &Ring{r: p}
	r.cleanup = runtime.AddCleanup(r, func(p *C.mon_ring) { C.mon_ring_free(p) }, p)
	return r, nil
}

// Push implements Queue.
func (r *Ring) Push(v uint64) bool { return C.mon_ring_push1(r.r, C.uint64_t(v)) != 0 }

// PushBatch implements Queue. vs is Go memory without Go pointers, which
// cgo lets C read for the duration of the call.
func (r *Ring) PushBatch(vs []uint64) int {
	if len(vs) == 0 {
		return 0
	}
	return int(C.mon_ring_push(r.r, (*C.uint64_t)(unsafe.Pointer(&vs[0])), C.size_t(len(vs))))
}

// Pop implements Queue.
func (r *Ring) Pop() (uint64, bool) {
	res := C.mon_ring_pop1(r.r)
	return uint64(res.value), res.ok != 0
}

// PopBatch implements Queue.
func (r *Ring) PopBatch(dst []uint64) int {
	if len(dst) == 0 {
		return 0
	}
	return int(C.mon_ring_pop(r.r, (*C.uint64_t)(unsafe.Pointer(&dst[0])), C.size_t(len(dst))))
}

// Len implements Queue.
func (r *Ring) Len() int { return int(C.mon_ring_len(r.r)) }

// Cap implements Queue.
func (r *Ring) Cap() int { return int(C.mon_ring_cap(r.r)) }

// Close frees the C memory. The ring must not be used afterwards.
func (r *Ring) Close() {
	r.cleanup.Stop()
	C.mon_ring_free(r.r)
	r.r = nil
}
