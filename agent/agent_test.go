package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/monitorhq/monitor/agent/internal/collector"
	"github.com/monitorhq/monitor/agent/internal/uplink"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/hash"
	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild()) // the agent process of TestKilledAgentReplaysAfterRestart
	}
	goleak.VerifyTestMain(m)
}

// fakeBroker is a MonitorService that records what it is sent and follows
// the Ingest protocol (Hello, batches, cumulative acks, go-back-N after
// FlowControl). It stands in for the broker; tests set its behaviour.
type fakeBroker struct {
	monitorpb.UnimplementedMonitorServiceServer
	t    testing.TB
	addr string

	mu          sync.Mutex
	srv         *grpc.Server
	registers   []*monitorpb.HostInfo
	heartbeats  int
	forgetHost  bool     // answer the next heartbeat with registered=false
	hellos      []string // agent ids
	received    []uint64 // every batch seq as it arrived, ignored ones too
	accepted    []uint64 // batch seqs stored, in order
	stored      []*monitorpb.Snapshot
	agentClosed int    // streams the agent half-closed (Recv saw io.EOF)
	flowAt      uint64 // answer FlowControl the first time this seq arrives
	flowSent    bool
	rejectName  string        // reject every metric with this name
	silent      bool          // store batches but never ack them
	holdAcks    chan struct{} // when set, each ack waits until it is closed

	cluster *fakeCluster // when set, also serves ClusterService.Watch from it
}

// startBroker serves a fakeBroker on addr ("127.0.0.1:0" for any port).
func startBroker(t testing.TB, addr string) *fakeBroker {
	t.Helper()
	return startClusterBroker(t, addr, nil)
}

// startClusterBroker is startBroker for a broker that also serves the
// membership of cluster (nil: no ClusterService, as an older broker).
func startClusterBroker(t testing.TB, addr string, cluster *fakeCluster) *fakeBroker {
	t.Helper()
	f := &fakeBroker{t: t, addr: addr, cluster: cluster}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeBroker) start() {
	f.t.Helper()
	var lis net.Listener
	var err error
	// A port just closed may take a moment to be reusable: poll.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if lis, err = net.Listen("tcp", f.addr); err == nil || time.Now().After(deadline) {
			break
		}
		<-time.After(20 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("listen %s: %v", f.addr, err)
	}
	srv := grpc.NewServer()
	monitorpb.RegisterMonitorServiceServer(srv, f)
	if f.cluster != nil {
		monitorpb.RegisterClusterServiceServer(srv, f.cluster)
	}
	f.mu.Lock()
	f.addr = lis.Addr().String()
	f.srv = srv
	f.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

// stop ends the server and every stream at once, like a crash.
func (f *fakeBroker) stop() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

func (f *fakeBroker) Register(_ context.Context, req *monitorpb.RegisterRequest) (*monitorpb.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registers = append(f.registers, req.GetHost())
	return &monitorpb.RegisterResponse{HeartbeatIntervalMs: 1000}, nil
}

func (f *fakeBroker) Heartbeat(_ context.Context, req *monitorpb.HeartbeatRequest) (*monitorpb.HeartbeatResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats++
	known := !f.forgetHost
	f.forgetHost = false
	return &monitorpb.HeartbeatResponse{Registered: known}, nil
}

