// Package faults is the fault-injection suite (make test-faults): brokers
// SIGKILLed under agent streams, broker↔Redis links with latency and
// resets, a cardinality bomb, each against real broker processes or
// in-process brokers, real redis-server processes and real gRPC. Every
// scenario logs its figures as "FIGURE name=value unit" lines (collected
// into docs/reliability.md) and asserts only correctness: nothing
// acknowledged is lost, nothing is stored twice. Never timing.
//
// MONITOR_FAULTS_LONG=1 runs the long versions (300 agent streams, longer
// faults) for make bench; the default is the short CI version.
package faults

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "monitor-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "broker"), "./broker/cmd")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build broker: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// noLeaks checks, after every other cleanup of t, that no goroutine of the
// test is left.
func noLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// long reports whether the long versions were asked for.
func long() bool { return os.Getenv("MONITOR_FAULTS_LONG") == "1" }

// figure logs one collected figure.
func figure(t *testing.T, name string, value any, unit string) {
	t.Helper()
	t.Logf("FIGURE %s=%v %s", name, value, unit)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met within %s: %v", timeout, err)
}

// proc is a started binary whose output is kept for the test log.
type proc struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder
	exited chan struct{}
	err    error
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(filepath.Join(binDir, "broker"), args...), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s output:\n%s", name, p.out.String())
			p.mu.Unlock()
		}
	})
	return p
}

// kill SIGKILLs the process (if it still runs) and waits for it.
func (p *proc) kill() {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// quantile of ds (sorted in place); 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// ackLog records what the simulated agents saw, per host.
type ackLog struct {
	mu    sync.Mutex
	acked map[string][]int64 // host → acknowledged timestamps, in ack order
	last  map[string]time.Time
	first map[string]time.Time // host → first ack after mark
	mark  time.Time
}

func newAckLog() *ackLog {
	return &ackLog{acked: map[string][]int64{}, last: map[string]time.Time{}, first: map[string]time.Time{}}
}

func (l *ackLog) onAck(host string, ts []int64) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[host] = append(l.acked[host], ts...)
	l.last[host] = now
	if !l.mark.IsZero() && l.first[host].IsZero() {
		l.first[host] = now
	}
}

// setMark starts timing every host's first ack after now.
func (l *ackLog) setMark() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mark = time.Now()
	l.first = map[string]time.Time{}
	return l.mark
}

// counts returns the number of acknowledged snapshots per host.
func (l *ackLog) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.acked))
	for h, ts := range l.acked {
		out[h] = len(ts)
	}
	return out
}

// behind returns the first host of hosts with fewer than n more acks than
// in before ("" when all have them).
func behind(now, before map[string]int, hosts []string, n int) string {
	for _, h := range hosts {
		if now[h]-before[h] < n {
			return h
		}
	}
	return ""
}

// distinct returns the host's distinct acknowledged timestamps and how many
// acks repeated one (a resend acknowledged twice).
func (l *ackLog) distinct(host string) (map[int64]bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	set := map[int64]bool{}
	rep := 0
	for _, ts := range l.acked[host] {
		if set[ts] {
			rep++
		}
		set[ts] = true
	}
	return set, rep
}

var errNoFlowControl = errorString("no flow control yet")

type errorString string

func (e errorString) Error() string { return string(e) }
