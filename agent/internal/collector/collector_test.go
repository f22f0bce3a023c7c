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

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// docEntry is one row of docs/metrics.md.
type docEntry struct {
	unit, priority, collector string
	labels                    []string
}

func sameKeys(m map[string]string, keys []string) bool {
	if len(m) != len(keys) {
		return false
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

// readCatalogue parses docs/metrics.md's table: | `name` | labels | unit | priority | collector | meaning |
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
		var labels []string
		for _, l := range strings.Split(cells[2], ",") {
			l = strings.TrimSpace(l)
			if l == "" {
				continue
			}
			// "`cpu` (`cpu0`, `cpu1`, …)": the name is the first backquoted word.
			labels = append(labels, strings.Trim(strings.Fields(l)[0], "`"))
		}
		out[name] = docEntry{unit: unit, priority: strings.TrimSpace(cells[4]), collector: strings.TrimSpace(cells[5]), labels: labels}
	}
	if len(out) < 60 {
		t.Fatalf("docs/metrics.md: parsed only %d metrics", len(out))
	}
	return out
}

func TestCatalogueOnThisHost(t *testing.T) {
	r := NewRunner(allCollectors(), 5*time.Second, slog.New(slog.DiscardHandler), nil)
	ctx := context.Background()
	// Rates need a second reading with time and CPU ticks in between: poll
	// until they show up.
	need := []string{"net.tcp_active_opens_per_sec", "cpu.usage_percent", "cpu.core_usage_percent", "cpu.context_switches_per_sec", "disk.read_bytes_per_sec",
		"disk.io_busy_percent", "net.rx_bytes_per_sec", "swap.in_bytes_per_sec", "proc.forks_per_sec", "process.cpu_percent"}
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
		if st.Errors != 0 || st.Timeouts != 0 || st.Skips != 0 {
			t.Errorf("collector %s: %+v", name, st)
		}
	}

	present := map[string]bool{}
	doc := readCatalogue(t)
	units := map[string]bool{"%": true, "bytes": true, "bytes/s": true, "ops/s": true, "packets/s": true, "1/s": true,
		"seconds": true, "celsius": true, "": true}
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
		// Derived values are rounded (resolution.go), gauges are integers
		// or the kernel's decimals: all are decimals of at most 6 digits,
		// which storage codes in a few bytes, not float64 bits.
		if !shortDecimal(m.Value) {
			t.Errorf("%s = %v is not a decimal of at most 6 digits", key, m.Value)
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
		if m.Unit == "celsius" && (m.Value < -50 || m.Value > 150) {
			t.Errorf("%s = %v °C", key, m.Value)
		}
		if want := d.labels; ok && !sameKeys(m.Labels, want) {
			t.Errorf("%s has labels %v, docs/metrics.md says %v", key, m.Labels, want)
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
	// Every documented metric of the host collectors is present, except
	// those that depend on hardware or configuration this host may lack.
	optional := map[string]bool{"sensor.temperature_celsius": true}
	for name, d := range doc {
		if d.collector != "agent" && !optional[name] && !present[name] {
			t.Errorf("documented metric %s (%s collector) missing on this host", name, d.collector)
		}
	}
	checkRanges(t, ms)
	if !seen["disk.used_percent{mount=/}"] {
		t.Errorf("no usage for the root filesystem; got %s", names(ms))
	}
	cores := 0
	for k := range seen {
		if strings.HasPrefix(k, "cpu.core_usage_percent{cpu=cpu") {
			cores++
		}
	}
	if n := cpuLines(t); cores != n {
		t.Errorf("%d per-core series, %d logical CPUs", cores, n)
	}
}

// allCollectors is every host collector, as the agent builds them.
func allCollectors() []Collector {
	p := HostPaths
	return []Collector{NewCPU(p, 0), NewMemory(p, 0), NewFilesystem(p), NewDisk(p, 0), NewNetwork(p, 0),
		NewTCP(p, 0), NewTCPStates(p), NewProcesses(p, 5, 0), NewSystem(p), NewSensors(p)}
}

// cpuLines counts the cpuN lines of /proc/stat.
func cpuLines(t *testing.T) int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			n++
		}
	}
	return n
}

