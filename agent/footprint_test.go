package agent

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// BenchmarkAgentFootprint runs the real agent binary (go build of
// ./agent/cmd) with its default collectors against an in-process broker
// that acknowledges everything, at a 5 s and a 1 s interval, and reports
// what one collection round costs the whole process — collecting, the ring,
// the spool's write and fsync, the gRPC send, the ack — from the agent's
// own agent.cpu_seconds_total and agent.rss_bytes (getrusage and
// /proc/self/statm, read inside the process), plus the peak RSS (VmHWM).
//
// Each sub-benchmark runs max(b.N, 4) rounds after the first: use
// -benchtime 6x for a steady figure (about 35 s at 5 s).
//
//	cpu-ms/round  CPU time per collection round
//	cpu-%         the same as a share of one core at that interval
//	rss-MiB       resident memory after the last round
//	peak-rss-MiB  the most resident memory the process ever had
func BenchmarkAgentFootprint(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "agent")
	build := exec.Command("go", "build", "-o", bin, "./cmd")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	for _, interval := range []time.Duration{5 * time.Second, time.Second} {
		b.Run("interval="+interval.String(), func(b *testing.B) {
			rounds := max(b.N, 4)
			fb := startBroker(b, "127.0.0.1:0")
			cmd := exec.Command(bin, "-config", "../configs/agent.yaml", "-broker", fb.addr, "-host-id", "footprint",
				"-interval", interval.String(), "-data", b.TempDir(), "-log-level", "warn")
			var logs bytes.Buffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				if b.Failed() {
					b.Logf("agent output:\n%s", logs.String())
				}
			}()
			stored := func() int {
				var n int
				fb.with(func(f *fakeBroker) { n = len(f.stored) })
				return n
			}
			waitStored := func(n int) {
				deadline := time.Now().Add(interval*time.Duration(rounds+3) + 30*time.Second)
				for stored() < n {
					if time.Now().After(deadline) {
						b.Fatalf("%d snapshots stored, want %d", stored(), n)
					}
					<-time.After(50 * time.Millisecond)
				}
			}
			b.ResetTimer()
			waitStored(1)
			waitStored(1 + rounds)
			b.StopTimer()
			var first, last *monitorpb.Snapshot
			fb.with(func(f *fakeBroker) { first, last = f.stored[0], f.stored[rounds] })
			cpu0, _ := metricValue(first, "agent.cpu_seconds_total", "", "")
			cpu1, _ := metricValue(last, "agent.cpu_seconds_total", "", "")
			rss, _ := metricValue(last, "agent.rss_bytes", "", "")
			perRound := (cpu1 - cpu0) / float64(rounds)
			b.ReportMetric(perRound*1000, "cpu-ms/round")
			b.ReportMetric(100*perRound/interval.Seconds(), "cpu-%")
			b.ReportMetric(rss/(1<<20), "rss-MiB")
			b.ReportMetric(peakRSS(b, cmd.Process.Pid)/(1<<20), "peak-rss-MiB")
			b.ReportMetric(float64(len(last.GetMetrics())), "metrics/snapshot")
		})
	}
}

// peakRSS reads VmHWM of a process, bytes.
func peakRSS(b *testing.B, pid int) float64 {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb * 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

// BenchmarkAgentRound runs whole rounds in process — the default
// collectors, self metrics, the ring, the spool on disk (fsync), the send
// and the ack from an in-process broker — and reports CPU per round
// (getrusage, every goroutine). Profile it with -cpuprofile.
func BenchmarkAgentRound(b *testing.B) {
	fb := startBroker(b, "127.0.0.1:0")
	cfg := testConfig(fb.addr)
	cfg.DataDir = b.TempDir()
	cfg.CollectorTimeout = config.Duration(2 * time.Second)
	h := start(b, cfg)
	h.base = time.Now().Unix() - 1_000_000
	h.a.log = slog.New(slog.DiscardHandler)
	h.tick()
	waitFor(b, "the first ack", func() bool { return h.a.Stats().Acked == 1 })
	b.ReportAllocs()
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for i := range b.N {
		h.tick()
		waitFor(b, "the ack", func() bool { return h.a.Stats().Acked == uint64(i+2) })
	}
	b.StopTimer()
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/round")
}
