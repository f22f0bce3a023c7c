package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/pkg/loadgen"
)

// growthPoint is one level of the growth run.
type growthPoint struct {
	Hosts         int     `json:"hosts"`
	IntervalS     float64 `json:"interval_s"`
	OfferedPerS   float64 `json:"offered_snapshots_per_s"`
	AchievedPerS  float64 `json:"achieved_snapshots_per_s"` // acknowledged, steady window
	BrokerCPUUS   float64 `json:"broker_cpu_us_per_snapshot"`
	BrokerCPUPct  float64 `json:"broker_cpu_percent"` // of one CPU, steady window
	BrokerRSSMB   float64 `json:"broker_rss_mb"`      // peak during the run
	RedisMB       float64 `json:"redis_used_memory_mb"`
	LoadgenRSSMB  float64 `json:"loadgen_rss_mb"`
	Acked         uint64  `json:"acked"`
	Lost          uint64  `json:"lost"`
	FlowControls  uint64  `json:"flow_control"`
	AckP99MS      float64 `json:"ack_p99_ms"`
	WindowS       float64 `json:"window_s"`
	Command       string  `json:"command"`
	ThroughputCap bool    `json:"saturated"` // achieved < 95 % of offered
}

type growthLevel struct {
	hosts    int
	interval time.Duration
	dur      time.Duration
	drain    time.Duration
}

// growth runs 1k → 10k → 50k simulated hosts at a 5 s interval through
// one broker onto one Redis (rollups on, the default) and records, over
// the steady part of each run, the broker's CPU per acknowledged
// snapshot, its peak RSS and Redis' used_memory. The load generator runs
// in this process (so its counters can be read during the run); the
// broker is its own process, read from /proc.
func (h *harness) growth(ctx context.Context) error {
	levels := []growthLevel{
		{1000, 5 * time.Second, 15 * time.Second, 30 * time.Second},
		{10000, 5 * time.Second, 15 * time.Second, 60 * time.Second},
		{50000, 5 * time.Second, 20 * time.Second, 90 * time.Second},
	}
	if h.res.Mode == "quick" {
		levels = []growthLevel{{300, time.Second, 3 * time.Second, 10 * time.Second}}
	}
	rdb := redis.NewClient(&redis.Options{Addr: h.redis.Addr, Protocol: 2})
	defer rdb.Close()
	for _, lv := range levels {
		pt, err := h.growthRun(ctx, rdb, lv)
		if err != nil {
			return err
		}
		h.res.Growth = append(h.res.Growth, pt)
		label := fmt.Sprintf("%d hosts at %s", lv.hosts, lv.interval)
		note := fmt.Sprintf("offered %.0f snapshots/s, achieved %.0f/s (steady %.0f s window), %d acknowledged, %d lost, %d flow-control answers, ack p99 %.0f ms",
			pt.OfferedPerS, pt.AchievedPerS, pt.WindowS, pt.Acked, pt.Lost, pt.FlowControls, pt.AckP99MS)
		h.add(figure{Name: "growth broker cpu/snapshot, " + label, Unit: "µs", Value: pt.BrokerCPUUS, Command: pt.Command, Note: note})
		h.add(figure{Name: "growth achieved rate, " + label, Unit: "snapshots/s", Value: pt.AchievedPerS, Command: pt.Command, Note: note})
		h.add(figure{Name: "growth broker rss, " + label, Unit: "MB", Value: pt.BrokerRSSMB, Command: pt.Command, Note: note})
		h.add(figure{Name: "growth redis used_memory, " + label, Unit: "MB", Value: pt.RedisMB, Command: pt.Command, Note: note})
	}
	return nil
}

type growthSample struct {
	at    time.Time
	acked uint64
	cpu   float64
	rss   float64
}

