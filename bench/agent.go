package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procCPU is a process's CPU time (user+sys) in seconds from
// /proc/PID/stat (clock ticks, 10 ms resolution).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" of comm: state is field 3; utime 14, stime 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

// procRunNS is the CPU time of every thread of a process in nanoseconds,
// from /proc/PID/task/*/schedstat (exact; threads that exited are not
// counted, and the Go runtime keeps its threads).
func procRunNS(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no threads of %d: %v", pid, err)
	}
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += ns
		}
	}
	return total, nil
}

// procMem returns VmRSS and VmHWM (peak) of a process in bytes.
func procMem(pid int) (rss, hwm float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmRSS":
			rss = kb * 1024
		case "VmHWM":
			hwm = kb * 1024
		}
	}
	return rss, hwm, nil
}

// agentFootprint runs the real bin/agent (every collector of the default
// configuration) at 5 s and at 1 s against a broker on the embedded store
// and reads its RSS and CPU from /proc: CPU per collection is the CPU of
// the whole process (collection, encoding, delivery, its own metrics)
// over a window after the warm-up, divided by the collections in it.
func (h *harness) agentFootprint(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(h.bin, "agent")); err != nil {
		return fmt.Errorf("%s/agent is missing; run make build first: %w", h.bin, err)
	}
	window, warmup := 30*time.Second, 5*time.Second
	if h.res.Mode == "quick" {
		window, warmup = 3*time.Second, 2*time.Second
	}
	b, err := h.startBroker(ctx, "embedded", "")
	if err != nil {
		return err
	}
	defer func() {
		if err := b.stop(); err != nil {
			h.fail("agent footprint: %v", err)
		}
	}()
	type agentRun struct {
		interval time.Duration
		cmd      *exec.Cmd
		done     chan error
		log      string
	}
	var runs []*agentRun
	for _, iv := range []time.Duration{5 * time.Second, time.Second} {
		dir := filepath.Join(h.tmp, "agent-"+iv.String())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		logPath := filepath.Join(dir, "agent.log")
		logf, err := os.Create(logPath)
		if err != nil {
			return err
		}
		r := &agentRun{interval: iv, done: make(chan error, 1), log: logPath,
			cmd: exec.Command(filepath.Join(h.bin, "agent"), "-broker", b.addr, "-host-id", "bench-agent-"+iv.String(), "-interval", iv.String(), "-data", dir, "-http", "")}
		r.cmd.Stdout, r.cmd.Stderr = logf, logf
		if err := r.cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start agent: %w", err)
		}
		go func() { r.done <- r.cmd.Wait(); logf.Close() }()
		runs = append(runs, r)
	}
	defer func() {
		for _, r := range runs {
			_ = r.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-r.done:
			case <-time.After(15 * time.Second):
				_ = r.cmd.Process.Kill()
				<-r.done
			}
		}
	}()
	// Warm-up: the first rounds start the counters' rates and the stream.
	time.Sleep(warmup)
	cpu0 := make([]int64, len(runs))
	for i, r := range runs {
		if cpu0[i], err = procRunNS(r.cmd.Process.Pid); err != nil {
			return fmt.Errorf("agent %s: %w; log:\n%s", r.interval, err, tail(r.log))
		}
	}
	start := time.Now()
	time.Sleep(window)
	el := time.Since(start)
	for i, r := range runs {
		pid := r.cmd.Process.Pid
		cpu1, err := procRunNS(pid)
		if err != nil {
			return fmt.Errorf("agent %s exited: %w; log:\n%s", r.interval, err, tail(r.log))
		}
		rss, hwm, err := procMem(pid)
		if err != nil {
			return err
		}
		rounds := el.Seconds() / r.interval.Seconds()
		cmd := fmt.Sprintf("bin/agent -broker ADDR -interval %s -data DIR -http \"\" (default collectors) → %s; /proc/PID/task/*/schedstat and /proc/PID/status over %s after a %s warm-up", r.interval, b.args, window, warmup)
		label := "at " + r.interval.String()
		h.add(figure{Name: "agent cpu per collection " + label, Unit: "ms", Value: float64(cpu1-cpu0[i]) / 1e6 / rounds, Command: cmd,
			Note: fmt.Sprintf("whole process (collect, encode, deliver, self-metrics); %.1f rounds; %.2f%% of one CPU", rounds, float64(cpu1-cpu0[i])/1e9/el.Seconds()*100)})
		h.add(figure{Name: "agent rss " + label, Unit: "MiB", Value: rss / (1 << 20), Command: cmd, Note: fmt.Sprintf("VmRSS at the end; peak (VmHWM) %.1f MiB", hwm/(1<<20))})
	}
	return nil
}
