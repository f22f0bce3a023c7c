// Package buffer holds the agent's snapshots from collection until the
// broker acknowledges them: a bounded FIFO in which every snapshot gets a
// position (an id, increasing by one per Push), so the sender can read
// ranges for batches, re-read them for resends, and release a prefix when
// an ack arrives. When full, Push drops the oldest snapshot, acknowledged
// or not, and counts it.
//
// The C lock-free ring and the on-disk spool of later issues take this
// package's place behind the same operations.
//
// Concurrency: safe for concurrent use; Push is called by the collection
// loop, the rest by the sender. Snapshots are shared, not copied: callers
// must not modify one after Push.
package buffer

import (
	"sync"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Buffer is a bounded FIFO of snapshots addressed by position.
type Buffer struct {
	limit int
	ready chan struct{}

	mu      sync.Mutex
	ring    []*monitorpb.Snapshot // grows by doubling up to limit
	start   int                   // ring index of the oldest snapshot
	n       int                   // snapshots held
	head    uint64                // id of the oldest snapshot held
	dropped uint64
}

// New returns an empty buffer holding at most limit snapshots (limit > 0).
func New(limit int) *Buffer {
	return &Buffer{
		limit: limit,
		ready: make(chan struct{}, 1),
		ring:  make([]*monitorpb.Snapshot, min(limit, 64)),
	}
}

// Push appends s. When the buffer is full it first drops the oldest
// snapshot and reports dropped = true.
func (b *Buffer) Push(s *monitorpb.Snapshot) (dropped bool) {
	b.mu.Lock()
	if b.n == b.limit {
		b.ring[b.start] = nil
		b.start = (b.start + 1) % len(b.ring)
		b.n--
		b.head++
		b.dropped++
		dropped = true
	} else if b.n == len(b.ring) {
		b.grow()
	}
	b.ring[(b.start+b.n)%len(b.ring)] = s
	b.n++
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
	return dropped
}

func (b *Buffer) grow() {
	next := make([]*monitorpb.Snapshot, min(2*len(b.ring), b.limit))
	for i := 0; i < b.n; i++ {
		next[i] = b.ring[(b.start+i)%len(b.ring)]
	}
	b.ring, b.start = next, 0
}

// Ready is signalled (capacity 1, so signals coalesce) after every Push.
func (b *Buffer) Ready() <-chan struct{} { return b.ready }

// Read returns up to count snapshots from position from on. Positions below
// the oldest held (dropped or released) are skipped: first is where the
// returned snapshots start, next is the position after the last.
func (b *Buffer) Read(from uint64, count int) (snaps []*monitorpb.Snapshot, first, next uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	first = b.clamp(from)
	snaps = b.copyOut(first, min(first+uint64(count), b.head+uint64(b.n)))
	return snaps, first, first + uint64(len(snaps))
}

// ReadRange returns the snapshots still held in positions [from, to).
func (b *Buffer) ReadRange(from, to uint64) []*monitorpb.Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.copyOut(b.clamp(from), min(to, b.head+uint64(b.n)))
}

// clamp moves pos into [head, tail].
func (b *Buffer) clamp(pos uint64) uint64 {
	return min(max(pos, b.head), b.head+uint64(b.n))
}

// copyOut returns positions [from, to), both within [head, tail].
func (b *Buffer) copyOut(from, to uint64) []*monitorpb.Snapshot {
	if to <= from {
		return nil
	}
	out := make([]*monitorpb.Snapshot, to-from)
	off := int(from - b.head)
	for i := range out {
		out[i] = b.ring[(b.start+off+i)%len(b.ring)]
	}
	return out
}

// Release frees every snapshot before position upTo and returns how many
// it freed (those already dropped are not counted again).
func (b *Buffer) Release(upTo uint64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := 0
	for b.n > 0 && b.head < upTo {
		b.ring[b.start] = nil
		b.start = (b.start + 1) % len(b.ring)
		b.n--
		b.head++
		k++
	}
	return k
}

// Len returns how many snapshots are held.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// Bounds returns the position of the oldest snapshot held and the position
// the next Push will get.
func (b *Buffer) Bounds() (head, tail uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.head, b.head + uint64(b.n)
}

// Dropped returns how many snapshots Push dropped because the buffer was
// full.
func (b *Buffer) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}