// checkRanges checks relations between values of one reading.
func checkRanges(t *testing.T, ms []*monitorpb.Metric) {
	t.Helper()
	v := map[string]float64{}
	for _, m := range ms {
		k, _ := storage.SeriesKey(m.Name, m.Labels)
		v[k] = m.Value
	}
	le := func(a, b string) {
		if v[a] > v[b] {
			t.Errorf("%s = %v > %s = %v", a, v[a], b, v[b])
		}
	}
	le("mem.used_bytes", "mem.total_bytes")
	le("mem.available_bytes", "mem.total_bytes")
	le("mem.cached_bytes", "mem.total_bytes")
	le("swap.used_bytes", "swap.total_bytes")
	le("disk.used_bytes{mount=/}", "disk.total_bytes{mount=/}")
	le("disk.inodes_used{mount=/}", "disk.inodes_total{mount=/}")
	le("system.open_fds", "system.max_fds")
	le("proc.running", "proc.threads")
	if v["proc.total"] < 2 || v["system.uptime_seconds"] <= 0 || v["mem.total_bytes"] < 64<<20 {
		t.Errorf("implausible: proc.total %v uptime %v mem.total %v", v["proc.total"], v["system.uptime_seconds"], v["mem.total_bytes"])
	}
	if _, ok := v["net.tcp_connections{state=listen}"]; !ok {
		t.Error("no tcp listen count")
	}
	// Each share is rounded: the sum is off by at most half a step each,
	// the step being no finer than the finest decimal the shares show.
	shares, step := 0.0, 1.0
	for _, k := range []string{"cpu.user_percent", "cpu.system_percent", "cpu.iowait_percent", "cpu.steal_percent", "cpu.idle_percent"} {
		shares += v[k]
		for d := 0; d <= 15 && step > 1e-15; d++ {
			if _, ok := storage.DecimalAt(v[k], d); ok {
				step = min(step, math.Pow10(-d))
				break
			}
		}
	}
	if math.Abs(shares-100) > 5*step/2+1e-9 {
		t.Errorf("cpu shares add up to %v (step %v)", shares, step)
	}
	tops := 0
	for _, m := range ms {
		if m.Name == "process.rss_bytes" {
			tops++
			if m.Labels["pid"] == "" || m.Labels["comm"] == "" {
				t.Errorf("top process without pid or comm: %v", m.Labels)
			}
		}
	}
	if tops == 0 || tops > 5 {
		t.Errorf("%d top processes by memory, want 1..5", tops)
	}
}

// shortDecimal reports whether v is m/10^k with k <= 6 (or an integer too
// large for that, such as file-max on 64-bit kernels).
func shortDecimal(v float64) bool {
	if math.Abs(v) >= 1<<53 {
		return v == math.Trunc(v)
	}
	for k := 0; k <= 6; k++ {
		if _, ok := storage.DecimalAt(v, k); ok {
			return true
		}
	}
	return false
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
	var observed sync.Map
	r := NewRunner([]Collector{hung, fast, failing}, 50*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)),
		func(name string, took time.Duration) { observed.Store(name, took) })
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
	if s := st["hung"]; s.Timeouts != 1 || s.Skips != 2 || s.Errors != 0 || s.Last != 0 {
		t.Errorf("hung stats %+v, want 1 timeout, 2 skips, no duration yet", s)
	}
	if s := st["failing"]; s.Errors != 3 || s.Timeouts != 0 || s.Skips != 0 {
		t.Errorf("failing stats %+v, want 3 errors", s)
	}
	if s := st["fast"]; s.Errors != 0 || s.Timeouts != 0 || s.Skips != 0 || s.Last <= 0 {
		t.Errorf("fast stats %+v", s)
	}
	if _, ok := observed.Load("fast"); !ok {
		t.Error("durations not observed")
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
	r := NewRunner([]Collector{c}, time.Second, slog.New(slog.DiscardHandler), nil)
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
	if st := r.Stats()["ctx"]; st.Errors != 0 || st.Timeouts != 0 || st.Skips != 0 {
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
