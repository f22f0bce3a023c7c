// Package queue holds the snapshots between the collection loop and the
// spool writer: a bounded lock-free queue built on agent/internal/c's ring,
// with the seed's backpressure policy — when it is over budget it drops the
// lowest-priority metrics first, then the oldest snapshots — and every drop
// counted by reason.
//
// Layout: snapshots live in a Go table of atomic pointers, one per ring
// cell; the C ring carries only table indices (handles), so C memory never
// holds a Go pointer. A second ring of the same size is the free list of
// indices. Push takes a free index, stores the snapshot in the table and
// pushes the index; PopBatch pops indices, takes the snapshots out of the
// table (atomic swap) and returns the indices to the free list. No Go mutex
// is involved: the rings are lock-free and the table is only touched
// through atomics.
//
// Two bounds, two remedies:
//   - slots (ring_size): a slot holds one snapshot whatever its size, so a
//     full ring can only make room by dropping the oldest snapshot
//     (DropRingFull);
//   - bytes (ring_max_bytes, the snapshots' encoded size): when a push would
//     exceed it, the queue strips LOW metrics from the queued snapshots,
//     oldest first, then NORMAL ones (PRIORITY_UNSPECIFIED counts as NORMAL);
//     HIGH and CRITICAL metrics are never stripped; only when that is not
//     enough does it drop the oldest snapshots (DropRingBytes). A single
//     snapshot larger than the budget is still accepted (after stripping).
//
// Queued snapshots are never modified: stripping replaces a table entry
// with a stripped copy by compare-and-swap, so a consumer that took the
// entry meanwhile keeps the original.
//
// Concurrency: Push and PopBatch may be called from any number of
// goroutines; the collection loop pushes and the spool writer pops. Callers
// must not modify a snapshot after Push.
package queue

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/agent/internal/c"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Drop reasons.
const (
	// Metrics stripped from queued snapshots under the byte budget.
	DropLowPriority    = "low_priority"
	DropNormalPriority = "normal_priority"
	// Whole snapshots dropped.
	DropRingFull  = "ring_full"  // every slot was taken: the oldest went
	DropRingBytes = "ring_bytes" // over the byte budget with nothing left to strip: the oldest went
)

// Drops counts what the queue discarded since New.
type Drops struct {
	Metrics   map[string]uint64 // by DropLowPriority, DropNormalPriority
	Snapshots map[string]uint64 // by DropRingFull, DropRingBytes
}

type entry struct {
	snap *monitorpb.Snapshot
	size int64
	seq  uint64 // push order, for oldest-first stripping
}

// Queue is a bounded queue of snapshots.
type Queue struct {
	data, free *c.Ring
	table      []atomic.Pointer[entry]
	maxBytes   int64
	ready      chan struct{}

	seq   atomic.Uint64
	bytes atomic.Int64

	dropLow, dropNormal, dropFull, dropBytes atomic.Uint64
}

// New returns an empty queue of slots snapshots (a power of two) and
// maxBytes encoded bytes.
func New(slots int, maxBytes int64) (*Queue, error) {
	data, err := c.New(slots)
	if err != nil {
		return nil, fmt.Errorf("ring of %d slots: %w", slots, err)
	}
	free, err := c.New(slots)
	if err != nil {
		data.Close()
		return nil, fmt.Errorf("free list of %d slots: %w", slots, err)
	}
	idx := make([]uint64, slots)
	for i := range idx {
		idx[i] = uint64(i)
	}
	if n := free.PushBatch(idx); n != slots {
		panic(fmt.Sprintf("queue: free list took %d of %d indices", n, slots))
	}
	return &Queue{
		data: data, free: free,
		table:    make([]atomic.Pointer[entry], slots),
		maxBytes: maxBytes,
		ready:    make(chan struct{}, 1),
	}, nil
}

// Close frees the rings. The queue must not be used afterwards.
func (q *Queue) Close() {
	q.data.Close()
	q.free.Close()
}

