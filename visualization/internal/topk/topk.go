// Package topk keeps, per metric, the K hosts with the highest latest
// value, as the seed draws it: a C++17 engine behind cgo
// (visualization/internal/cpp) with a pure-Go twin (NewGo; New uses it in
// builds without cgo), both exact and O(log N) per update, entries expiring
// TTL after their sample's timestamp. The current top K of every metric is
// exported to a POSIX shared-memory segment under a seqlock (layout, Go
// writer and reader in visualization/topkshm), which other local processes
// read with topkshm.ReadShared (monitorctl top) — no cgo needed.
//
// The Engine is fed by the live path (Observe), answers GET /api/v1/topk
// from memory (HandleTopK) and publishes "topk" events when a metric's top
// K changes, at most once per PublishInterval per metric (the latest top K
// is sent when the interval ends).
//
// Concurrency: every method of Engine is safe for concurrent use. Engine
// starts no goroutine of its own except short-lived timers that deliver a
// rate-limited event; Run, if the owner calls it, sweeps expired entries
// until its context ends. Close stops the timers and frees the engine.
package topk

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monitorhq/monitor/visualization/topkshm"
)

// Defaults of Options.
const (
	DefaultK               = 10
	DefaultTTL             = time.Hour
	DefaultMaxMetrics      = 1024
	DefaultPublishInterval = time.Second
	DefaultSweepInterval   = 5 * time.Second
	// MaxK bounds K and the k a query may ask for.
	MaxK = 1000
)

// Limits on names, as the C++ engine has them.
const (
	maxHostLen   = 128
	maxMetricLen = 1024
)

// Update result codes shared by both engines (cpp.Err* have the same values).
const (
	resInvalid     = -1
	resStale       = -2
	resMetricsFull = -3
)

// Options configure an Engine. Zero fields take the defaults above.
type Options struct {
	K          int           // entries per metric in events and the shared segment; default 10
	TTL        time.Duration // an entry expires this long after its timestamp; default 1 h
	MaxMetrics int           // metrics held at most (new ones beyond are refused and counted); default 1024
	// ShmName is the POSIX shared-memory name of the export, "/name" (e.g.
	// "/monitor-topk"); empty: no export. The engine creates or resets the
	// segment (mode 0600) and unlinks it on Close.
	ShmName string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Publish receives "topk" events (payload Event) when a metric's top K
	// changes; nil: none. It is called without the engine's lock held and
	// must not block for long.
	Publish func(kind string, payload any)
	// PublishInterval is the least time between two events of one metric;
	// default 1 s, negative: every change.
	PublishInterval time.Duration
	// SweepInterval is how often Run drops expired entries; default 5 s.
	SweepInterval time.Duration
	// Metrics selects what Observe feeds: series whose name starts with
	// one of these prefixes (e.g. "cpu.", "mem.used_percent"); empty: all.
	Metrics []string
}

// Entry is one ranked host of a metric; the shared segment holds the same.
type Entry = topkshm.Entry

// Event is the payload of a "topk" event: a metric's new top K.
type Event struct {
	Metric  string  `json:"metric"`
	Entries []Entry `json:"entries"` // best first; empty when every host expired
}

// Stats counts what the engine did; every refusal is counted by reason.
type Stats struct {
	Updates     uint64 `json:"updates"`      // accepted
	Invalid     uint64 `json:"invalid"`      // NaN/Inf, empty or oversize names
	Stale       uint64 `json:"stale"`        // older than the stored sample or already expired
	MetricsFull uint64 `json:"metrics_full"` // new metrics refused at MaxMetrics
	Events      uint64 `json:"events"`       // "topk" events published
}

// core is what both engines provide; the Engine serialises calls.
type core interface {
	// update returns a negative res* or (metricID << 1) | changed.
	update(metric, host string, value float64, ts, now int64) int64
	expire(now int64, changed []uint32) []uint32
	publish(now int64)
	top(id uint32, k int, dst []Entry) []Entry
	hosts(id uint32) int
	close() error
}

// Engine is a Top-K engine with its Go API.
type Engine struct {
	opts Options
	impl string

	mu      sync.Mutex
	core    core
	closed  bool
	ids     map[string]uint32
	names   []string
	changed []uint32
	lastEv  []time.Time   // per metric id: when its last event went out
	timers  []*time.Timer // per metric id: a pending trailing event, or nil
	sweptAt time.Time

	updates, invalid, stale, full, events atomic.Uint64
}

