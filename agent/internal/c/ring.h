// A bounded lock-free multi-producer multi-consumer ring of 64-bit values
// in C11 atomics: Dmitry Vyukov's bounded MPMC queue, with batch push and
// pop that claim several consecutive cells with one compare-and-swap.
//
// Every cell carries a sequence number. Position p (a 64-bit counter that
// never wraps in practice) lives in cell p & mask; the cell is free for p
// when seq == p, holds p's value when seq == p + 1, and becomes free for the
// next lap (p + capacity) when the consumer stores seq = p + capacity. A
// producer or consumer claims positions by advancing enqueue_pos or
// dequeue_pos with a CAS, and only after checking the cells' sequence
// numbers; since positions only grow, a stale claim can never succeed, so
// there is no ABA problem (no pointer or index is ever reused within a
// lap).
#ifndef MONITOR_AGENT_RING_H
#define MONITOR_AGENT_RING_H

#include <stddef.h>
#include <stdint.h>

typedef struct mon_ring mon_ring;

// mon_pop1_result is what mon_ring_pop1 returns: ok is 1 when value is set.
typedef struct {
	uint64_t value;
	int ok;
} mon_pop1_result;

// mon_ring_new returns a ring of capacity cells (a power of two >= 2), or
// NULL when capacity is not one or memory is short.
mon_ring *mon_ring_new(size_t capacity);
void mon_ring_free(mon_ring *r);

// mon_ring_push stores up to n values in order and returns how many it
// stored (fewer than n only when the ring is full).
size_t mon_ring_push(mon_ring *r, const uint64_t *vals, size_t n);
// mon_ring_pop takes up to n of the oldest values into out, oldest first,
// and returns how many it took (fewer than n only when the ring ran empty).
size_t mon_ring_pop(mon_ring *r, uint64_t *out, size_t n);

// Single-value forms, for callers that would otherwise pass a pointer to
// one value.
int mon_ring_push1(mon_ring *r, uint64_t v);
mon_pop1_result mon_ring_pop1(mon_ring *r);

// mon_ring_len is the number of values held, exact when the ring is
// quiescent and within the number of operations in flight otherwise.
size_t mon_ring_len(mon_ring *r);
size_t mon_ring_cap(mon_ring *r);

#endif
