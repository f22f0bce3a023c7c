// See ring.h for the algorithm and its invariants.
#include "ring.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MON_CACHELINE 64

typedef struct {
	_Atomic uint64_t seq;
	uint64_t value;
} mon_cell;

struct mon_ring {
	// Producers and consumers each hammer their own counter: keep them on
	// separate cache lines (no false sharing between the two sides).
	_Alignas(MON_CACHELINE) _Atomic uint64_t enqueue_pos;
	char pad0[MON_CACHELINE - sizeof(uint64_t)];
	_Alignas(MON_CACHELINE) _Atomic uint64_t dequeue_pos;
	char pad1[MON_CACHELINE - sizeof(uint64_t)];
	_Alignas(MON_CACHELINE) uint64_t mask;
	mon_cell *cells;
};

mon_ring *mon_ring_new(size_t capacity) {
	if (capacity < 2 || (capacity & (capacity - 1)) != 0) {
		return NULL;
	}
	mon_ring *r = aligned_alloc(MON_CACHELINE, sizeof(mon_ring));
	if (r == NULL) {
		return NULL;
	}
	memset(r, 0, sizeof(*r));
	size_t bytes = capacity * sizeof(mon_cell);
	bytes = (bytes + MON_CACHELINE - 1) / MON_CACHELINE * MON_CACHELINE;
	r->cells = aligned_alloc(MON_CACHELINE, bytes);
	if (r->cells == NULL) {
		free(r);
		return NULL;
	}
	r->mask = capacity - 1;
	for (size_t i = 0; i < capacity; i++) {
		atomic_init(&r->cells[i].seq, (uint64_t)i);
		r->cells[i].value = 0;
	}
	atomic_init(&r->enqueue_pos, 0);
	atomic_init(&r->dequeue_pos, 0);
	return r;
}

void mon_ring_free(mon_ring *r) {
	if (r == NULL) {
		return;
	}
	free(r->cells);
	free(r);
}

// claim advances *counter from its current value by up to n positions whose
// cells are ready, where a cell is ready for position p when its seq is
// p + lag (lag 0: free for a producer; lag 1: filled, for a consumer). It
// returns the first claimed position in *first and the count claimed (0:
// full for producers, empty for consumers).
static size_t claim(mon_ring *r, _Atomic uint64_t *counter, uint64_t lag, size_t n, uint64_t *first) {
	uint64_t pos = atomic_load_explicit(counter, memory_order_relaxed);
	for (;;) {
		size_t k = 0;
		int64_t diff = 0;
		for (; k < n; k++) {
			mon_cell *c = &r->cells[(pos + k) & r->mask];
			uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
			diff = (int64_t)(seq - (pos + k + lag));
			if (diff != 0) {
				break;
			}
		}
		if (k == 0) {
			if (diff < 0) {
				return 0; // the cell is a lap behind: full (or empty)
			}
			// Another thread claimed pos meanwhile: start from the new value.
			pos = atomic_load_explicit(counter, memory_order_relaxed);
			continue;
		}
		// The cells' sequence numbers cannot change before the CAS: only the
		// owner of a position advances its cell, and nobody owns pos .. pos+k-1
		// until the counter moves past them. A stale pos fails the CAS.
		if (atomic_compare_exchange_weak_explicit(counter, &pos, pos + k, memory_order_relaxed, memory_order_relaxed)) {
			*first = pos;
			return k;
		}
	}
}

size_t mon_ring_push(mon_ring *r, const uint64_t *vals, size_t n) {
	if (n == 0) {
		return 0;
	}
	uint64_t pos;
	size_t k = claim(r, &r->enqueue_pos, 0, n, &pos);
	for (size_t i = 0; i < k; i++) {
		mon_cell *c = &r->cells[(pos + i) & r->mask];
		c->value = vals[i];
		atomic_store_explicit(&c->seq, pos + i + 1, memory_order_release);
	}
	return k;
}

size_t mon_ring_pop(mon_ring *r, uint64_t *out, size_t n) {
	if (n == 0) {
		return 0;
	}
	uint64_t pos;
	size_t k = claim(r, &r->dequeue_pos, 1, n, &pos);
	for (size_t i = 0; i < k; i++) {
		mon_cell *c = &r->cells[(pos + i) & r->mask];
		out[i] = c->value;
		atomic_store_explicit(&c->seq, pos + i + r->mask + 1, memory_order_release);
	}
	return k;
}

int mon_ring_push1(mon_ring *r, uint64_t v) {
	return (int)mon_ring_push(r, &v, 1);
}

mon_pop1_result mon_ring_pop1(mon_ring *r) {
	mon_pop1_result res = {0, 0};
	res.ok = (int)mon_ring_pop(r, &res.value, 1);
	return res;
}

size_t mon_ring_len(mon_ring *r) {
	uint64_t deq = atomic_load_explicit(&r->dequeue_pos, memory_order_acquire);
	uint64_t enq = atomic_load_explicit(&r->enqueue_pos, memory_order_acquire);
	if (enq <= deq) {
		return 0;
	}
	uint64_t n = enq - deq;
	return n > r->mask + 1 ? (size_t)(r->mask + 1) : (size_t)n;
}

size_t mon_ring_cap(mon_ring *r) {
	return (size_t)(r->mask + 1);
}
