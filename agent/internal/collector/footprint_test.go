package collector

import (
	"context"
	"log/slog"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user + system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCollect measures one collection round of each collector on this
// host, and of all of them under the Runner (what the agent does every
// interval): wall time per round, CPU time per round (getrusage: every
// thread, the filesystem collector's statfs goroutines included), and
// allocations.
func BenchmarkCollect(b *testing.B) {
	for _, c := range allCollectors() {
		b.Run(c.Name(), func(b *testing.B) {
			ctx := context.Background()
			if _, err := c.Collect(ctx); err != nil { // the first reading of rates
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				if _, err := c.Collect(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
	b.Run("defaults", func(b *testing.B) {
		var cs []Collector
		for _, c := range allCollectors() {
			if c.Name() != "tcp_states" { // off by default
				cs = append(cs, c)
			}
		}
		r := NewRunner(cs, 2*time.Second, slog.New(slog.DiscardHandler), nil)
		ctx := context.Background()
		r.Collect(ctx)
		b.ReportAllocs()
		cpu0 := cpuTime(b)
		n := 0
		for b.Loop() {
			n = len(r.Collect(ctx))
		}
		b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		b.ReportMetric(float64(n), "metrics/op")
	})
}
