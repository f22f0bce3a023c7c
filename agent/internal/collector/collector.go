// Package collector reads this host's metrics, mostly straight from /proc
// and /sys (one read per file, buffers reused, no per-item library objects),
// and runs each collector under its own deadline, so a hung or failing
// source (a stale NFS mount, a missing sensor, a slow /proc) costs only its
// own metrics for that round.
//
// Collectors (configs/agent.yaml turns each on or off; docs/metrics.md lists
// every metric with its unit, priority and labels — keep it in step):
//
//	cpu         CPU time shares, total and per core; context switches and
//	            interrupts per second; load averages     (/proc/stat, /proc/loadavg)
//	memory      memory, swap, swap traffic                (/proc/meminfo, /proc/vmstat)
//	filesystem  space and inodes per mount, one statfs goroutine per mount
//	disk        I/O rates and busy % per block device      (/proc/diskstats)
//	network     traffic, errors, drops per interface       (/proc/net/dev)
//	tcp         TCP sockets by state                       (/proc/net/tcp, tcp6)
//	processes   process counts, forks, top N by CPU and memory (/proc/<pid>/stat)
//	system      open file descriptors, uptime              (/proc/sys/fs/file-nr, /proc/uptime)
//	sensors     temperatures                               (/sys/class/hwmon, thermal zones)
//
// Counters become per-second rates through pkg/algorithm's sliding window:
// the first reading of a series emits no rate, and a counter that went
// backwards (reset, device re-created) emits nothing that round — never a
// negative rate. Rates and shares are rounded to a step at least ten times
// finer than their inputs can resolve (resolution.go): the digits below
// are division noise that storage could not compress. Label values that
// storage would refuse (a ',' or '=' in a mount point) have those
// characters replaced by '_'.
//
// Concurrency: a Collector is called by one goroutine at a time (the Runner
// never starts a second call while one is running), so collectors keep
// their previous readings without locks. Runner.Collect is called from one
// goroutine; Runner.Stats and Runner.Wait are safe from any.
package collector

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Collector reads one family of host metrics.
type Collector interface {
	// Name is a short stable name ("cpu", "disk") used in logs and stats.
	Name() string
	// Collect returns the current metrics. It should honour ctx, but the
	// Runner does not rely on it: a call that outlives its deadline is
	// abandoned. It may return metrics together with an error when only
	// part of the reading failed.
	Collect(ctx context.Context) ([]*monitorpb.Metric, error)
}

// Stats are one collector's counters since the Runner started.
type Stats struct {
	Errors   uint64        // calls that returned an error
	Timeouts uint64        // calls that missed the round's deadline
	Skips    uint64        // rounds skipped because the previous call was still running
	Last     time.Duration // how long the last call that returned took
}

// Runner runs a fixed set of collectors once per round.
type Runner struct {
	timeout time.Duration
	log     *slog.Logger
	slots   []*slot

	running atomic.Int64  // collector goroutines not yet returned
	idle    chan struct{} // signalled when running drops to 0

	// observe, when set, gets every call's duration (from the collector
	// goroutine, so it must be safe for concurrent use).
	observe func(collector string, took time.Duration)
}

type slot struct {
	c    Collector
	busy atomic.Bool // a call is running (possibly abandoned)

	errors, timeouts, skips atomic.Uint64
	last                    atomic.Int64 // ns

	// state is the outcome of the last round, touched only by the
	// goroutine calling Runner.Collect; it is logged when it changes.
	state string
}

const (
	stateOK      = "ok"
	stateError   = "error"
	stateTimeout = "timeout"
	stateSkipped = "skipped"
)

// NewRunner returns a Runner that gives each collector timeout per round.
// observe, if not nil, is called with every call's duration, late calls
// included, from the collector's goroutine.
func NewRunner(collectors []Collector, timeout time.Duration, logger *slog.Logger, observe func(collector string, took time.Duration)) *Runner {
	r := &Runner{timeout: timeout, log: logger, idle: make(chan struct{}, 1), observe: observe}
	for _, c := range collectors {
		r.slots = append(r.slots, &slot{c: c, state: stateOK})
	}
	return r
}

type result struct {
	s       *slot
	metrics []*monitorpb.Metric
	err     error
}