// Push enqueues s, first making room as the package comment describes. It
// never blocks.
func (q *Queue) Push(s *monitorpb.Snapshot) {
	e := &entry{snap: s, size: int64(proto.Size(s)), seq: q.seq.Add(1)}
	if q.bytes.Load()+e.size > q.maxBytes {
		e = q.relieve(e)
	}
	var idx uint64
	for {
		i, ok := q.free.Pop()
		if ok {
			idx = i
			break
		}
		if q.data.Len() < q.data.Cap() {
			// A consumer holds an index between its two ring operations.
			runtime.Gosched()
			continue
		}
		if q.dropOldest() {
			q.dropFull.Add(1)
		}
	}
	q.table[idx].Store(e)
	q.bytes.Add(e.size)
	pushAll(q.data, []uint64{idx})
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// relieve brings the queued bytes plus the incoming entry under the budget:
// strip LOW (queued oldest first, then the incoming), then NORMAL, then drop
// the oldest snapshots. It returns the incoming entry, possibly stripped.
func (q *Queue) relieve(in *entry) *entry {
	over := func() bool { return q.bytes.Load()+in.size > q.maxBytes }
	for _, level := range []struct {
		keepAbove monitorpb.Priority
		counter   *atomic.Uint64
	}{
		{monitorpb.Priority_PRIORITY_LOW, &q.dropLow},
		{monitorpb.Priority_PRIORITY_NORMAL, &q.dropNormal},
	} {
		for _, e := range q.queued() {
			if !over() {
				return in
			}
			stripped, n := strip(e, level.keepAbove)
			if n > 0 && q.table[e.idx].CompareAndSwap(e.entry, stripped) {
				q.bytes.Add(stripped.size - e.size)
				level.counter.Add(uint64(n))
			}
		}
		if !over() {
			return in
		}
		if stripped, n := strip(slotEntry{entry: in}, level.keepAbove); n > 0 {
			in = stripped
			level.counter.Add(uint64(n))
		}
	}
	for over() && q.dropOldest() {
		q.dropBytes.Add(1)
	}
	return in
}

// slotEntry is a table entry and where it sits.
type slotEntry struct {
	*entry
	idx int
}

// queued returns the entries in the table, oldest first.
func (q *Queue) queued() []slotEntry {
	var out []slotEntry
	for i := range q.table {
		if e := q.table[i].Load(); e != nil {
			out = append(out, slotEntry{entry: e, idx: i})
		}
	}
	slices.SortFunc(out, func(a, b slotEntry) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// strip returns a copy of e without the metrics whose priority is not above
// keepAbove (unspecified counts as NORMAL), and how many it removed.
func strip(e slotEntry, keepAbove monitorpb.Priority) (*entry, int) {
	prio := func(m *monitorpb.Metric) monitorpb.Priority {
		if p := m.GetPriority(); p != monitorpb.Priority_PRIORITY_UNSPECIFIED {
			return p
		}
		return monitorpb.Priority_PRIORITY_NORMAL
	}
	n := 0
	for _, m := range e.snap.GetMetrics() {
		if prio(m) <= keepAbove {
			n++
		}
	}
	if n == 0 {
		return e.entry, 0
	}
	s := &monitorpb.Snapshot{HostId: e.snap.GetHostId(), Timestamp: e.snap.GetTimestamp(), Tags: e.snap.GetTags(),
		Metrics: make([]*monitorpb.Metric, 0, len(e.snap.GetMetrics())-n)}
	for _, m := range e.snap.GetMetrics() {
		if prio(m) > keepAbove {
			s.Metrics = append(s.Metrics, m)
		}
	}
	return &entry{snap: s, size: int64(proto.Size(s)), seq: e.seq}, n
}

// dropOldest pops and discards the oldest snapshot; false when empty.
func (q *Queue) dropOldest() bool {
	idx, ok := q.data.Pop()
	if !ok {
		return false
	}
	e := q.table[idx].Swap(nil)
	pushAll(q.free, []uint64{idx})
	if e != nil {
		q.bytes.Add(-e.size)
	}
	return true
}

// PopBatch takes up to max of the oldest snapshots, oldest first.
func (q *Queue) PopBatch(max int) []*monitorpb.Snapshot {
	idx := make([]uint64, max)
	n := q.data.PopBatch(idx)
	if n == 0 {
		return nil
	}
	out := make([]*monitorpb.Snapshot, 0, n)
	for _, i := range idx[:n] {
		if e := q.table[i].Swap(nil); e != nil {
			q.bytes.Add(-e.size)
			out = append(out, e.snap)
		}
	}
	pushAll(q.free, idx[:n])
	return out
}

// pushAll stores every value in r. Holding an index means the ring has room
// for it, but the ring can still look full for a moment: a consumer that
// claimed the cell ahead has not yet released it (the C ring's cells are
// released after the claim). So it retries until every value is in, which
// ends as soon as those consumers finish their copy.
func pushAll(r *c.Ring, vs []uint64) {
	for {
		vs = vs[r.PushBatch(vs):]
		if len(vs) == 0 {
			return
		}
		runtime.Gosched()
	}
}

// Ready is signalled (capacity 1, so signals coalesce) after every Push.
func (q *Queue) Ready() <-chan struct{} { return q.ready }

// Len returns how many snapshots are queued.
func (q *Queue) Len() int { return q.data.Len() }

// Cap returns the number of slots.
func (q *Queue) Cap() int { return q.data.Cap() }

// Bytes returns the encoded size of the queued snapshots.
func (q *Queue) Bytes() int64 { return q.bytes.Load() }

// Drops returns the drop counters.
func (q *Queue) Drops() Drops {
	return Drops{
		Metrics:   map[string]uint64{DropLowPriority: q.dropLow.Load(), DropNormalPriority: q.dropNormal.Load()},
		Snapshots: map[string]uint64{DropRingFull: q.dropFull.Load(), DropRingBytes: q.dropBytes.Load()},
	}
}
