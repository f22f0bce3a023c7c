// Package collector reads host metrics with gopsutil and runs each
// collector under its own deadline, so a hung or failing source (a stale NFS
// mount, a slow /proc) costs only its own metrics for that round.
//
// Every metric the agent sends, with its unit and drop priority (the same
// list is in docs/metrics.md; keep both in step):
//
//	name                          labels     unit       priority  collector
//	cpu.usage_percent                        %          HIGH      cpu      100 − idle − iowait
//	cpu.user_percent                         %          NORMAL    cpu      user + nice
//	cpu.system_percent                       %          NORMAL    cpu      system + irq + softirq
//	cpu.iowait_percent                       %          NORMAL    cpu
//	cpu.steal_percent                        %          NORMAL    cpu
//	cpu.idle_percent                         %          NORMAL    cpu
//	cpu.core_usage_percent        cpu        %          NORMAL    cpu      per logical CPU, cpu=cpu0…
//	load.1                                   ""         HIGH      cpu      load average, 1 min
//	load.5                                   ""         NORMAL    cpu
//	load.15                                  ""         NORMAL    cpu
//	mem.total_bytes                          bytes      NORMAL    memory
//	mem.used_bytes                           bytes      HIGH      memory   total − available
//	mem.available_bytes                      bytes      HIGH      memory
//	mem.used_percent                         %          HIGH      memory   used / total
//	swap.total_bytes                         bytes      NORMAL    memory
//	swap.used_bytes                          bytes      NORMAL    memory
//	swap.used_percent                        %          NORMAL    memory   0 without swap
//	disk.total_bytes              mount      bytes      NORMAL    disk
//	disk.used_bytes               mount      bytes      NORMAL    disk
//	disk.used_percent             mount      %          NORMAL    disk     used / (used + available to users), as df
//	disk.inodes_used_percent      mount      %          LOW       disk     absent where the fs has no inode count
//	disk.read_bytes_per_sec       device     bytes/s    NORMAL    disk
//	disk.write_bytes_per_sec      device     bytes/s    NORMAL    disk
//	disk.reads_per_sec            device     ops/s      NORMAL    disk
//	disk.writes_per_sec           device     ops/s      NORMAL    disk
//	net.rx_bytes_per_sec          interface  bytes/s    NORMAL    network
//	net.tx_bytes_per_sec          interface  bytes/s    NORMAL    network
//	net.rx_packets_per_sec        interface  packets/s  NORMAL    network
//	net.tx_packets_per_sec        interface  packets/s  NORMAL    network
//	net.rx_errors_per_sec         interface  packets/s  LOW       network
//	net.tx_errors_per_sec         interface  packets/s  LOW       network
//	net.rx_drops_per_sec          interface  packets/s  LOW       network
//	net.tx_drops_per_sec          interface  packets/s  LOW       network
//
// Rates and CPU percentages come from the difference to the previous
// reading of the same collector: the first round emits none of them, a
// series that appears emits its first rate one round later, and a counter
// that went backwards (reset, device re-created) emits nothing that round.
// Disk usage skips pseudo filesystems (proc, sysfs, tmpfs, overlay,
// squashfs, cgroup, …) and mounts under /proc, /sys, /dev; disk I/O skips
// partitions, loop, ram and zram devices; network skips lo. Label values
// that storage would refuse (a ',' or '=' in a mount point) have those
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

// Stats are one collector's failure counters since the Runner started.
type Stats struct {
	Errors   uint64 // calls that returned an error
	Timeouts uint64 // calls that missed the round's deadline
	Skips    uint64 // rounds skipped because the previous call was still running
}

// Runner runs a fixed set of collectors once per round.
type Runner struct {
	timeout time.Duration
	log     *slog.Logger
	slots   []*slot

	running atomic.Int64  // collector goroutines not yet returned
	idle    chan struct{} // signalled when running drops to 0
}

type slot struct {
	c    Collector
	busy atomic.Bool // a call is running (possibly abandoned)

	errors, timeouts, skips atomic.Uint64

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
func NewRunner(collectors []Collector, timeout time.Duration, logger *slog.Logger) *Runner {
	r := &Runner{timeout: timeout, log: logger, idle: make(chan struct{}, 1)}
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
			ms, err := s.c.Collect(rctx)
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
		out[s.c.Name()] = Stats{Errors: s.errors.Load(), Timeouts: s.timeouts.Load(), Skips: s.skips.Load()}
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

// rates turns monotonically increasing counters into per-second rates
// against the previous reading. Call begin, then rate for each counter,
// then commit once the whole reading succeeded.
type rates struct {
	prev, cur     map[string]uint64
	prevAt, curAt time.Time
}

func (r *rates) begin(now time.Time) {
	r.cur = make(map[string]uint64, len(r.prev))
	r.curAt = now
}

// rate records v under key and returns its rate since the previous reading;
// ok is false on the first reading of key, after a counter reset, or when no
// time passed.
func (r *rates) rate(key string, v uint64) (perSec float64, ok bool) {
	r.cur[key] = v
	p, seen := r.prev[key]
	dt := r.curAt.Sub(r.prevAt).Seconds()
	if !seen || v < p || dt <= 0 {
		return 0, false
	}
	return float64(v-p) / dt, true
}

func (r *rates) commit() {
	r.prev, r.prevAt = r.cur, r.curAt
	r.cur = nil
}