// New returns an engine on the build's implementation: the C++ engine
// with cgo, the Go twin without (Implementation says which).
func New(opts Options) (*Engine, error) {
	return build(opts, Implementation, newCore)
}

// NewGo returns an engine on the pure-Go twin in any build.
func NewGo(opts Options) (*Engine, error) {
	return build(opts, "go", func(k int, ttl time.Duration, maxMetrics int, shm string) (core, error) {
		return newGoCore(k, ttl, maxMetrics, shm)
	})
}

func build(opts Options, impl string, mk func(int, time.Duration, int, string) (core, error)) (*Engine, error) {
	if opts.K == 0 {
		opts.K = DefaultK
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.MaxMetrics == 0 {
		opts.MaxMetrics = DefaultMaxMetrics
	}
	if opts.PublishInterval == 0 {
		opts.PublishInterval = DefaultPublishInterval
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case opts.K < 1 || opts.K > MaxK:
		return nil, fmt.Errorf("topk: k %d is outside [1, %d]", opts.K, MaxK)
	case opts.TTL < time.Second:
		return nil, fmt.Errorf("topk: ttl %s is below 1s (timestamps are in seconds)", opts.TTL)
	case opts.MaxMetrics < 1 || opts.MaxMetrics > 1<<20:
		return nil, fmt.Errorf("topk: max metrics %d is outside [1, 2^20]", opts.MaxMetrics)
	}
	if opts.ShmName != "" {
		if err := topkshm.CheckName(opts.ShmName); err != nil {
			return nil, fmt.Errorf("topk: %w", err)
		}
	}
	c, err := mk(opts.K, opts.TTL, opts.MaxMetrics, opts.ShmName)
	if err != nil {
		return nil, fmt.Errorf("topk: %w", err)
	}
	return &Engine{opts: opts, impl: impl, core: c, ids: map[string]uint32{}, sweptAt: opts.Now()}, nil
}

// Implementation names the engine behind e ("c++17" or "go").
func (e *Engine) Implementation() string { return e.impl }

// K returns the configured number of entries per metric.
func (e *Engine) K() int { return e.opts.K }

// Update sets host's latest value of metric at ts (Unix seconds). An
// older sample than the host's stored one, an expired one, a NaN/Inf value
// or an empty/oversize name is refused and counted (Stats).
func (e *Engine) Update(metric, host string, value float64, ts int64) {
	e.mu.Lock()
	now := e.opts.Now()
	pend := e.apply(metric, host, value, ts, now.UnixNano(), nil)
	pend = e.lazySweep(now, pend)
	e.core.publish(now.UnixNano())
	evs := e.pendingEvents(pend, now)
	e.mu.Unlock()
	e.send(evs)
}

// Sample is one value of a batch update (UpdateMany).
type Sample struct {
	Metric string
	Host   string
	Value  float64
	TS     int64 // Unix seconds
}

// UpdateMany applies samples as Update does, and publishes the shared
// segment once, after all of them: a reader sees the batch whole or not at
// all.
func (e *Engine) UpdateMany(samples []Sample) {
	e.mu.Lock()
	now := e.opts.Now()
	var pend []uint32
	for _, s := range samples {
		pend = e.apply(s.Metric, s.Host, s.Value, s.TS, now.UnixNano(), pend)
	}
	pend = e.lazySweep(now, pend)
	e.core.publish(now.UnixNano())
	evs := e.pendingEvents(pend, now)
	e.mu.Unlock()
	e.send(evs)
}

// apply runs one update under the lock and appends the metric id to pend
// when its top K changed.
func (e *Engine) apply(metric, host string, value float64, ts, now int64, pend []uint32) []uint32 {
	if e.closed {
		return pend
	}
	r := e.core.update(metric, host, value, ts, now)
	switch {
	case r == resInvalid:
		e.invalid.Add(1)
		return pend
	case r == resStale:
		e.stale.Add(1)
		return pend
	case r == resMetricsFull:
		e.full.Add(1)
		return pend
	case r < 0:
		e.invalid.Add(1)
		return pend
	}
	e.updates.Add(1)
	id := uint32(r >> 1)
	if int(id) == len(e.names) {
		name := metric // a new metric: ids are dense, in order of appearance
		e.names = append(e.names, name)
		e.ids[name] = id
		e.lastEv = append(e.lastEv, time.Time{})
		e.timers = append(e.timers, nil)
	}
	if r&1 != 0 && !slices.Contains(pend, id) {
		pend = append(pend, id)
	}
	return pend
}

// sweep drops expired entries (under the lock) and adds the metrics whose
// top K changed to pend.
func (e *Engine) sweep(now time.Time, pend []uint32) []uint32 {
	if e.closed {
		return pend
	}
	if cap(e.changed) < len(e.names) {
		e.changed = make([]uint32, 0, len(e.names)+16)
	}
	e.changed = e.core.expire(now.UnixNano(), e.changed)
	for _, id := range e.changed {
		if !slices.Contains(pend, id) {
			pend = append(pend, id)
		}
	}
	e.sweptAt = now
	e.core.publish(now.UnixNano())
	return pend
}

// lazySweep sweeps when the last sweep is a SweepInterval old, so a
// stream of updates expires silent hosts of other metrics without Run.
func (e *Engine) lazySweep(now time.Time, pend []uint32) []uint32 {
	if now.Sub(e.sweptAt) < e.opts.SweepInterval {
		return pend
	}
	return e.sweep(now, pend)
}

// Expire drops every entry expired now, updating the shared segment and
// publishing events for the metrics whose top K changed. Run calls it
// periodically; Top and Metrics expire first on their own.
func (e *Engine) Expire() {
	e.mu.Lock()
	now := e.opts.Now()
	evs := e.pendingEvents(e.sweep(now, nil), now)
	e.mu.Unlock()
	e.send(evs)
}

// Run calls Expire every SweepInterval until ctx ends, so the shared
// segment and the events drop hosts that went silent even when nothing
// else arrives. It returns ctx.Err().
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			e.Expire()
		}
	}
}