func (f *fakeBroker) Ingest(stream monitorpb.MonitorService_IngestServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return errors.New("first message is not a Hello")
	}
	f.mu.Lock()
	f.hellos = append(f.hellos, first.GetHello().GetAgentId())
	f.mu.Unlock()
	var resendFrom uint64
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			f.mu.Lock()
			f.agentClosed++
			f.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		b := req.GetBatch()
		if b == nil {
			return errors.New("expected a Batch")
		}
		f.mu.Lock()
		f.received = append(f.received, b.GetSeq())
		if resendFrom != 0 {
			if b.GetSeq() != resendFrom {
				f.mu.Unlock()
				continue // go-back-N: ignored until the resend arrives
			}
			resendFrom = 0
		}
		if f.flowAt != 0 && b.GetSeq() == f.flowAt && !f.flowSent {
			f.flowSent, resendFrom = true, b.GetSeq()
			f.mu.Unlock()
			fc := &monitorpb.FlowControl{ResendFromSeq: b.GetSeq(), RetryAfterMs: 50, Reason: "test: queue full"}
			if err := stream.Send(&monitorpb.IngestResponse{Kind: &monitorpb.IngestResponse_FlowControl{FlowControl: fc}}); err != nil {
				return err
			}
			continue
		}
		f.accepted = append(f.accepted, b.GetSeq())
		if f.silent {
			f.mu.Unlock()
			continue
		}
		if gate := f.holdAcks; gate != nil {
			f.mu.Unlock()
			select {
			case <-gate:
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
			f.mu.Lock()
		}
		ack := &monitorpb.Ack{AckedSeq: b.GetSeq(), StoredSnapshots: uint32(len(b.GetSnapshots()))}
		for i, s := range b.GetSnapshots() {
			f.stored = append(f.stored, s)
			for _, m := range s.GetMetrics() {
				if m.GetName() == f.rejectName {
					ack.Rejections = append(ack.Rejections, &monitorpb.Rejection{Seq: b.GetSeq(), SnapshotIndex: uint32(i),
						HostId: s.GetHostId(), Timestamp: s.GetTimestamp(), Metric: m.GetName(), Reason: "test: refused"})
				}
			}
		}
		f.mu.Unlock()
		if err := stream.Send(&monitorpb.IngestResponse{Kind: &monitorpb.IngestResponse_Ack{Ack: ack}}); err != nil {
			return err
		}
	}
}

// storedStamps returns the timestamps of every stored snapshot, in order.
func (f *fakeBroker) storedStamps() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]int64, len(f.stored))
	for i, s := range f.stored {
		out[i] = s.GetTimestamp()
	}
	return out
}

func (f *fakeBroker) with(fn func(f *fakeBroker)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// deadAddr returns a loopback address nothing listens on (yet).
func deadAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// tlog sends slog output to t.Log.
type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func testConfig(brokers ...string) Config {
	cfg := DefaultConfig()
	cfg.HostID = "test-host"
	cfg.Brokers = brokers
	cfg.Labels = map[string]string{"env": "test"}
	cfg.CollectorTimeout = config.Duration(200 * time.Millisecond)
	cfg.ReconnectMinBackoff = config.Duration(10 * time.Millisecond)
	cfg.ReconnectMaxBackoff = config.Duration(50 * time.Millisecond)
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	cfg.DataDir = "" // memory spool; tests of the disk spool set their own
	return cfg
}

// fake is a Collector the test controls.
type fake struct {
	name    string
	calls   atomic.Int32
	release chan struct{} // when set, Collect blocks on it, ignoring ctx
}

func (c *fake) Name() string { return c.name }

func (c *fake) Collect(context.Context) ([]*monitorpb.Metric, error) {
	c.calls.Add(1)
	if c.release != nil {
		<-c.release
	}
	return []*monitorpb.Metric{{Name: "test." + c.name, Value: 1, Priority: monitorpb.Priority_PRIORITY_NORMAL}}, nil
}

// harness runs an agent driven by injected ticks.
type harness struct {
	t      testing.TB
	a      *Agent
	ticks  chan time.Time
	cancel context.CancelFunc
	done   chan error
	base   int64
	n      int64 // ticks sent
}

// start builds and runs an agent; with collectors given, they replace the
// real ones.
func start(t testing.TB, cfg Config, collectors ...collector.Collector) *harness {
	return startWith(t, cfg, nil, collectors...)
}

// startWith is start with a hook that may change the uplink's fixed
// timings before Run.
func startWith(t testing.TB, cfg Config, tune func(*uplink.Config), collectors ...collector.Collector) *harness {
	t.Helper()
	return startHarness(t, cfg, testLogger(t), tune, collectors...)
}

// startLogged is start with the agent's log going to logger.
func startLogged(t testing.TB, cfg Config, logger *slog.Logger, collectors ...collector.Collector) *harness {
	t.Helper()
	return startHarness(t, cfg, logger, nil, collectors...)
}

func startHarness(t testing.TB, cfg Config, logger *slog.Logger, tune func(*uplink.Config), collectors ...collector.Collector) *harness {
	t.Helper()
	a, err := New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		uc := a.uplinkConfig()
		tune(&uc)
		if a.up, err = uplink.New(uc, a.spool, a.hostInfo, a.log); err != nil {
			t.Fatal(err)
		}
	}
	if len(collectors) > 0 {
		a.runner = collector.NewRunner(collectors, cfg.CollectorTimeout.D(), a.log, a.observeCollect)
	}
	h := &harness{t: t, a: a, ticks: make(chan time.Time), done: make(chan error, 1), base: time.Now().Unix()}
	a.ticks = h.ticks
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- a.Run(ctx) }()
	t.Cleanup(func() { h.stop() })
	return h
}

