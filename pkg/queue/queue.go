// Package queue is the broker's write buffer: a bounded queue of snapshots
// with batching workers that coalesce what many Ingest streams enqueue into
// one storage write per flush.
//
// # Lanes
//
// The queue keeps one lane per storage shard when the writer tells it how
// hosts are routed (Sharded; the Redis backend does), otherwise one lane.
// Each lane has its own share of the capacity and its own workers, so a slow
// or unreachable shard fills and refuses only its own lane: hosts on healthy
// shards keep flowing. A lane flushes when it holds FlushSnapshots snapshots
// or when its oldest snapshot has waited FlushInterval, whichever comes
// first; every flush is one Writer.WriteSnapshots call, which for the Redis
// backend is one MULTI/EXEC pipeline to the lane's shard.
//
// # Admission and completion
//
// Enqueue never blocks and never lets memory grow without bound: a batch
// that does not fit in its lanes is refused at once with ErrFull (the
// broker turns that into flow control), and a batch is admitted whole or
// not at all. An admitted batch's completion callback runs exactly once,
// after every one of its snapshots was written (err == nil) or after a
// write failed (the first error). Nothing is retried here: the agent
// resends after flow control, and writes are idempotent.
//
// # Shutdown
//
// Close stops admission (ErrClosed), flushes every lane at once without
// waiting for the flush interval, fires every completion and returns when
// the workers have exited.
//
// Concurrency: every method is safe for concurrent use. Completion
// callbacks run on worker goroutines and must not block.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Writer stores snapshots; storage.Store satisfies it.
type Writer interface {
	WriteSnapshots(ctx context.Context, snaps []storage.Snapshot) error
}

// Sharded is implemented by writers whose hosts live on independent shards
// (pkg/storage/redisstore). ShardOf must be a pure function of the host id
// (for a given ring) with a result >= 0; a result beyond the lanes made for
// ShardCount() at New shares a lane.
type Sharded interface {
	ShardCount() int
	ShardOf(hostID string) int
}

// Config tunes a Queue. Zero fields take the defaults below.
type Config struct {
	// Capacity is how many snapshots may wait in the queue, shared equally
	// by the lanes. Besides those, each lane has at most Workers ×
	// FlushSnapshots snapshots in writes, so the queue never holds more
	// than Capacity + lanes × Workers × FlushSnapshots. An empty lane
	// always admits one batch, so a batch larger than a lane's share is
	// never refused forever.
	Capacity int
	// FlushSnapshots is the size at which a lane flushes, and the most
	// snapshots one write carries.
	FlushSnapshots int
	// FlushInterval is the longest a snapshot waits for its lane to fill.
	FlushInterval time.Duration
	// Workers is how many writes one lane may have in flight.
	Workers int
	// WriteTimeout is the deadline of one write.
	WriteTimeout time.Duration
}