// Collect runs every collector concurrently, each with the Runner's
// timeout, and returns the metrics of those that finished in time. It
// returns no later than the timeout (or ctx's end). A collector whose
// previous call is still running is skipped this round, so a hung source
// holds at most one goroutine.
func (r *Runner) Collect(ctx context.Context) []*monitorpb.Metric {
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	results := make(chan result, len(r.slots)) // buffered: late results never block
	pending := make(map[*slot]bool, len(r.slots))
	for _, s := range r.slots {
		if !s.busy.CompareAndSwap(false, true) {
			s.skips.Add(1)
			r.setState(s, stateSkipped, errors.New("previous call is still running"))
			continue
		}
		pending[s] = true
		r.running.Add(1)
		go func() {
			began := time.Now()
			ms, err := s.c.Collect(rctx)
			took := time.Since(began)
			s.last.Store(int64(took))
			if r.observe != nil {
				r.observe(s.c.Name(), took)
			}
			s.busy.Store(false)
			results <- result{s: s, metrics: ms, err: err}
			if r.running.Add(-1) == 0 {
				select {
				case r.idle <- struct{}{}:
				default:
				}
			}
		}()
	}

	got := make(map[*slot][]*monitorpb.Metric, len(pending))
	// out keeps the collectors' order, whatever order they finish in.
	out := func() []*monitorpb.Metric {
		var ms []*monitorpb.Metric
		for _, s := range r.slots {
			ms = append(ms, got[s]...)
		}
		return ms
	}
	for len(pending) > 0 {
		select {
		case res := <-results:
			delete(pending, res.s)
			got[res.s] = res.metrics
			switch {
			case res.err == nil:
				r.setState(res.s, stateOK, nil)
			case errors.Is(res.err, context.DeadlineExceeded) && ctx.Err() == nil:
				res.s.timeouts.Add(1)
				r.setState(res.s, stateTimeout, res.err)
			case ctx.Err() != nil:
				// Shutting down: not the collector's fault.
			default:
				res.s.errors.Add(1)
				r.setState(res.s, stateError, res.err)
			}
		case <-rctx.Done():
			if ctx.Err() == nil {
				for s := range pending {
					s.timeouts.Add(1)
					r.setState(s, stateTimeout, context.DeadlineExceeded)
				}
			}
			return out()
		}
	}
	return out()
}

func (r *Runner) setState(s *slot, state string, err error) {
	if s.state == state {
		return
	}
	prev := s.state
	s.state = state
	if state == stateOK {
		r.log.Info("collector recovered", "collector", s.c.Name(), "was", prev)
		return
	}
	r.log.Warn("collector failing; its metrics are missing until it recovers",
		"collector", s.c.Name(), "state", state, "timeout", r.timeout, "err", err)
}

// Stats returns each collector's counters by name.
func (r *Runner) Stats() map[string]Stats {
	out := make(map[string]Stats, len(r.slots))
	for _, s := range r.slots {
		out[s.c.Name()] = Stats{Errors: s.errors.Load(), Timeouts: s.timeouts.Load(), Skips: s.skips.Load(), Last: time.Duration(s.last.Load())}
	}
	return out
}

// Wait blocks until every collector call has returned, or ctx ends; it
// returns ctx's error and the number still running in the latter case. A
// collector stuck in the kernel cannot be stopped, only abandoned.
func (r *Runner) Wait(ctx context.Context) (stuck int, err error) {
	for {
		n := r.running.Load()
		if n == 0 {
			return 0, nil
		}
		select {
		case <-r.idle:
		case <-ctx.Done():
			return int(r.running.Load()), ctx.Err()
		}
	}
}

// add appends a metric unless its value is NaN or ±Inf, which the broker
// would refuse. labels are name, value pairs.
func add(out []*monitorpb.Metric, name, unit string, prio monitorpb.Priority, value float64, labels ...string) []*monitorpb.Metric {
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return out
	}
	m := &monitorpb.Metric{Name: name, Value: value, Unit: unit, Priority: prio}
	if len(labels) > 0 {
		m.Labels = make(map[string]string, len(labels)/2)
		for i := 0; i+1 < len(labels); i += 2 {
			m.Labels[labels[i]] = labelValue(labels[i+1])
		}
	}
	return append(out, m)
}

// labelValue replaces the characters storage.ValidateLabelValue refuses
// and cuts the value to storage.MaxLabelValueLen bytes.
func labelValue(v string) string {
	if len(v) > storage.MaxLabelValueLen {
		v = strings.ToValidUTF8(v[:storage.MaxLabelValueLen], "")
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || strings.ContainsRune(`{}=,"\`, r) {
			return '_'
		}
		return r
	}, v)
}

// percent is 100·part/whole clamped to 0…100, or NaN (dropped by add) when
// whole is not positive.
func percent(part, whole float64) float64 {
	if whole <= 0 {
		return math.NaN()
	}
	return math.Min(100, math.Max(0, 100*part/whole))
}