// tick starts the next round (and waits until the loop took the tick).
func (h *harness) tick() int64 {
	h.n++
	ts := h.base + h.n
	select {
	case h.ticks <- time.Unix(ts, 0):
	case <-time.After(10 * time.Second):
		h.t.Fatalf("collection loop did not take tick %d", h.n)
	}
	return ts
}

// stop ends Run and returns its error (once; later calls return nil).
func (h *harness) stop() error {
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return within 30s of cancel")
		return nil
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond)
	}
}

// hostMetrics returns the names of a snapshot's metrics other than the
// agent's own.
func hostMetrics(s *monitorpb.Snapshot) []string {
	var out []string
	for _, m := range s.GetMetrics() {
		if !strings.HasPrefix(m.GetName(), "agent.") {
			out = append(out, m.GetName())
		}
	}
	return out
}

// metricValue finds a metric by name and one label.
func metricValue(s *monitorpb.Snapshot, name, label, value string) (float64, bool) {
	for _, m := range s.GetMetrics() {
		if m.GetName() == name && (label == "" || m.GetLabels()[label] == value) {
			return m.GetValue(), true
		}
	}
	return 0, false
}

func stampsFrom(base int64, from, to int) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, base+int64(i))
	}
	return out
}

func TestAcksFreeTheBuffer(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	h := start(t, testConfig(b.addr)) // real collectors
	for range 3 {
		h.tick()
	}
	waitFor(t, "3 acks", func() bool { s := h.a.Stats(); return s.Acked == 3 && s.Buffered == 0 })
	if got, want := b.storedStamps(), stampsFrom(h.base, 1, 3); !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	b.with(func(b *fakeBroker) {
		if len(b.registers) == 0 {
			t.Fatal("agent did not register")
		}
		hi := b.registers[0]
		if hi.GetHostId() != "test-host" || hi.GetHostname() == "" || hi.GetOs() == "" || hi.GetCpuCount() == 0 ||
			hi.GetMemoryBytes() == 0 || hi.GetBootTime() == 0 || hi.GetAgentVersion() != Version || hi.GetLabels()["env"] != "test" {
			t.Errorf("registered host info %v", hi)
		}
		if !slices.Equal(b.hellos, []string{"test-host"}) {
			t.Errorf("hellos %q", b.hellos)
		}
		s := b.stored[2]
		if s.GetHostId() != "test-host" || s.GetTags()["env"] != "test" {
			t.Errorf("snapshot host %q tags %v", s.GetHostId(), s.GetTags())
		}
		have := map[string]bool{}
		for _, m := range s.GetMetrics() {
			have[m.GetName()] = true
		}
		for _, want := range []string{"mem.used_percent", "load.1", "disk.used_percent"} {
			if !have[want] {
				t.Errorf("stored snapshot lacks %s", want)
			}
		}
	})
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if s := h.a.Stats(); s.Collected != 3 || s.Acked != 3 || s.Dropped[DropShutdown] != 0 || s.Dropped[DropRingFull] != 0 {
		t.Fatalf("stats %+v", s)
	}
	b.with(func(b *fakeBroker) {
		if b.agentClosed != 1 {
			t.Errorf("the agent must half-close its stream at shutdown; closed %d", b.agentClosed)
		}
	})
}

