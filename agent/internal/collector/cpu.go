package collector

import (
	"context"
	"fmt"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/load"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// CPU reports CPU time shares (total and per logical CPU) and load averages.
type CPU struct {
	prevTotal *cpu.TimesStat
	prevCores map[string]cpu.TimesStat
}

// NewCPU returns the cpu collector.
func NewCPU() *CPU { return &CPU{} }

// Name implements Collector.
func (*CPU) Name() string { return "cpu" }

// Collect implements Collector.
func (c *CPU) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	var out []*monitorpb.Metric
	total, err := cpu.TimesWithContext(ctx, false)
	if err != nil || len(total) == 0 {
		return nil, fmt.Errorf("read cpu times: %w", errOrEmpty(err))
	}
	cores, err := cpu.TimesWithContext(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("read per-cpu times: %w", err)
	}

	if c.prevTotal != nil {
		out = cpuShares(out, *c.prevTotal, total[0])
	}
	t := total[0]
	c.prevTotal = &t

	next := make(map[string]cpu.TimesStat, len(cores))
	for _, cur := range cores {
		next[cur.CPU] = cur
		if prev, ok := c.prevCores[cur.CPU]; ok {
			if d := diffTimes(prev, cur); d.all > 0 {
				out = add(out, "cpu.core_usage_percent", "%", monitorpb.Priority_PRIORITY_NORMAL,
					percent(d.all-d.idle-d.iowait, d.all), "cpu", cur.CPU)
			}
		}
	}
	c.prevCores = next

	avg, err := load.AvgWithContext(ctx)
	if err != nil {
		return out, fmt.Errorf("read load average: %w", err)
	}
	out = add(out, "load.1", "", monitorpb.Priority_PRIORITY_HIGH, avg.Load1)
	out = add(out, "load.5", "", monitorpb.Priority_PRIORITY_NORMAL, avg.Load5)
	out = add(out, "load.15", "", monitorpb.Priority_PRIORITY_NORMAL, avg.Load15)
	return out, nil
}

// timeDiff holds the seconds each kind of CPU time grew between readings.
// A kind that went backwards (iowait can, on Linux) counts as 0.
type timeDiff struct {
	user, system, idle, iowait, steal, all float64
}

func diffTimes(a, b cpu.TimesStat) timeDiff {
	pos := func(x float64) float64 { return max(x, 0) }
	d := timeDiff{
		user:   pos(b.User-a.User) + pos(b.Nice-a.Nice),
		system: pos(b.System-a.System) + pos(b.Irq-a.Irq) + pos(b.Softirq-a.Softirq),
		idle:   pos(b.Idle - a.Idle),
		iowait: pos(b.Iowait - a.Iowait),
		steal:  pos(b.Steal - a.Steal),
	}
	// Guest time is already part of user time on Linux.
	d.all = d.user + d.system + d.idle + d.iowait + d.steal
	return d
}

func cpuShares(out []*monitorpb.Metric, prev, cur cpu.TimesStat) []*monitorpb.Metric {
	d := diffTimes(prev, cur)
	if d.all <= 0 {
		return out
	}
	n := monitorpb.Priority_PRIORITY_NORMAL
	out = add(out, "cpu.usage_percent", "%", monitorpb.Priority_PRIORITY_HIGH, percent(d.all-d.idle-d.iowait, d.all))
	out = add(out, "cpu.user_percent", "%", n, percent(d.user, d.all))
	out = add(out, "cpu.system_percent", "%", n, percent(d.system, d.all))
	out = add(out, "cpu.iowait_percent", "%", n, percent(d.iowait, d.all))
	out = add(out, "cpu.steal_percent", "%", n, percent(d.steal, d.all))
	out = add(out, "cpu.idle_percent", "%", n, percent(d.idle, d.all))
	return out
}

func errOrEmpty(err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("no data")
}
