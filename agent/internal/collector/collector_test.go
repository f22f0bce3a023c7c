package collector

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// docEntry is one row of docs/metrics.md.
type docEntry struct{ unit, priority string }

// readCatalogue parses docs/metrics.md's table: | `name` | labels | unit | priority | ...
func readCatalogue(t *testing.T) map[string]docEntry {
	t.Helper()
	f, err := os.Open("../../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]docEntry{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 6 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		unit := strings.Trim(strings.TrimSpace(cells[3]), "`")
		if unit == "—" {
			unit = ""
		}
		out[name] = docEntry{unit: unit, priority: strings.TrimSpace(cells[4])}
	}
	if len(out) < 30 {
		t.Fatalf("docs/metrics.md: parsed only %d metrics", len(out))
	}
	return out
}

func TestCatalogueOnThisHost(t *testing.T) {
	r := NewRunner([]Collector{NewCPU(), NewMemory(), NewDisk(), NewNetwork()}, 5*time.Second, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	// Rates need a second reading with time and CPU ticks in between: poll
	// until they show up.
	need := []string{"cpu.usage_percent", "cpu.core_usage_percent", "disk.read_bytes_per_sec", "net.rx_bytes_per_sec"}
	var ms []*monitorpb.Metric
	deadline := time.Now().Add(15 * time.Second)
	for {
		ms = r.Collect(ctx)
		if hasAll(ms, need) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rates after 15s; got %s", names(ms))
		}
		<-time.After(100 * time.Millisecond)
	}
	for name, st := range r.Stats() {
		if st != (Stats{}) {
			t.Errorf("collector %s: %+v", name, st)
		}
	}

	present := map[string]bool{}
	doc := readCatalogue(t)
	units := map[string]bool{"%": true, "bytes": true, "bytes/s": true, "ops/s": true, "packets/s": true, "": true}
	seen := map[string]bool{}
	for _, m := range ms {
		present[m.Name] = true
		key, err := storage.SeriesKey(m.Name, m.Labels)
		if err != nil {
			t.Errorf("metric %s %v: %v", m.Name, m.Labels, err)
			continue
		}
		if seen[key] {
			t.Errorf("series %s emitted twice", key)
		}
		seen[key] = true
		if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			t.Errorf("%s = %v", key, m.Value)
		}
		if m.Unit == "%" && (m.Value < 0 || m.Value > 100) {
			t.Errorf("%s = %v, want 0..100", key, m.Value)
		}
		if m.Value < 0 {
			t.Errorf("%s = %v is negative", key, m.Value)
		}
		if !units[m.Unit] {
			t.Errorf("%s has unit %q", key, m.Unit)
		}
		if m.Priority == monitorpb.Priority_PRIORITY_UNSPECIFIED {
			t.Errorf("%s has no priority", key)
		}
		d, ok := doc[m.Name]
		if !ok {
			t.Errorf("%s is not in docs/metrics.md", m.Name)
		} else if d.unit != m.Unit || "PRIORITY_"+d.priority != m.Priority.String() {
			t.Errorf("%s: unit %q priority %s, docs/metrics.md says %q %s", m.Name, m.Unit, m.Priority, d.unit, d.priority)
		}
		if m.Name == "net.rx_bytes_per_sec" && m.Labels["interface"] == "lo" {
			t.Errorf("loopback reported: %s", key)
		}
	}
	for _, fam := range []string{
		"cpu.usage_percent", "cpu.user_percent", "cpu.system_percent", "cpu.iowait_percent", "cpu.idle_percent",
		"cpu.core_usage_percent", "load.1", "load.5", "load.15",
		"mem.total_bytes", "mem.used_bytes", "mem.available_bytes", "mem.used_percent", "swap.used_bytes", "swap.used_percent",
		"disk.total_bytes", "disk.used_bytes", "disk.used_percent", "disk.read_bytes_per_sec", "disk.write_bytes_per_sec",
		"disk.reads_per_sec", "disk.writes_per_sec",
		"net.rx_bytes_per_sec", "net.tx_bytes_per_sec", "net.rx_packets_per_sec", "net.tx_packets_per_sec",
		"net.rx_errors_per_sec", "net.tx_errors_per_sec", "net.rx_drops_per_sec", "net.tx_drops_per_sec",
	} {
		if !present[fam] {
			t.Errorf("family %s missing on this host", fam)
		}
	}
	if !seen["disk.used_percent{mount=/}"] {
		t.Errorf("no usage for the root filesystem; got %s", names(ms))
	}
	cores := 0
	for k := range seen {
		if strings.HasPrefix(k, "cpu.core_usage_percent{cpu=cpu") {
			cores++
		}
	}
	if n, _ := cpu.Counts(true); cores != n {
		t.Errorf("%d per-core series, %d logical CPUs", cores, n)
	}
}

func hasAll(ms []*monitorpb.Metric, want []string) bool {
	have := map[string]bool{}
	for _, m := range ms {
		have[m.Name] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

func names(ms []*monitorpb.Metric) string {
	var b strings.Builder
	for _, m := range ms {
		k, _ := storage.SeriesKey(m.Name, m.Labels)
		b.WriteString(k + " ")
	}
	return b.String()
}

// fake is a Collector whose behaviour the test sets.
type fake struct {
	name    string
	calls   atomic.Int32
	err     error
	release chan struct{} // when set, Collect blocks on it, ignoring ctx
}

func (f *fake) Name() string { return f.name }

func (f *fake) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	f.calls.Add(1)
	if f.release != nil {
		<-f.release
	}
	if f.err != nil {
		return nil, f.err
	}
	return []*monitorpb.Metric{{Name: "test." + f.name, Value: 1, Unit: "", Priority: monitorpb.Priority_PRIORITY_NORMAL}}, nil
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func TestRunnerIsolatesHungAndFailingCollectors(t *testing.T) {
	fast := &fake{name: "fast"}
	failing := &fake{name: "failing", err: errors.New("boom")}
	hung := &fake{name: "hung", release: make(chan struct{})}
	var logs logBuf
	r := NewRunner([]Collector{hung, fast, failing}, 50*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
	released := false
	defer func() {
		if !released {
			close(hung.release)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if stuck, err := r.Wait(ctx); err != nil {
			t.Errorf("%d collector calls still running", stuck)
		}
	}()

	for round := 1; round <= 3; round++ {
		start := time.Now()
		ms := r.Collect(context.Background())
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("round %d took %s with a 50ms collector timeout", round, took)
		}
		if len(ms) != 1 || ms[0].Name != "test.fast" {
			t.Fatalf("round %d: got %s, want only test.fast", round, names(ms))
		}
	}
	if n := hung.calls.Load(); n != 1 {
		t.Fatalf("hung collector called %d times; a running call must not be started again", n)
	}
	st := r.Stats()
	if st["hung"] != (Stats{Timeouts: 1, Skips: 2}) {
		t.Errorf("hung stats %+v, want 1 timeout, 2 skips", st["hung"])
	}
	if st["failing"] != (Stats{Errors: 3}) {
		t.Errorf("failing stats %+v, want 3 errors", st["failing"])
	}
	if st["fast"] != (Stats{}) {
		t.Errorf("fast stats %+v", st["fast"])
	}
	// Logged once per state change, not every round.
	if n := logs.count("collector=failing"); n != 1 {
		t.Errorf("failing collector logged %d times in 3 rounds, want 1:\n%s", n, logs.b.String())
	}
	if n := logs.count("collector=hung"); n != 2 { // timeout, then skipped
		t.Errorf("hung collector logged %d times, want 2:\n%s", n, logs.b.String())
	}

	// Released, the hung collector runs again and recovers.
	close(hung.release)
	released = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	hung.release = nil // the next call returns at once (no call is running now)
	ms := r.Collect(context.Background())
	if len(ms) != 2 || ms[0].Name != "test.hung" || ms[1].Name != "test.fast" {
		t.Fatalf("after release: got %s, want test.hung test.fast in collector order", names(ms))
	}
	if logs.count("collector recovered") != 1 {
		t.Errorf("recovery not logged:\n%s", logs.b.String())
	}
}

func TestRunnerShutdownIsNotAFailure(t *testing.T) {
	c := &ctxCollector{}
	r := NewRunner([]Collector{c}, time.Second, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ms := r.Collect(ctx); len(ms) != 0 {
		t.Fatalf("got %d metrics from a cancelled round", len(ms))
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if _, err := r.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats()["ctx"]; st != (Stats{}) {
		t.Fatalf("a cancelled round counted as failure: %+v", st)
	}
}

// ctxCollector honours its context.
type ctxCollector struct{}

func (ctxCollector) Name() string { return "ctx" }
func (ctxCollector) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestRatesFirstReadingAndReset(t *testing.T) {
	var r rates
	t0 := time.Unix(1000, 0)
	r.begin(t0)
	if _, ok := r.rate("a", 100); ok {
		t.Fatal("first reading produced a rate")
	}
	r.commit()

	r.begin(t0.Add(2 * time.Second))
	if v, ok := r.rate("a", 300); !ok || v != 100 {
		t.Fatalf("rate = %v, %v; want 100/s", v, ok)
	}
	if _, ok := r.rate("b", 5); ok {
		t.Fatal("a new series produced a rate on its first reading")
	}
	r.commit()

	r.begin(t0.Add(3 * time.Second))
	if v, ok := r.rate("a", 10); ok {
		t.Fatalf("a counter that went backwards produced rate %v", v)
	}
	if v, ok := r.rate("b", 5); !ok || v != 0 {
		t.Fatalf("unchanged counter: %v, %v", v, ok)
	}
	r.commit()

	r.begin(t0.Add(4 * time.Second))
	if v, ok := r.rate("a", 15); !ok || v != 5 {
		t.Fatalf("after reset: %v, %v; want 5/s from the new base", v, ok)
	}
	r.commit()
	// A reading that failed (no commit) keeps the old base.
	r.begin(t0.Add(5 * time.Second))
	r.rate("a", 1000)
	r.begin(t0.Add(6 * time.Second))
	if v, ok := r.rate("a", 21); !ok || v != 3 {
		t.Fatalf("rate against the last committed reading: %v, %v; want 3/s", v, ok)
	}
}

func TestCPUShares(t *testing.T) {
	a := cpu.TimesStat{User: 100, Nice: 10, System: 50, Irq: 5, Softirq: 5, Idle: 800, Iowait: 20, Steal: 10}
	b := a
	b.User += 30
	b.System += 10
	b.Idle += 50
	b.Iowait -= 5 // the kernel's iowait can go backwards: counts as 0, never negative
	b.Steal += 10
	out := cpuShares(nil, a, b)
	got := map[string]float64{}
	for _, m := range out {
		got[m.Name] = m.Value
	}
	want := map[string]float64{
		"cpu.usage_percent": 50, "cpu.user_percent": 30, "cpu.system_percent": 10,
		"cpu.iowait_percent": 0, "cpu.steal_percent": 10, "cpu.idle_percent": 50,
	}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if out := cpuShares(nil, a, a); len(out) != 0 {
		t.Errorf("no elapsed CPU time must give no shares, got %s", names(out))
	}
}

func TestUsageMounts(t *testing.T) {
	parts := []disk.PartitionStat{
		{Device: "/dev/vda", Mountpoint: "/", Fstype: "ext4"},
		{Device: "/dev/vda", Mountpoint: "/etc/hosts", Fstype: "ext4"}, // bind mount of the same fs
		{Device: "/dev/sdb1", Mountpoint: "/data", Fstype: "xfs"},
		{Device: "proc", Mountpoint: "/proc", Fstype: "proc"},
		{Device: "tmpfs", Mountpoint: "/run", Fstype: "tmpfs"},
		{Device: "overlay", Mountpoint: "/var/lib/docker/overlay2/x/merged", Fstype: "overlay"},
		{Device: "cgroup", Mountpoint: "/sys/fs/cgroup/cpu", Fstype: "cgroup"},
		{Device: "/dev/sdc", Mountpoint: "/dev/something", Fstype: "ext4"},
		{Device: "nas:/export", Mountpoint: "/mnt/nas", Fstype: "nfs4"},
		{Device: "/dev/loop3", Mountpoint: "/snap/core/1", Fstype: "squashfs"},
	}
	var got []string
	for _, p := range usageMounts(parts) {
		got = append(got, p.Mountpoint)
	}
	if strings.Join(got, " ") != "/ /data /mnt/nas" {
		t.Fatalf("usage mounts = %q", got)
	}
}

func TestSkipDevice(t *testing.T) {
	for name, skip := range map[string]bool{
		"sda": false, "sda1": true, "vda": false, "vda2": true, "xvdb": false, "nvme0n1": false, "nvme0n1p1": true,
		"mmcblk0": false, "mmcblk0p1": true, "dm-0": false, "md0": false, "loop0": true, "ram1": true, "zram0": true, "sr0": true,
	} {
		if skipDevice.MatchString(name) != skip {
			t.Errorf("skipDevice(%s) = %v, want %v", name, !skip, skip)
		}
	}
}

func TestLabelValueIsAlwaysStorable(t *testing.T) {
	for _, v := range []string{"/", "/mnt/a,b=c", "/mnt/{x}", "/mnt/tab\there", `/mnt/"q"\`, strings.Repeat("é", 200)} {
		got := labelValue(v)
		if err := storage.ValidateLabelValue(got); err != nil {
			t.Errorf("labelValue(%q) = %q: %v", v, got, err)
		}
	}
	if labelValue("/var/log") != "/var/log" {
		t.Error("a clean value must pass unchanged")
	}
}