func TestTicksAreAlignedToTheInterval(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	cfg := testConfig(b.addr)
	cfg.Interval = config.Duration(time.Second)
	a, err := New(cfg, testLogger(t)) // the real clock: no injected ticks
	if err != nil {
		t.Fatal(err)
	}
	a.runner = collector.NewRunner([]collector.Collector{&fake{name: "fast"}}, cfg.CollectorTimeout.D(), a.log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	started := time.Now().Unix()
	waitFor(t, "2 snapshots", func() bool { return len(b.storedStamps()) >= 2 })
	got := b.storedStamps()
	if got[0] <= started || got[1] != got[0]+1 {
		t.Fatalf("timestamps %v after start %d: want consecutive seconds after it", got, started)
	}
}

func TestHeartbeatReRegisters(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	b.with(func(b *fakeBroker) { b.forgetHost = true })
	cfg := testConfig(b.addr)
	cfg.HeartbeatInterval = config.Duration(time.Second)
	start(t, cfg, &fake{name: "fast"})
	waitFor(t, "a second registration after the broker forgot the host", func() bool {
		var n int
		b.with(func(b *fakeBroker) { n = len(b.registers) })
		return n >= 2
	})
}

func TestHungCollectorCostsOnlyItsMetrics(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	fast := &fake{name: "fast"}
	hung := &fake{name: "hung", release: make(chan struct{})}
	cfg := testConfig(b.addr)
	cfg.CollectorTimeout = config.Duration(100 * time.Millisecond)
	h := start(t, cfg, fast, hung)
	defer close(hung.release) // before the harness stops (cleanups run later)

	began := time.Now()
	h.tick()
	waitFor(t, "the first snapshot", func() bool { return len(b.storedStamps()) == 1 })
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("snapshot took %s with a 100ms collector timeout", took)
	}
	h.tick()
	waitFor(t, "the second snapshot", func() bool { return len(b.storedStamps()) == 2 })
	b.with(func(b *fakeBroker) {
		for _, s := range b.stored {
			if host := hostMetrics(s); len(host) != 1 || host[0] != "test.fast" {
				t.Errorf("snapshot %d has %v, want only test.fast (and the agent's own)", s.GetTimestamp(), host)
			}
		}
		// The agent's own metrics tell the story.
		last := b.stored[len(b.stored)-1]
		if v, ok := metricValue(last, "agent.collector_skips_total", "collector", "hung"); !ok || v != 2 {
			t.Errorf("agent.collector_skips_total{collector=hung} = %v, %v; want 2", v, ok)
		}
	})
	// The priming call hangs; both rounds skip the collector.
	if n := hung.calls.Load(); n != 1 {
		t.Errorf("hung collector called %d times, want 1 (skipped while running)", n)
	}
	st := h.a.Stats()
	if st.Collectors["hung"].Timeouts != 1 || st.Collectors["hung"].Skips != 2 || st.CollectorTimeouts() != 1 || st.CollectorSkips() != 2 {
		t.Errorf("collector stats %+v", st.Collectors)
	}
}

