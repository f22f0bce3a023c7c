package collector

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat CPU times: 100 on
// every Linux architecture the agent builds for.
const clockTicks = 100

// Processes reports process and thread counts, fork rate, and the top N
// processes by CPU and by memory, reading /proc/<pid>/stat directly (one
// small read per process; no per-process gopsutil objects).
//
// Top-N series carry the labels pid and comm (the kernel's 15-character
// process name). Their label sets change as processes come and go: at most
// 2·N such series per snapshot, but over time one per process that was
// ever in a top N. That is the cardinality price of per-process metrics,
// bounded per snapshot by top_processes (0 turns them off).
type Processes struct {
	paths Paths
	topN  int
	now   func() time.Time
	fr    fileReader
	rates *counterRates[procKey] // CPU ticks per process
	forks *counterRates[string]
	page  uint64
	procs []procInfo
}

// procKey identifies a process across readings: a pid can be reused, its
// start time cannot.
type procKey struct {
	pid   int32
	start uint64
}

type procInfo struct {
	pid     int32
	comm    string
	state   byte
	rss     uint64  // bytes
	cpu     float64 // share of all CPUs, %
	haveCPU bool
}

// NewProcesses returns the processes collector reporting the top topN
// processes by CPU and by memory; rates span window.
func NewProcesses(paths Paths, topN int, window time.Duration) *Processes {
	return &Processes{
		paths: paths, topN: topN, now: time.Now,
		rates: newCounterRates[procKey](window), forks: newCounterRates[string](window),
		page: uint64(os.Getpagesize()),
	}
}

// Name implements Collector.
func (*Processes) Name() string { return "processes" }

// Collect implements Collector.
func (c *Processes) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	stat, err := c.fr.read(c.paths.proc("stat"))
	if err != nil {
		return nil, fmt.Errorf("read process counters: %w", err)
	}
	var running, blocked, forks uint64
	cpus := 0
	lines(stat, func(line []byte) bool {
		switch {
		case bytes.HasPrefix(line, []byte("cpu")) && len(line) > 3 && line[3] >= '0' && line[3] <= '9':
			cpus++
		case bytes.HasPrefix(line, []byte("procs_running ")):
			running, _ = atou(field(line, 1))
		case bytes.HasPrefix(line, []byte("procs_blocked ")):
			blocked, _ = atou(field(line, 1))
		case bytes.HasPrefix(line, []byte("processes ")):
			forks, _ = atou(field(line, 1))
		}
		return true
	})
	now := c.now()
	n, low := monitorpb.Priority_PRIORITY_NORMAL, monitorpb.Priority_PRIORITY_LOW
	var out []*monitorpb.Metric
	out = add(out, "proc.running", "", n, float64(running))
	out = add(out, "proc.blocked", "", n, float64(blocked))
	c.forks.Begin(now)
	if r, ok := c.forks.Rate("forks", forks, 1); ok {
		out = add(out, "proc.forks_per_sec", "1/s", low, r)
	}
	c.forks.Commit()

	if err := c.scan(ctx, now, max(cpus, 1)); err != nil {
		return out, err
	}
	var zombies, threads uint64
	for i := range c.procs {
		if c.procs[i].state == 'Z' {
			zombies++
		}
	}
	if la, err := c.fr.read(c.paths.proc("loadavg")); err == nil {
		// "0.10 0.20 0.30 2/345 6789": runnable/total scheduling entities.
		if f := field(la, 3); f != nil {
			if i := bytes.IndexByte(f, '/'); i >= 0 {
				threads, _ = atou(f[i+1:])
			}
		}
	}
	out = add(out, "proc.total", "", n, float64(len(c.procs)))
	out = add(out, "proc.zombie", "", low, float64(zombies))
	if threads > 0 {
		out = add(out, "proc.threads", "", low, float64(threads))
	}
	return c.top(out), nil
}