func (h *harness) growthRun(ctx context.Context, rdb *redis.Client, lv growthLevel) (growthPoint, error) {
	if err := h.flush(ctx, rdb); err != nil {
		return growthPoint{}, err
	}
	b, err := h.startBroker(ctx, "redis://"+h.redis.Addr, "")
	if err != nil {
		return growthPoint{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			b.kill()
		}
	}()
	g, err := loadgen.New(loadgen.Config{Brokers: []string{b.addr}, Hosts: lv.hosts, Interval: lv.interval, Duration: lv.dur,
		Metrics: h.p.Metrics, Drain: lv.drain, Prefix: fmt.Sprintf("g%d", lv.hosts)}, nil)
	if err != nil {
		return growthPoint{}, err
	}
	pid := b.cmd.Process.Pid
	var mu sync.Mutex
	var samples []growthSample
	var peakRSS float64
	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			cpu, err1 := procCPU(pid)
			rss, _, err2 := procMem(pid)
			if err1 != nil || err2 != nil {
				continue
			}
			s := growthSample{at: time.Now(), acked: g.Stats().Acked, cpu: cpu, rss: rss}
			mu.Lock()
			samples = append(samples, s)
			peakRSS = max(peakRSS, rss)
			mu.Unlock()
		}
	})
	res, err := g.Run(ctx)
	stopSampling()
	wg.Wait()
	if err != nil {
		return growthPoint{}, err
	}
	used, err := usedMemory(ctx, rdb)
	if err != nil {
		return growthPoint{}, err
	}
	stopped = true
	if err := b.stop(); err != nil {
		return growthPoint{}, err
	}
	if res.Lost > 0 || res.Errors > 0 || res.Rejected > 0 || res.Acked == 0 {
		h.fail("growth %d hosts: %s", lv.hosts, res)
	}
	h.res.Loadgen[fmt.Sprintf("growth %d hosts", lv.hosts)] = append(h.res.Loadgen[fmt.Sprintf("growth %d hosts", lv.hosts)], res)

	// The steady window: from one interval after the first ack (every
	// host has sent once) to the end of generation.
	var first time.Time
	for _, s := range samples {
		if s.acked > 0 {
			first = s.at
			break
		}
	}
	lo, hi := -1, -1
	for i, s := range samples {
		if first.IsZero() {
			break
		}
		if lo < 0 && !s.at.Before(first.Add(lv.interval)) {
			lo = i
		}
		if !s.at.After(first.Add(lv.dur)) {
			hi = i
		}
	}
	if lo < 0 || hi <= lo {
		lo, hi = 0, len(samples)-1
	}
	pt := growthPoint{Hosts: lv.hosts, IntervalS: lv.interval.Seconds(), OfferedPerS: float64(lv.hosts) / lv.interval.Seconds(),
		BrokerRSSMB: peakRSS / 1e6, RedisMB: float64(used) / 1e6, LoadgenRSSMB: res.PeakRSSMB,
		Acked: res.Acked, Lost: res.Lost, FlowControls: res.FlowControls, AckP99MS: res.AckP99MS,
		Command: fmt.Sprintf("%s; pkg/loadgen in go run ./bench (= bin/loadgen -broker ADDR -hosts %d -interval %s -duration %s); broker /proc/PID/stat and status every 500 ms, Redis INFO used_memory after the run",
			b.args, lv.hosts, lv.interval, lv.dur)}
	if hi > lo && lo >= 0 {
		a, z := samples[lo], samples[hi]
		el := z.at.Sub(a.at).Seconds()
		pt.WindowS = el
		if n := z.acked - a.acked; n > 0 && el > 0 {
			pt.AchievedPerS = float64(n) / el
			pt.BrokerCPUUS = (z.cpu - a.cpu) * 1e6 / float64(n)
			pt.BrokerCPUPct = (z.cpu - a.cpu) / el * 100
		}
	}
	pt.ThroughputCap = pt.AchievedPerS < 0.95*pt.OfferedPerS
	return pt, nil
}