func TestFlowControlResendsInOrder(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	b.with(func(b *fakeBroker) { b.flowAt = 3 })
	cfg := testConfig(b.addr)
	cfg.BatchMaxSnapshots = 1
	h := start(t, cfg, &fake{name: "fast"})
	for range 10 {
		h.tick()
	}
	waitFor(t, "10 acks", func() bool { return h.a.Stats().Acked == 10 })
	if got, want := b.storedStamps(), stampsFrom(h.base, 1, 10); !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	b.with(func(b *fakeBroker) {
		if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(b.accepted, want) {
			t.Errorf("accepted seqs %v, want %v", b.accepted, want)
		}
		// Seq 3 arrived twice: once refused with FlowControl, once resent.
		if n := count(b.received, 3); n != 2 {
			t.Errorf("seq 3 received %d times; received %v", n, b.received)
		}
	})
	if st := h.a.Stats(); st.FlowControls != 1 || st.Buffered != 0 {
		t.Errorf("stats %+v", st)
	}
}

func count(xs []uint64, x uint64) (n int) {
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

func TestBrokerOutageLosesNothing(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	h := start(t, testConfig(b.addr), &fake{name: "fast"})
	for range 3 {
		h.tick()
	}
	waitFor(t, "3 acks", func() bool { return h.a.Stats().Acked == 3 })

	b.stop()
	waitFor(t, "the agent to notice", func() bool { return !h.a.Stats().Connected })
	for range 5 {
		h.tick()
	}
	waitFor(t, "5 snapshots buffered during the outage", func() bool { return h.a.Stats().Buffered == 5 })
	b.start()
	for range 2 {
		h.tick()
	}
	waitFor(t, "10 acks", func() bool { s := h.a.Stats(); return s.Acked == 10 && s.Buffered == 0 })

	stored := b.storedStamps()
	var firsts []int64
	seen := map[int64]int{}
	for _, ts := range stored {
		if seen[ts] == 0 {
			firsts = append(firsts, ts)
		}
		seen[ts]++
	}
	if want := stampsFrom(h.base, 1, 10); !slices.Equal(firsts, want) {
		t.Fatalf("stored %v: first deliveries %v, want %v", stored, firsts, want)
	}
	for ts, n := range seen {
		// A duplicate is only allowed for a snapshot whose ack the crash
		// swallowed: one of the first three, resent once.
		if n > 2 || n == 2 && ts > h.base+3 {
			t.Errorf("snapshot %d stored %d times (stored %v)", ts, n, stored)
		}
	}
	if st := h.a.Stats(); st.Reconnects < 1 || st.Dropped[DropRingFull] != 0 || st.Collected != 10 {
		t.Errorf("stats %+v", st)
	}
}

func TestSilentBrokerIsLeftAfterAckTimeout(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	b.with(func(b *fakeBroker) { b.silent = true })
	h := startWith(t, testConfig(b.addr), func(c *uplink.Config) { c.AckTimeout = 300 * time.Millisecond }, &fake{name: "fast"})
	for range 2 {
		h.tick()
	}
	waitFor(t, "a second stream after the ack timeout", func() bool {
		var n int
		b.with(func(b *fakeBroker) { n = len(b.hellos) })
		return n >= 2
	})
	if h.a.Stats().Acked != 0 {
		t.Fatal("acked by a silent broker")
	}
	b.with(func(b *fakeBroker) { b.silent = false })
	h.tick()
	waitFor(t, "3 acks once the broker answers", func() bool { s := h.a.Stats(); return s.Acked == 3 && s.Buffered == 0 })
	if st := h.a.Stats(); st.Reconnects < 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestSpoolCapDropsOldest cuts the agent off for longer than its spool cap
// holds: the oldest snapshots go first, the newest are all delivered
// without a gap, every drop is counted and exported on /metrics. Part of
// make test-faults (FIGURE lines).
func TestSpoolCapDropsOldest(t *testing.T) {
	addr := deadAddr(t)
	cfg := testConfig(addr)
	cfg.SpoolMaxBytes = 1 << 20
	cfg.HTTPListen = "127.0.0.1:0"
	h := start(t, cfg, &fake{name: "fast"})
	var st Stats
	for st.Dropped[DropSpoolFull] == 0 {
		h.tick()
		if h.n > 5000 {
			t.Fatalf("no spool drop after %d snapshots: %+v", h.n, h.a.Stats().Spool)
		}
		if h.n%100 == 0 {
			waitFor(t, "the spool writer", func() bool { return h.a.Stats().RingDepth == 0 })
			st = h.a.Stats()
		}
	}
	waitFor(t, "the spool writer", func() bool { return h.a.Stats().RingDepth == 0 })
	st = h.a.Stats()
	if st.Spool.Bytes > int64(cfg.SpoolMaxBytes) {
		t.Fatalf("spool holds %d bytes, cap %d", st.Spool.Bytes, cfg.SpoolMaxBytes)
	}
	b := startBroker(t, addr)
	waitFor(t, "everything held acknowledged", func() bool { return h.a.Stats().Buffered == 0 })
	st = h.a.Stats()
	got := b.storedStamps()
	if want := stampsFrom(h.base, int(h.n)-len(got)+1, int(h.n)); !slices.Equal(got, want) {
		t.Fatalf("stored %d snapshots ending %v: want the newest, without gaps", len(got), got[len(got)-1])
	}
	if st.Dropped[DropSpoolFull]+uint64(len(got)) != uint64(h.n) {
		t.Fatalf("%d dropped + %d stored != %d collected", st.Dropped[DropSpoolFull], len(got), h.n)
	}
	exported := fmt.Sprintf(`monitor_agent_dropped_snapshots_total{reason="spool_full"} %d`, st.Dropped[DropSpoolFull])
	if body := get(t, "http://"+h.a.HTTPAddr()+"/metrics", http.StatusOK); !strings.Contains(body, exported) {
		t.Fatalf("/metrics lacks %q", exported)
	}
	t.Logf("FIGURE spool_cap_bytes=%d bytes", cfg.SpoolMaxBytes)
	t.Logf("FIGURE spool_cap_collected=%d snapshots", h.n)
	t.Logf("FIGURE spool_cap_dropped_oldest=%d snapshots", st.Dropped[DropSpoolFull])
	t.Logf("FIGURE spool_cap_delivered=%d snapshots", len(got))
	t.Logf("FIGURE spool_cap_lost_unaccounted=%d snapshots", uint64(h.n)-st.Dropped[DropSpoolFull]-uint64(len(got)))
}

func TestFailoverFollowsRingPreference(t *testing.T) {
	a1, a2 := deadAddr(t), deadAddr(t)
	ring, err := hash.New([]string{a1, a2}, hash.DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	order := ring.Preference("test-host")
	second := startBroker(t, order[1]) // the ring's choice, order[0], is down
	h := start(t, testConfig(a1, a2), &fake{name: "fast"})
	if got := h.a.up.Order(); !slices.Equal(got, order) {
		t.Fatalf("uplink order %v, ring preference %v", got, order)
	}
	for range 3 {
		h.tick()
	}
	waitFor(t, "3 acks via the second broker", func() bool { return h.a.Stats().Acked == 3 })
	if st := h.a.Stats(); st.Broker != order[1] {
		t.Fatalf("streaming to %s, want %s", st.Broker, order[1])
	}
	if n := len(second.storedStamps()); n != 3 {
		t.Fatalf("second broker stored %d", n)
	}

	// The preferred broker comes back and the second fails: the agent goes
	// back to the ring's choice.
	first := startBroker(t, order[0])
	second.stop()
	for range 2 {
		h.tick()
	}
	waitFor(t, "5 acks", func() bool { return h.a.Stats().Acked == 5 })
	if st := h.a.Stats(); st.Broker != order[0] {
		t.Fatalf("streaming to %s, want %s", st.Broker, order[0])
	}
	if got := first.storedStamps(); len(got) < 2 || got[len(got)-1] != h.base+5 {
		t.Fatalf("preferred broker stored %v", got)
	}
}

func TestGracefulShutdownDeliversHeld(t *testing.T) {
	addr := deadAddr(t)
	h := start(t, testConfig(addr), &fake{name: "fast"})
	for range 5 {
		h.tick()
	}
	waitFor(t, "5 rounds", func() bool { return h.a.Stats().Collected == 5 })
	if h.a.Stats().Acked != 0 {
		t.Fatal("acked with no broker")
	}
	b := startBroker(t, addr)
	if err := h.stop(); err != nil { // shutdown begins before anything was delivered
		t.Fatal(err)
	}
	st := h.a.Stats()
	if st.Acked != 5 || st.Buffered != 0 || st.Dropped[DropShutdown] != 0 {
		t.Fatalf("after shutdown: %+v", st)
	}
	if got, want := b.storedStamps(), stampsFrom(h.base, 1, 5); !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	b.with(func(b *fakeBroker) {
		if b.agentClosed != 1 {
			t.Errorf("stream not half-closed by the agent (closed %d)", b.agentClosed)
		}
	})
}

func TestShutdownTimeoutCountsUnacked(t *testing.T) {
	cfg := testConfig(deadAddr(t))
	cfg.ShutdownTimeout = config.Duration(200 * time.Millisecond)
	h := start(t, cfg, &fake{name: "fast"})
	for range 4 {
		h.tick()
	}
	waitFor(t, "4 rounds", func() bool { return h.a.Stats().Collected == 4 })
	began := time.Now()
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("shutdown took %s with a 200ms shutdown_timeout", took)
	}
	if st := h.a.Stats(); st.Dropped[DropShutdown] != 4 || st.Acked != 0 {
		t.Fatalf("stats %+v, want 4 dropped at shutdown", st)
	}
}

func TestRejectionsAreCountedAndAcked(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	b.with(func(b *fakeBroker) { b.rejectName = "test.bad" })
	h := start(t, testConfig(b.addr), &fake{name: "fast"}, &fake{name: "bad"})
	for range 3 {
		h.tick()
	}
	waitFor(t, "3 acks", func() bool { return h.a.Stats().Acked == 3 })
	if st := h.a.Stats(); st.Rejected != 3 || st.Buffered != 0 {
		t.Fatalf("stats %+v, want 3 rejected", st)
	}
}

func TestCollectOnce(t *testing.T) {
	cfg := testConfig("127.0.0.1:9093")
	snap, err := CollectOnce(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if snap.GetHostId() != "test-host" || snap.GetTags()["env"] != "test" {
		t.Fatalf("snapshot %v", snap)
	}
	if d := time.Now().Unix() - snap.GetTimestamp(); d < 0 || d > 5 {
		t.Fatalf("timestamp %d is %ds from now", snap.GetTimestamp(), d)
	}
	have := map[string]bool{}
	for _, m := range snap.GetMetrics() {
		have[m.GetName()] = true
	}
	for _, want := range []string{"cpu.usage_percent", "mem.used_percent", "disk.used_percent", "net.rx_bytes_per_sec"} {
		if !have[want] {
			t.Errorf("-once snapshot lacks %s (rates need its second reading)", want)
		}
	}
}

func TestNextTickIsAligned(t *testing.T) {
	cases := []struct {
		now      string
		interval time.Duration
		want     string
	}{
		{"12:00:03.2", 5 * time.Second, "12:00:05"},
		{"12:00:05", 5 * time.Second, "12:00:10"},
		{"12:00:59.9", time.Second, "12:01:00"},
		{"12:07:00", time.Minute, "12:08:00"},
	}
	for _, c := range cases {
		now, _ := time.Parse("2006-01-02 15:04:05", "2030-01-01 "+c.now)
		if strings.Contains(c.now, ".") {
			now, _ = time.Parse("2006-01-02 15:04:05.0", "2030-01-01 "+c.now)
		}
		got := nextTick(now, c.interval).Format("15:04:05")
		if got != c.want {
			t.Errorf("nextTick(%s, %s) = %s, want %s", c.now, c.interval, got, c.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cfg := testConfig()
	if _, err := New(cfg, testLogger(t)); err == nil || !strings.Contains(err.Error(), "brokers") {
		t.Fatalf("New with no brokers: %v", err)
	}
}