// Defaults.
const (
	DefaultCapacity       = 20000
	DefaultFlushSnapshots = 256
	DefaultFlushInterval  = 5 * time.Millisecond
	DefaultWorkers        = 2
	DefaultWriteTimeout   = 5 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Capacity <= 0 {
		c.Capacity = DefaultCapacity
	}
	if c.FlushSnapshots <= 0 {
		c.FlushSnapshots = DefaultFlushSnapshots
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	return c
}

// Sentinel errors of Enqueue.
var (
	// ErrFull: a lane of the batch has no room; retry later.
	ErrFull = errors.New("write queue full")
	// ErrClosed: the queue is shutting down.
	ErrClosed = errors.New("write queue closed")
)

// FullError is the error of an Enqueue refused because a lane is full. It
// wraps ErrFull and says how long the lane should need to write what it
// holds, so that callers can ask their clients to come back when there is
// room rather than all at once.
type FullError struct {
	Lane, Depth, Capacity int
	// Drain is the lane's depth times its recent write time per snapshot,
	// over its workers; 0 before the lane's first successful write.
	Drain time.Duration
}

func (e *FullError) Error() string {
	return fmt.Sprintf("%v: lane %d holds %d of %d snapshots (about %v to drain)", ErrFull, e.Lane, e.Depth, e.Capacity, e.Drain.Round(time.Millisecond))
}

// Unwrap makes errors.Is(err, ErrFull) true.
func (e *FullError) Unwrap() error { return ErrFull }

// Refusal reasons counted in Stats.Refused.
const (
	ReasonFull   = "queue_full"
	ReasonClosed = "closed"
)

// Queue is a bounded write queue. Create it with New; stop it with Close.
type Queue struct {
	w       Writer
	cfg     Config
	log     *slog.Logger
	sharded Sharded // nil: one lane
	lanes   []*lane
	wg      sync.WaitGroup
	closing chan struct{}
	once    sync.Once

	enqueued, refusedFull, refusedClosed atomic.Uint64
	flushes, flushed, failed, writeErrs  atomic.Uint64
	flushSize                            histogram
	writeLatency                         histogram
}

// ticket is one Enqueue call: its completion fires when remaining reaches 0.
type ticket struct {
	remaining atomic.Int64
	at        time.Time
	done      func(error)
	mu        sync.Mutex
	err       error
}

func (t *ticket) finish(n int, err error) {
	if err != nil {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	if t.remaining.Add(int64(-n)) == 0 {
		t.mu.Lock()
		err := t.err
		t.mu.Unlock()
		t.done(err)
	}
}

type item struct {
	snap storage.Snapshot
	t    *ticket
}

// lane is one shard's share of the queue.
type lane struct {
	id       int
	capacity int
	kick     chan struct{} // wakes one waiting worker
	mu       sync.Mutex
	items    []item
	closed   bool
	inFlight atomic.Int64
	depth    atomic.Int64 // len(items), readable without the lock
	perSnap  atomic.Int64 // moving average of write nanoseconds per snapshot
}

// observe folds a successful write of n snapshots that took d into the
// lane's per-snapshot cost (weight 1/5 for the newest).
func (l *lane) observe(n int, d time.Duration) {
	cost := int64(d) / int64(n)
	for {
		old := l.perSnap.Load()
		next := cost
		if old != 0 {
			next = old + (cost-old)/5
		}
		if l.perSnap.CompareAndSwap(old, next) {
			return
		}
	}
}

// New starts the workers of a queue writing to w; with a Sharded w it keeps
// one lane per shard.
func New(w Writer, cfg Config, logger *slog.Logger) *Queue {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	q := &Queue{w: w, cfg: cfg, log: logger, closing: make(chan struct{})}
	n := 1
	if sh, ok := w.(Sharded); ok && sh.ShardCount() > 1 {
		q.sharded, n = sh, sh.ShardCount()
	}
	per := (cfg.Capacity + n - 1) / n
	q.flushSize.init(flushSizeBounds)
	q.writeLatency.init(latencyBounds)
	for i := 0; i < n; i++ {
		l := &lane{id: i, capacity: per, kick: make(chan struct{}, 1), items: make([]item, 0, min(per, cfg.FlushSnapshots))}
		q.lanes = append(q.lanes, l)
		for j := 0; j < cfg.Workers; j++ {
			q.wg.Add(1)
			go q.work(l)
		}
	}
	return q
}

// Lanes is the number of lanes (1, or the writer's shard count).
func (q *Queue) Lanes() int { return len(q.lanes) }

// laneOf is the host's lane: its shard's. The lanes are made for the
// shards at New; when the writer's ring changes later (a shard added to a
// cluster) shards beyond them share lanes by index, until the broker
// restarts.
func (q *Queue) laneOf(hostID string) int {
	if q.sharded == nil {
		return 0
	}
	return q.sharded.ShardOf(hostID) % len(q.lanes)
}

// Enqueue offers snaps for writing and returns at once: nil when admitted
// (done will be called exactly once, from a worker goroutine, and must not
// block), ErrFull or ErrClosed when refused (done is never called). The
// queue keeps snaps until the write; the caller must not modify them. An
// empty snaps completes immediately with nil.
func (q *Queue) Enqueue(snaps []storage.Snapshot, done func(error)) error {
	if len(snaps) == 0 {
		done(nil)
		return nil
	}
	t := &ticket{at: time.Now(), done: done}
	t.remaining.Store(int64(len(snaps)))

	// The common case: every snapshot on one lane.
	first := q.laneOf(snaps[0].HostID)
	one := true
	for i := 1; i < len(snaps) && one; i++ {
		one = q.laneOf(snaps[i].HostID) == first
	}
	if one {
		l := q.lanes[first]
		l.mu.Lock()
		if err := q.admit(l, len(snaps)); err != nil {
			l.mu.Unlock()
			return err
		}
		for i := range snaps {
			l.items = append(l.items, item{snap: snaps[i], t: t})
		}
		l.depth.Store(int64(len(l.items)))
		n := len(l.items)
		l.mu.Unlock()
		q.enqueued.Add(uint64(len(snaps)))
		q.wake(l, n, len(snaps))
		return nil
	}

	// Several lanes: admit on all of them or on none. Lanes are locked in
	// index order, so two such calls cannot deadlock.
	count := make([]int, len(q.lanes))
	for i := range snaps {
		count[q.laneOf(snaps[i].HostID)]++
	}
	var locked []*lane
	unlock := func() {
		for _, l := range locked {
			l.mu.Unlock()
		}
	}
	for i, l := range q.lanes {
		if count[i] == 0 {
			continue
		}
		l.mu.Lock()
		locked = append(locked, l)
		if err := q.admit(l, count[i]); err != nil {
			unlock()
			return err
		}
	}
	for i := range snaps {
		l := q.lanes[q.laneOf(snaps[i].HostID)]
		l.items = append(l.items, item{snap: snaps[i], t: t})
	}
	sizes := make([]int, len(locked))
	for i, l := range locked {
		l.depth.Store(int64(len(l.items)))
		sizes[i] = len(l.items)
	}
	unlock()
	q.enqueued.Add(uint64(len(snaps)))
	for i, l := range locked {
		q.wake(l, sizes[i], count[l.id])
	}
	return nil
}

// Refuse returns the *FullError that Enqueue would return now for n
// snapshots of hostID when that host's lane is full, and nil when it has
// room (which a later Enqueue may still find gone). A refusal is counted.
// Callers use it to skip validating a batch that would be refused anyway:
// under overload that work is what the broker would spend its CPU on.
func (q *Queue) Refuse(hostID string, n int) error {
	l := q.lanes[q.laneOf(hostID)]
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil // Enqueue reports it
	}
	return q.admit(l, n)
}

// admit checks room for n more snapshots on l; l.mu is held.
func (q *Queue) admit(l *lane, n int) error {
	if l.closed {
		q.refusedClosed.Add(uint64(n))
		return ErrClosed
	}
	if len(l.items) > 0 && len(l.items)+n > l.capacity {
		q.refusedFull.Add(uint64(n))
		drain := time.Duration(int64(len(l.items)) * l.perSnap.Load() / int64(q.cfg.Workers))
		return &FullError{Lane: l.id, Depth: len(l.items), Capacity: l.capacity, Drain: drain}
	}
	return nil
}

// wake tells a worker about added snapshots when it has something new to
// decide: the lane went from empty to not, or reached the flush size.
func (q *Queue) wake(l *lane, size, added int) {
	if size == added || size >= q.cfg.FlushSnapshots {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// Close stops admission, flushes everything queued, fires every completion
// and waits for the workers. It is safe to call more than once.
func (q *Queue) Close() {
	q.once.Do(func() {
		for _, l := range q.lanes {
			l.mu.Lock()
			l.closed = true
			l.mu.Unlock()
		}
		close(q.closing)
	})
	q.wg.Wait()
}

// work is one worker of lane l: it waits for a flush condition, takes up to
// FlushSnapshots snapshots, writes them and fires completions.
func (q *Queue) work(l *lane) {
	defer q.wg.Done()
	var (
		batch []item
		snaps []storage.Snapshot
		timer = time.NewTimer(time.Hour)
	)
	timer.Stop()
	defer timer.Stop()
	for {
		batch = q.take(l, batch[:0], timer)
		if batch == nil {
			return
		}
		snaps = snaps[:0]
		for i := range batch {
			snaps = append(snaps, batch[i].snap)
		}
		q.write(l, batch, snaps)
		clear(batch) // do not keep written snapshots reachable
		clear(snaps)
	}
}

// take waits until l should flush and moves up to FlushSnapshots items into
// batch. It returns nil when the queue is closed and l is empty.
func (q *Queue) take(l *lane, batch []item, timer *time.Timer) []item {
	closing := q.closing
	for {
		l.mu.Lock()
		n := len(l.items)
		if n == 0 && l.closed {
			l.mu.Unlock()
			return nil
		}
		flush := n >= q.cfg.FlushSnapshots || (n > 0 && l.closed)
		var wait time.Duration
		if !flush && n > 0 {
			wait = q.cfg.FlushInterval - time.Since(l.items[0].t.at)
			flush = wait <= 0
		}
		if flush {
			k := min(n, q.cfg.FlushSnapshots)
			batch = append(batch, l.items[:k]...)
			rest := copy(l.items, l.items[k:])
			clear(l.items[rest:])
			l.items = l.items[:rest]
			l.depth.Store(int64(rest))
			l.inFlight.Add(int64(k))
			l.mu.Unlock()
			if rest > 0 {
				// Let another worker look at what is left.
				select {
				case l.kick <- struct{}{}:
				default:
				}
			}
			return batch
		}
		l.mu.Unlock()
		var tc <-chan time.Time
		if n > 0 {
			timer.Reset(wait) // Go 1.23+ timers: no stale value to drain
			tc = timer.C
		}
		select {
		case <-l.kick:
		case <-tc:
		case <-closing:
			closing = nil // closed for good; l.closed is set, look again
		}
	}
}

// write stores one flush and completes its tickets.
func (q *Queue) write(l *lane, batch []item, snaps []storage.Snapshot) {
	ctx, cancel := context.WithTimeout(context.Background(), q.cfg.WriteTimeout)
	start := time.Now()
	err := q.w.WriteSnapshots(ctx, snaps)
	elapsed := time.Since(start)
	cancel()
	q.flushes.Add(1)
	q.flushSize.observe(float64(len(batch)))
	q.writeLatency.observe(elapsed.Seconds())
	if err != nil && errors.Is(err, storage.ErrInvalid) && batch[0].t != batch[len(batch)-1].t {
		// One caller's snapshot is refused by the backend: write each
		// caller's share alone so only that caller gets the error.
		q.writeEach(l, batch, snaps)
		return
	}
	if err != nil {
		q.writeErrs.Add(1)
		q.failed.Add(uint64(len(batch)))
		q.log.Warn("write queue flush failed", "lane", l.id, "snapshots", len(batch), "after", elapsed, "err", err)
		err = fmt.Errorf("write %d snapshots (lane %d): %w", len(batch), l.id, err)
	} else {
		q.flushed.Add(uint64(len(batch)))
		l.observe(len(batch), elapsed)
	}
	l.inFlight.Add(int64(-len(batch)))
	complete(batch, err)
}

// writeEach writes each ticket's run of batch in its own call.
func (q *Queue) writeEach(l *lane, batch []item, snaps []storage.Snapshot) {
	for start := 0; start < len(batch); {
		end := start + 1
		for end < len(batch) && batch[end].t == batch[start].t {
			end++
		}
		ctx, cancel := context.WithTimeout(context.Background(), q.cfg.WriteTimeout)
		err := q.w.WriteSnapshots(ctx, snaps[start:end])
		cancel()
		if err != nil {
			q.writeErrs.Add(1)
			q.failed.Add(uint64(end - start))
		} else {
			q.flushed.Add(uint64(end - start))
		}
		l.inFlight.Add(int64(start - end))
		batch[start].t.finish(end-start, err)
		start = end
	}
}

// complete fires the tickets of batch; items of one ticket are adjacent.
func complete(batch []item, err error) {
	for start := 0; start < len(batch); {
		end := start + 1
		for end < len(batch) && batch[end].t == batch[start].t {
			end++
		}
		batch[start].t.finish(end-start, err)
		start = end
	}
}
