package collector

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// CPU reports CPU time shares (all CPUs and each logical CPU), context
// switches and interrupts per second, and load averages, from one read of
// /proc/stat and one of /proc/loadavg.
type CPU struct {
	paths Paths
	now   func() time.Time
	fr    fileReader
	rates *counterRates[cpuKey]
	names []string // "cpu0", "cpu1", … by index, built once
	f     [][]byte
}

// cpuKey names one counter: a time kind of one CPU (cpu −1: all), or a
// system counter (cpu −2).
type cpuKey struct {
	cpu  int32
	kind uint8
}

// Kinds of CPU time, as the shares report them (see cpuTimes).
const (
	kUser = iota
	kSystem
	kIdle
	kIOWait
	kSteal
	nKinds
)

// System counters of /proc/stat, under cpu −2.
const (
	kCtxt = iota
	kIntr
)

// NewCPU returns the cpu collector; rates span window (0: one interval).
func NewCPU(paths Paths, window time.Duration) *CPU {
	return &CPU{paths: paths, now: time.Now, rates: newCounterRates[cpuKey](window)}
}

// Name implements Collector.
func (*CPU) Name() string { return "cpu" }

// cpuTimes reads a "cpu" or "cpuN" line of /proc/stat (user nice system
// idle iowait irq softirq steal guest guest_nice, in ticks) into the kinds
// reported: user includes nice (and guest, which the kernel already counts
// in user), system includes irq and softirq.
func cpuTimes(f [][]byte) (t [nKinds]uint64, ok bool) {
	if len(f) < 5 {
		return t, false
	}
	var v [8]uint64
	for i := 0; i < 8 && i+1 < len(f); i++ {
		x, ok := atou(f[i+1])
		if !ok {
			return t, false
		}
		v[i] = x
	}
	t[kUser] = v[0] + v[1]
	t[kSystem] = v[2] + v[5] + v[6]
	t[kIdle] = v[3]
	t[kIOWait] = v[4]
	t[kSteal] = v[7]
	return t, true
}

// Collect implements Collector.
func (c *CPU) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	b, err := c.fr.read(c.paths.proc("stat"))
	if err != nil {
		return nil, fmt.Errorf("read cpu times: %w", err)
	}
	var out []*monitorpb.Metric
	c.rates.Begin(c.now())
	var parseErr error
	lines(b, func(line []byte) bool {
		switch {
		case bytes.HasPrefix(line, []byte("cpu")):
			c.f = fieldsInto(c.f, line)
			t, ok := cpuTimes(c.f)
			if !ok {
				parseErr = fmt.Errorf("/proc/stat: cannot parse %q", line)
				return false
			}
			if len(c.f[0]) == 3 {
				out = c.shares(out, -1, t)
				return true
			}
			n, err := strconv.Atoi(string(c.f[0][3:]))
			if err != nil || n < 0 {
				parseErr = fmt.Errorf("/proc/stat: cannot parse %q", line)
				return false
			}
			out = c.shares(out, int32(n), t)
		case bytes.HasPrefix(line, []byte("ctxt ")):
			if v, ok := atou(field(line, 1)); ok {
				if r, ok := c.rates.Rate(cpuKey{-2, kCtxt}, v, 1); ok {
					out = add(out, "cpu.context_switches_per_sec", "1/s", monitorpb.Priority_PRIORITY_NORMAL, r)
				}
			}
		case bytes.HasPrefix(line, []byte("intr ")):
			if v, ok := atou(field(line, 1)); ok {
				if r, ok := c.rates.Rate(cpuKey{-2, kIntr}, v, 1); ok {
					out = add(out, "cpu.interrupts_per_sec", "1/s", monitorpb.Priority_PRIORITY_NORMAL, r)
				}
			}
		}
		return true
	})
	if parseErr != nil {
		return nil, parseErr
	}
	c.rates.Commit()

	la, err := c.fr.read(c.paths.proc("loadavg"))
	if err != nil {
		return out, fmt.Errorf("read load average: %w", err)
	}
	h, n := monitorpb.Priority_PRIORITY_HIGH, monitorpb.Priority_PRIORITY_NORMAL
	for i, m := range []struct {
		name string
		prio monitorpb.Priority
	}{{"load.1", h}, {"load.5", n}, {"load.15", n}} {
		v, ok := atof(field(la, i))
		if !ok {
			return out, fmt.Errorf("/proc/loadavg: cannot parse %q", la)
		}
		out = add(out, m.name, "", m.prio, v)
	}
	return out, nil
}

// shares observes one CPU's times and appends its shares when there is a
// previous reading. cpu −1 is the total.
func (c *CPU) shares(out []*monitorpb.Metric, cpu int32, t [nKinds]uint64) []*monitorpb.Metric {
	var r [nKinds]float64
	have := false
	for k := range nKinds {
		// A kind that went backwards (iowait can, on Linux) counts as 0.
		v, ok := c.rates.Observe(cpuKey{cpu, uint8(k)}, t[k])
		r[k] = v
		have = have || ok
	}
	all := r[kUser] + r[kSystem] + r[kIdle] + r[kIOWait] + r[kSteal]
	if !have || all <= 0 {
		return out
	}
	// One jiffy of the all·span jiffies the shares divide is their quantum.
	d := decimals(100 / (all * c.rates.span().Seconds()))
	share := func(part float64) float64 { return round(percent(part, all), d) }
	busy := share(all - r[kIdle] - r[kIOWait])
	n, low := monitorpb.Priority_PRIORITY_NORMAL, monitorpb.Priority_PRIORITY_LOW
	if cpu < 0 {
		out = add(out, "cpu.usage_percent", "%", monitorpb.Priority_PRIORITY_HIGH, busy)
		out = add(out, "cpu.user_percent", "%", n, share(r[kUser]))
		out = add(out, "cpu.system_percent", "%", n, share(r[kSystem]))
		out = add(out, "cpu.iowait_percent", "%", n, share(r[kIOWait]))
		out = add(out, "cpu.steal_percent", "%", n, share(r[kSteal]))
		out = add(out, "cpu.idle_percent", "%", n, share(r[kIdle]))
		return out
	}
	for int(cpu) >= len(c.names) {
		c.names = append(c.names, "cpu"+strconv.Itoa(len(c.names)))
	}
	name := c.names[cpu]
	out = add(out, "cpu.core_usage_percent", "%", n, busy, "cpu", name)
	out = add(out, "cpu.core_user_percent", "%", low, share(r[kUser]), "cpu", name)
	out = add(out, "cpu.core_system_percent", "%", low, share(r[kSystem]), "cpu", name)
	out = add(out, "cpu.core_iowait_percent", "%", low, share(r[kIOWait]), "cpu", name)
	out = add(out, "cpu.core_steal_percent", "%", low, share(r[kSteal]), "cpu", name)
	out = add(out, "cpu.core_idle_percent", "%", low, share(r[kIdle]), "cpu", name)
	return out
}
