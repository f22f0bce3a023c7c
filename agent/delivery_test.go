package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/agent/internal/spool"
	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/pkg/config"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// realBroker is an in-process broker on embedded storage.
type realBroker struct {
	t      *testing.T
	addr   string
	dir    string
	cancel context.CancelFunc
	done   chan error
}

// startRealBroker starts a broker on addr ("127.0.0.1:0" for any port) with
// its embedded store in dir; stop it with stop (also at test end).
func startRealBroker(t *testing.T, addr, dir string) *realBroker {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.GRPCListen, cfg.HTTPListen, cfg.DataDir, cfg.Raft.Listen = addr, "", dir, "127.0.0.1:0"
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	log := slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var b *broker.Broker
	var err error
	// A port just closed may take a moment to be reusable: poll.
	for deadline := time.Now().Add(5 * time.Second); ; {
		b, err = broker.New(context.Background(), cfg, log)
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		<-time.After(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rb := &realBroker{t: t, addr: b.GRPCAddr(), dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { rb.done <- b.Run(ctx) }()
	t.Cleanup(rb.stop)
	return rb
}

func (b *realBroker) stop() {
	if b.cancel == nil {
		return
	}
	b.cancel()
	b.cancel = nil
	select {
	case err := <-b.done:
		if err != nil {
			b.t.Errorf("broker: %v", err)
		}
	case <-time.After(30 * time.Second):
		b.t.Fatal("broker did not stop within 30s")
	}
}

// stamps returns the timestamps at which the broker stored series name of
// host, in [from, to].
func (b *realBroker) stamps(host, name string, from, to int64) []int64 {
	b.t.Helper()
	conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := monitorpb.NewMonitorServiceClient(conn).QueryRange(ctx, &monitorpb.QueryRangeRequest{HostId: host, Names: []string{name}, From: from, To: to})
	if err != nil {
		b.t.Fatalf("query %s: %v", name, err)
	}
	var out []int64
	for _, s := range resp.GetSeries() {
		for _, p := range s.GetPoints() {
			out = append(out, p.GetTimestamp())
		}
	}
	slices.Sort(out)
	return out
}

// TestRealBrokerOutageLosesNothing takes a real broker (embedded storage)
// down for 30 s (3 s with -short) while the agent keeps collecting several
// snapshots a second, brings it back on the same address and store, and
// checks every snapshot is stored: none lost, no gap. The ring holds 16
// snapshots, far fewer than the outage makes: the disk spool holds the
// rest. Part of make test-faults (FIGURE lines).
func TestRealBrokerOutageLosesNothing(t *testing.T) {
	outage := 30 * time.Second
	if testing.Short() {
		outage = 3 * time.Second
	}
	store := t.TempDir()
	b := startRealBroker(t, "127.0.0.1:0", store)
	cfg := testConfig(b.addr)
	cfg.DataDir = filepath.Join(t.TempDir(), "spool")
	cfg.ReconnectMaxBackoff = config.Duration(time.Second)
	cfg.RingSize = 16 // the outage outlasts the ring many times over
	h := start(t, cfg, &fake{name: "fast"})
	h.base = time.Now().Unix() - 3600 // an hour ago: room for many one-second ticks before now

	for range 5 {
		h.tick()
	}
	waitFor(t, "5 acks", func() bool { return h.a.Stats().Acked == 5 })

	b.stop()
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for end := time.Now().Add(outage); time.Now().Before(end); <-pace.C {
		h.tick()
	}
	during := h.n - 5
	st := h.a.Stats()
	if st.Connected || st.Acked != 5 {
		t.Fatalf("acked during the outage: %+v", st)
	}
	if st.Spool.Records < uint64(during)-uint64(st.RingDepth) {
		t.Fatalf("%d snapshots collected during the outage, %d in the spool", during, st.Spool.Records)
	}

	b = startRealBroker(t, b.addr, store)
	for range 5 {
		h.tick()
	}
	waitFor(t, "everything acknowledged", func() bool { s := h.a.Stats(); return s.Buffered == 0 && s.Acked >= uint64(h.n) })
	got := b.stamps("test-host", "test.fast", h.base, h.base+h.n+1)
	if want := stampsFrom(h.base, 1, int(h.n)); !slices.Equal(got, want) {
		t.Fatalf("stored %d snapshots, collected %d; first missing: %v", len(got), len(want), firstMissing(got, want))
	}
	st = h.a.Stats()
	for reason, n := range st.Dropped {
		if n != 0 {
			t.Errorf("dropped %d for %s", n, reason)
		}
	}
	t.Logf("outage %s: %d snapshots spooled and delivered after it; %d reconnect attempts", outage, during, st.Reconnects)
	t.Logf("FIGURE agent_outage_ms=%d ms", outage.Milliseconds())
	t.Logf("FIGURE agent_outage_ring_size=%d snapshots", cfg.RingSize)
	t.Logf("FIGURE agent_outage_spooled=%d snapshots", during)
	t.Logf("FIGURE agent_outage_lost=%d snapshots", len(stampsFrom(h.base, 1, int(h.n)))-len(got))
}

func firstMissing(got, want []int64) any {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return w
		}
	}
	return "none"
}

// TestUnackedSurviveRestartAndGoFirst stops an agent that could not reach
// its broker and starts another on the same data_dir: the spooled
// snapshots are delivered, before the new ones.
func TestUnackedSurviveRestartAndGoFirst(t *testing.T) {
	addr := deadAddr(t)
	cfg := testConfig(addr)
	cfg.DataDir = t.TempDir()
	cfg.ShutdownTimeout = config.Duration(100 * time.Millisecond)
	h := start(t, cfg, &fake{name: "fast"})
	for range 5 {
		h.tick()
	}
	waitFor(t, "5 snapshots spooled", func() bool { return h.a.Stats().Spool.Records == 5 })
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if st := h.a.Stats(); st.Dropped[DropShutdown] != 0 || st.Acked != 0 {
		t.Fatalf("a durable spool lost snapshots at shutdown: %+v", st)
	}

	b := startBroker(t, addr)
	h2 := start(t, cfg, &fake{name: "fast"})
	h2.base = h.base + h.n
	waitFor(t, "the spooled 5 acknowledged", func() bool { return h2.a.Stats().Acked == 5 })
	if st := h2.a.Stats(); st.Spool.Replayed != 5 {
		t.Fatalf("replayed %d, want 5", st.Spool.Replayed)
	}
	h2.tick()
	h2.tick()
	waitFor(t, "7 acks", func() bool { return h2.a.Stats().Acked == 7 })
	if got, want := b.storedStamps(), stampsFrom(h.base, 1, 7); !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v: the spooled ones first", got, want)
	}
}

