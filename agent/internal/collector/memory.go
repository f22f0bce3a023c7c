package collector

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Memory reports physical memory and swap from /proc/meminfo, and swap
// traffic from /proc/vmstat.
type Memory struct {
	paths Paths
	now   func() time.Time
	fr    fileReader
	rates *counterRates[string]
}

// NewMemory returns the memory collector; rates span window.
func NewMemory(paths Paths, window time.Duration) *Memory {
	return &Memory{paths: paths, now: time.Now, rates: newCounterRates[string](window)}
}

// Name implements Collector.
func (*Memory) Name() string { return "memory" }

// meminfo holds the /proc/meminfo fields used, in bytes.
type meminfo struct {
	total, free, available, buffers, cached, swapTotal, swapFree uint64
	hasAvailable                                                 bool
}

func parseMeminfo(b []byte) (m meminfo, err error) {
	seen := 0
	lines(b, func(line []byte) bool {
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			return true
		}
		var dst *uint64
		switch string(line[:i]) { // no allocation: the compiler special-cases this
		case "MemTotal":
			dst = &m.total
		case "MemFree":
			dst = &m.free
		case "MemAvailable":
			dst, m.hasAvailable = &m.available, true
		case "Buffers":
			dst = &m.buffers
		case "Cached":
			dst = &m.cached
		case "SwapTotal":
			dst = &m.swapTotal
		case "SwapFree":
			dst = &m.swapFree
		default:
			return true
		}
		v, ok := atou(field(line[i+1:], 0))
		if !ok {
			err = fmt.Errorf("/proc/meminfo: cannot parse %q", line)
			return false
		}
		if bytes.HasSuffix(line, []byte(" kB")) {
			v *= 1024
		}
		*dst = v
		seen++
		return true
	})
	if err == nil && m.total == 0 {
		err = fmt.Errorf("/proc/meminfo has no MemTotal (%d fields read)", seen)
	}
	if !m.hasAvailable {
		// Kernels before 3.14: the estimate free(1) used then.
		m.available = m.free + m.buffers + m.cached
	}
	return m, err
}

// Collect implements Collector. Used memory is total − available, as
// free(1) computes it: page cache the kernel can reclaim is not "used".
func (c *Memory) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	b, err := c.fr.read(c.paths.proc("meminfo"))
	if err != nil {
		return nil, fmt.Errorf("read memory: %w", err)
	}
	m, err := parseMeminfo(b)
	if err != nil {
		return nil, err
	}
	var out []*monitorpb.Metric
	used := m.total - min(m.available, m.total)
	h, n := monitorpb.Priority_PRIORITY_HIGH, monitorpb.Priority_PRIORITY_NORMAL
	out = add(out, "mem.total_bytes", "bytes", n, float64(m.total))
	out = add(out, "mem.used_bytes", "bytes", h, float64(used))
	out = add(out, "mem.available_bytes", "bytes", h, float64(m.available))
	out = add(out, "mem.used_percent", "%", h, round(percent(float64(used), float64(m.total)), gaugePercentDecimals))
	out = add(out, "mem.free_bytes", "bytes", n, float64(m.free))
	out = add(out, "mem.cached_bytes", "bytes", n, float64(m.cached))
	out = add(out, "mem.buffers_bytes", "bytes", n, float64(m.buffers))

	swapUsed := m.swapTotal - min(m.swapFree, m.swapTotal)
	out = add(out, "swap.total_bytes", "bytes", n, float64(m.swapTotal))
	out = add(out, "swap.used_bytes", "bytes", n, float64(swapUsed))
	out = add(out, "swap.free_bytes", "bytes", n, float64(m.swapFree))
	swapPct := 0.0
	if m.swapTotal > 0 {
		swapPct = round(percent(float64(swapUsed), float64(m.swapTotal)), gaugePercentDecimals)
	}
	out = add(out, "swap.used_percent", "%", n, swapPct)

	vm, err := c.fr.read(c.paths.proc("vmstat"))
	if err != nil {
		return out, fmt.Errorf("read swap traffic: %w", err)
	}
	page := uint64(os.Getpagesize())
	c.rates.Begin(c.now())
	lines(vm, func(line []byte) bool {
		name := field(line, 0)
		var metric string
		switch string(name) {
		case "pswpin":
			metric = "swap.in_bytes_per_sec"
		case "pswpout":
			metric = "swap.out_bytes_per_sec"
		default:
			return true
		}
		if v, ok := atou(field(line, 1)); ok {
			if r, ok := c.rates.Rate(metric, v*page, float64(page)); ok {
				out = add(out, metric, "bytes/s", n, r)
			}
		}
		return true
	})
	c.rates.Commit()
	return out, nil
}