// events_ turns changed metric ids into events under the rate limit (under
// the lock); metrics inside their interval get a trailing timer instead.
func (e *Engine) pendingEvents(pend []uint32, now time.Time) []Event {
	if e.opts.Publish == nil || len(pend) == 0 || e.closed {
		return nil
	}
	var evs []Event
	for _, id := range pend {
		if e.timers[id] != nil {
			continue // the trailing event will carry this change
		}
		if wait := e.opts.PublishInterval - now.Sub(e.lastEv[id]); e.opts.PublishInterval > 0 && !e.lastEv[id].IsZero() && wait > 0 {
			e.timers[id] = time.AfterFunc(wait, func() { e.trailing(id) })
			continue
		}
		e.lastEv[id] = now
		evs = append(evs, Event{Metric: e.names[id], Entries: e.core.top(id, e.opts.K, nil)})
	}
	return evs
}

// trailing sends the metric's top K when its rate-limit interval ended.
func (e *Engine) trailing(id uint32) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.timers[id] = nil
	now := e.opts.Now()
	e.lastEv[id] = now
	ev := Event{Metric: e.names[id], Entries: e.core.top(id, e.opts.K, nil)}
	e.mu.Unlock()
	e.send([]Event{ev})
}

func (e *Engine) send(evs []Event) {
	for _, ev := range evs {
		e.events.Add(1)
		e.opts.Publish("topk", ev)
	}
}

// Top returns the best min(k, hosts) entries of metric, best first (nil
// for an unknown metric or k <= 0). Expired entries are dropped first, so
// the answer is exact at the engine's clock.
func (e *Engine) Top(metric string, k int) []Entry {
	e.mu.Lock()
	now := e.opts.Now()
	evs := e.pendingEvents(e.sweep(now, nil), now)
	var out []Entry
	if id, ok := e.ids[metric]; ok && !e.closed {
		out = e.core.top(id, k, nil)
	}
	e.mu.Unlock()
	e.send(evs)
	return out
}

// Metrics returns the metrics that hold at least one unexpired host, sorted.
func (e *Engine) Metrics() []string {
	e.mu.Lock()
	now := e.opts.Now()
	evs := e.pendingEvents(e.sweep(now, nil), now)
	var out []string
	for id, name := range e.names {
		if !e.closed && e.core.hosts(uint32(id)) > 0 {
			out = append(out, name)
		}
	}
	e.mu.Unlock()
	e.send(evs)
	slices.Sort(out)
	return out
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	return Stats{Updates: e.updates.Load(), Invalid: e.invalid.Load(), Stale: e.stale.Load(),
		MetricsFull: e.full.Load(), Events: e.events.Load()}
}

// Close stops pending event timers, frees the engine and unlinks its
// shared segment. Later calls do nothing; other methods return nothing
// after Close.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	for i, t := range e.timers {
		if t != nil {
			t.Stop()
			e.timers[i] = nil
		}
	}
	if err := e.core.close(); err != nil {
		return fmt.Errorf("topk: close: %w", err)
	}
	return nil
}