// The child process of TestKilledAgentReplaysAfterRestart: the test binary
// started again with childEnv set runs a real agent (see TestMain).
const childEnv = "MONITOR_AGENT_TEST_CHILD"

type childConfig struct {
	Broker, DataDir, HTTP, HostID string
}

// runChild runs an agent from the childEnv configuration until killed.
func runChild() int {
	var cc childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &cc); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	cfg := DefaultConfig()
	cfg.Brokers, cfg.DataDir, cfg.HTTPListen, cfg.HostID = []string{cc.Broker}, cc.DataDir, cc.HTTP, cc.HostID
	if err := cfg.SetInterval("1s"); err != nil {
		return 2
	}
	cfg.ReconnectMinBackoff = config.Duration(100 * time.Millisecond)
	cfg.ReconnectMaxBackoff = config.Duration(time.Second)
	a, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := a.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestKilledAgentReplaysAfterRestart runs a real agent process with no
// broker reachable, SIGKILLs it once it has spooled a few snapshots, then
// starts a real broker and a new agent on the same data_dir: every snapshot
// the killed agent spooled is stored.
func TestKilledAgentReplaysAfterRestart(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	brokerAddr, httpAddr := deadAddr(t), deadAddr(t)
	dataDir := t.TempDir()
	cc, _ := json.Marshal(childConfig{Broker: brokerAddr, DataDir: dataDir, HTTP: httpAddr, HostID: "killed-host"})
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cc))
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("agent process output:\n%s", logs.String())
		}
	}()

	// The agent's own /metrics says how much it spooled.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n := scrape(httpAddr, "monitor_agent_spool_snapshots"); n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent process did not spool 3 snapshots within 30s")
		}
		select {
		case err := <-exited:
			waited = true
			t.Fatalf("agent process exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown, no flush
		t.Fatal(err)
	}
	<-exited
	waited = true

	sp, err := spool.Open(spool.Options{Dir: dataDir, MaxBytes: 1 << 30}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	head, tail := sp.Bounds()
	var spooled []int64
	for _, it := range sp.ReadRange(head, tail) {
		spooled = append(spooled, it.Snap.GetTimestamp())
	}
	sp.Close()
	if len(spooled) < 3 {
		t.Fatalf("the killed agent left %d snapshots in its spool", len(spooled))
	}

	b := startRealBroker(t, brokerAddr, t.TempDir())
	cfg := testConfig(brokerAddr)
	cfg.HostID, cfg.DataDir = "killed-host", dataDir
	h := start(t, cfg, &fake{name: "fast"})
	waitFor(t, "the spooled snapshots acknowledged", func() bool {
		s := h.a.Stats()
		return s.Acked >= uint64(len(spooled)) && s.Spool.Records == 0
	})
	got := b.stamps("killed-host", "agent.collected_total", spooled[0], spooled[len(spooled)-1])
	if !slices.Equal(got, spooled) {
		t.Fatalf("stored %v, the killed agent spooled %v", got, spooled)
	}
}

// scrape returns the value of an unlabelled metric on addr's /metrics, or
// -1.
func scrape(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func TestHTTPMetricsAndHealthz(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	cfg := testConfig(b.addr)
	cfg.HTTPListen = "127.0.0.1:0"
	h := start(t, cfg, &fake{name: "fast"})
	addr := h.a.HTTPAddr()
	if addr == "" {
		t.Fatal("no HTTP address")
	}
	h.tick()
	waitFor(t, "1 ack", func() bool { return h.a.Stats().Acked == 1 })
	h.tick()
	waitFor(t, "2 acks", func() bool { return h.a.Stats().Acked == 2 })

	body := get(t, "http://"+addr+"/metrics", http.StatusOK)
	for _, want := range []string{
		"monitor_agent_snapshots_collected_total 2",
		"monitor_agent_snapshots_acked_total 2",
		`monitor_agent_dropped_snapshots_total{reason="ring_full"} 0`,
		`monitor_agent_dropped_snapshots_total{reason="spool_full"} 0`,
		`monitor_agent_dropped_metrics_total{reason="low_priority"} 0`,
		"monitor_agent_ring_depth 0",
		"monitor_agent_ring_capacity 1024",
		"monitor_agent_spool_snapshots 0",
		"monitor_agent_spool_bytes ",
		"monitor_agent_send_latency_seconds_count 2",
		`monitor_agent_collector_duration_seconds_count{collector="fast"} 3`, // the priming call and 2 rounds
		`monitor_agent_collector_errors_total{collector="fast"} 0`,
		`monitor_agent_connected{broker="` + b.addr + `"} 1`,
		"monitor_agent_reconnects_total 0",
		"process_resident_memory_bytes ",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	var health map[string]any
	if err := json.Unmarshal([]byte(get(t, "http://"+addr+"/healthz", http.StatusOK)), &health); err != nil {
		t.Fatal(err)
	}
	if health["status"] != "ok" || health["connected"] != true || health["host_id"] != "test-host" {
		t.Fatalf("healthz %v", health)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Fatal("listener still open after Run returned")
	}
}

func get(t *testing.T, url string, code int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %d, want %d\n%s", url, resp.StatusCode, code, b)
	}
	return string(b)
}

// TestSelfMetricsAreDocumented checks the agent.* metrics of a real
// snapshot against docs/metrics.md: every one documented with its unit,
// priority and labels, and every documented one sent.
func TestSelfMetricsAreDocumented(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	h := start(t, testConfig(b.addr), &fake{name: "fast"})
	h.tick()
	waitFor(t, "1 ack", func() bool { return h.a.Stats().Acked == 1 })
	h.tick()
	waitFor(t, "2 acks", func() bool { return h.a.Stats().Acked == 2 })
	var snap *monitorpb.Snapshot
	b.with(func(b *fakeBroker) { snap = b.stored[1] })

	doc := readAgentRows(t)
	sent := map[string]bool{}
	for _, m := range snap.GetMetrics() {
		if !strings.HasPrefix(m.GetName(), "agent.") {
			continue
		}
		sent[m.GetName()] = true
		d, ok := doc[m.GetName()]
		if !ok {
			t.Errorf("%s is not in docs/metrics.md", m.GetName())
			continue
		}
		var labels []string
		for k := range m.GetLabels() {
			labels = append(labels, k)
		}
		if d.unit != m.GetUnit() || "PRIORITY_"+d.priority != m.GetPriority().String() || fmt.Sprint(d.labels) != fmt.Sprint(labels) {
			t.Errorf("%s: unit %q priority %s labels %v; docs say %q %s %v", m.GetName(), m.GetUnit(), m.GetPriority(), labels, d.unit, d.priority, d.labels)
		}
		if m.GetValue() < 0 {
			t.Errorf("%s = %v", m.GetName(), m.GetValue())
		}
	}
	for name := range doc {
		if !sent[name] {
			t.Errorf("documented %s not sent", name)
		}
	}
	if v, ok := metricValue(snap, "agent.acked_total", "", ""); !ok || v != 1 {
		t.Errorf("agent.acked_total in the second snapshot = %v, want 1 (the first was acked)", v)
	}
	if v, ok := metricValue(snap, "agent.dropped_snapshots_total", "reason", DropSpoolFull); !ok || v != 0 {
		t.Errorf("agent.dropped_snapshots_total{reason=spool_full} = %v, %v", v, ok)
	}
	if v, _ := metricValue(snap, "agent.rss_bytes", "", ""); v < 1<<20 {
		t.Errorf("agent.rss_bytes = %v", v)
	}
}

type docRow struct {
	unit, priority string
	labels         []string
}

// readAgentRows parses docs/metrics.md's rows of the agent collector.
func readAgentRows(t *testing.T) map[string]docRow {
	t.Helper()
	b, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]docRow{}
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 7 || strings.TrimSpace(cells[5]) != "agent" {
			continue
		}
		unit := strings.Trim(strings.TrimSpace(cells[3]), "`")
		if unit == "—" {
			unit = ""
		}
		var labels []string
		for _, l := range strings.Split(cells[2], ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				labels = append(labels, l)
			}
		}
		out[strings.Trim(strings.TrimSpace(cells[1]), "`")] = docRow{unit: unit, priority: strings.TrimSpace(cells[4]), labels: labels}
	}
	if len(out) < 15 {
		t.Fatalf("docs/metrics.md: %d agent rows", len(out))
	}
	return out
}