// scan reads every /proc/<pid>/stat into c.procs.
func (c *Processes) scan(ctx context.Context, now time.Time, cpus int) error {
	dir, err := os.Open(c.paths.Proc)
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	defer dir.Close()
	c.procs = c.procs[:0]
	c.rates.Begin(now)
	// Ticks per second as a share of all CPUs, in %: one tick over the
	// span is the quantum (see resolution.go; the read's jitter would only
	// matter above 10^5 ticks per second).
	share := 100 / float64(clockTicks*cpus)
	d := decimals(rateQuantum(1, 0, c.rates.span()) * share)
	for {
		names, err := dir.Readdirnames(256)
		for _, name := range names {
			if name[0] < '0' || name[0] > '9' {
				continue
			}
			p, key, ticks, ok := c.readStat(name)
			if !ok {
				continue // gone meanwhile, or a kernel quirk: skip it
			}
			if r, ok := c.rates.Observe(key, ticks); ok {
				p.cpu = round(min(100, r*share), d)
				p.haveCPU = true
			}
			c.procs = append(c.procs, p)
		}
		if err != nil || len(names) == 0 {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	c.rates.Commit()
	return nil
}

// readStat parses /proc/<pid>/stat: "pid (comm) state ppid … utime stime …
// starttime vsize rss …" (comm may hold spaces and parentheses; it ends at
// the last ')').
func (c *Processes) readStat(pid string) (p procInfo, key procKey, ticks uint64, ok bool) {
	b, err := c.fr.read(c.paths.proc(pid, "stat"))
	if err != nil {
		return p, key, 0, false // exited since the directory was listed
	}
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return p, key, 0, false
	}
	id, ok := atou(bytes.TrimSpace(b[:open]))
	if !ok {
		return p, key, 0, false
	}
	rest := b[closing+1:]
	// Fields after comm, 0-based: 0 state, 11 utime, 12 stime, 19
	// starttime, 21 rss (pages).
	state := field(rest, 0)
	utime, ok1 := atou(field(rest, 11))
	stime, ok2 := atou(field(rest, 12))
	start, ok3 := atou(field(rest, 19))
	rss, ok4 := atou(field(rest, 21))
	if len(state) != 1 || !ok1 || !ok2 || !ok3 || !ok4 {
		return p, key, 0, false
	}
	comm := string(b[open+1 : closing])
	if comm == "" {
		comm = "unknown"
	}
	p = procInfo{pid: int32(id), comm: comm, state: state[0], rss: rss * c.page}
	return p, procKey{pid: int32(id), start: start}, utime + stime, true
}

// top appends the top N processes by CPU (those with a previous reading)
// and by resident memory.
func (c *Processes) top(out []*monitorpb.Metric) []*monitorpb.Metric {
	if c.topN <= 0 || len(c.procs) == 0 {
		return out
	}
	n := monitorpb.Priority_PRIORITY_NORMAL
	byCPU := slices.Clone(c.procs)
	slices.SortFunc(byCPU, func(a, b procInfo) int {
		if a.cpu != b.cpu {
			if a.cpu > b.cpu {
				return -1
			}
			return 1
		}
		return int(a.pid - b.pid)
	})
	for _, p := range byCPU[:min(c.topN, len(byCPU))] {
		if p.haveCPU {
			out = add(out, "process.cpu_percent", "%", n, p.cpu, "pid", strconv.Itoa(int(p.pid)), "comm", p.comm)
		}
	}
	slices.SortFunc(byCPU, func(a, b procInfo) int {
		if a.rss != b.rss {
			if a.rss > b.rss {
				return -1
			}
			return 1
		}
		return int(a.pid - b.pid)
	})
	for _, p := range byCPU[:min(c.topN, len(byCPU))] {
		if p.rss > 0 {
			out = add(out, "process.rss_bytes", "bytes", n, float64(p.rss), "pid", strconv.Itoa(int(p.pid)), "comm", p.comm)
		}
	}
	return out
}
