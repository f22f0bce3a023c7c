// Package c is the agent's bounded lock-free queue, as the seed asks: a
// multi-producer multi-consumer ring of 64-bit values written in C11
// atomics (ring.c: Dmitry Vyukov's bounded MPMC queue, with per-cell
// sequence numbers, so there is no ABA problem) and called through cgo with
// no Go lock around it. GoRing is the same algorithm in Go's sync/atomic;
// builds without cgo (CGO_ENABLED=0) use it as Ring, and the same test
// suite runs against both.
//
// The ring carries uint64 handles, never Go pointers: the cgo pointer rules
// forbid C memory from keeping Go pointers, and a handle is all a queue of
// Go objects needs (agent/internal/queue keeps the objects in a Go table
// indexed by handle). Values are copied in and out; C never keeps a pointer
// to Go memory past a call.
//
// Batch operations claim several consecutive cells with one
// compare-and-swap, so a batch of n costs one cgo call and one CAS instead
// of n of each; they store or take as many values as fit, in order.
//
// Concurrency: every method may be called from any number of goroutines
// at once, except Close, which the owner calls once, after every other use.
package c

import (
	"errors"
	"fmt"
)

// Queue is what both Ring and GoRing provide.
type Queue interface {
	// Push stores v; false when the ring is full.
	Push(v uint64) bool
	// PushBatch stores a prefix of vs in order and returns its length
	// (shorter than vs only when the ring filled up).
	PushBatch(vs []uint64) int
	// Pop takes the oldest value; false when the ring is empty.
	Pop() (uint64, bool)
	// PopBatch fills a prefix of dst with the oldest values, oldest first,
	// and returns its length (shorter than dst only when the ring ran empty).
	PopBatch(dst []uint64) int
	// Len is the number of values held: exact when no operation is in
	// flight, otherwise off by at most the operations in flight.
	Len() int
	// Cap is the number of cells.
	Cap() int
}

var (
	_ Queue = (*Ring)(nil)
	_ Queue = (*GoRing)(nil)
)

// ErrCapacity is returned for a capacity that is not a power of two in
// [2, 1<<30].
var ErrCapacity = errors.New("ring capacity must be a power of two between 2 and 2^30")

func checkCapacity(n int) error {
	if n < 2 || n > 1<<30 || n&(n-1) != 0 {
		return fmt.Errorf("%w: got %d", ErrCapacity, n)
	}
	return nil
}
