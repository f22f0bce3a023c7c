// Package loadgen simulates a fleet of agents against brokers, for the
// bin/loadgen command, the benchmark harness (bench/) and end-to-end tests.
//
// Every simulated host speaks the real Ingest protocol on its own stream:
// Hello, then batches with its own sequence numbers, at most Window
// unacknowledged; cumulative acks release batches; FlowControl pauses the
// host for retry_after and then resends from resend_from_seq (go-back-N),
// exactly as the agent's uplink does. A broken stream is reopened with
// backoff and everything unacknowledged is resent. Snapshots carry the
// agent's real metric names, units and labels (docs/metrics.md) with values
// that wander plausibly.
//
// Streams are multiplexed over Conns gRPC connections. Per host there is
// one goroutine of ours (its stream's receiver; gRPC keeps one more per
// stream); all sending is done by one scheduler goroutine per connection.
// Batches are encoded by hand (wire.go), so the generator spends little CPU
// of the machine it measures. 50,000 hosts take about 1.1 GB
// (BENCHMARKS.md).
//
// Timestamps: with Interval >= 1 s a snapshot carries the wall clock's
// second. Faster intervals, and Interval 0 (each host sends as fast as its
// window allows, for saturation benchmarks), move data time one second per
// snapshot starting far enough in the past that it never passes now, so
// no two snapshots of a host share a key.
//
// Concurrency: a Generator runs once; Stats may be called at any time.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Config describes a run. Zero fields take the defaults noted.
type Config struct {
	Brokers  []string      // gRPC addresses; connections are spread over them
	Hosts    int           // simulated hosts, each with its own stream
	Interval time.Duration // per host; 0 sends as fast as the window allows
	Duration time.Duration // how long to generate; 0 until ctx ends
	Metrics  int           // per snapshot; default 50
	Conns    int           // gRPC connections; default one per 1000 hosts (1 … 64)
	Window   int           // unacknowledged batches per host; default 8 (the agent's)
	MaxBatch int           // snapshots per batch when catching up; default 64
	Backlog  int           // snapshots a host keeps unsent before dropping the oldest; default 1024
	Drain    time.Duration // wait for outstanding acks after generating; default 10s
	Prefix   string        // host ids are Prefix-00001 …; default "lg"
	// Stamp sets the first metric's value (cpu.usage_percent) of every
	// snapshot to the time it was generated, in Unix milliseconds, so a
	// reader downstream (bench's end-to-end latency) can tell how long the
	// sample took to reach it. The values are then not plausible percents.
	Stamp bool

	// OnAck, when set, is called for every acknowledged batch with its
	// host and snapshot timestamps (from many goroutines at once).
	OnAck func(hostID string, timestamps []int64)
	// OnFlowControl, when set, is called for every FlowControl received.
	OnFlowControl func(hostID string, fc *monitorpb.FlowControl)

	// DialOptions carry the transport credentials (TLS to a broker with
	// grpc_tls); default plaintext.
	DialOptions []grpc.DialOption
	// Token, when set, returns the credential a host's stream presents
	// ("authorization: Bearer <token>"): its agent token for a broker with
	// auth.agent_secrets (grpcauth.Mint), computed once per host.
	Token func(hostID string) string
}

func (c Config) withDefaults() Config {
	if c.Metrics <= 0 {
		c.Metrics = 50
	}
	if c.Conns <= 0 {
		c.Conns = min(64, max(1, (c.Hosts+999)/1000))
	}
	c.Conns = min(c.Conns, max(1, c.Hosts))
	if c.Window <= 0 {
		c.Window = 8
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 64
	}
	if c.Backlog <= 0 {
		c.Backlog = 1024
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	if c.Prefix == "" {
		c.Prefix = "lg"
	}
	return c
}

// Result is what a run did. Rates are over the time from the start of
// generation to the last ack.
type Result struct {
	Hosts         int     `json:"hosts"`
	Conns         int     `json:"conns"`
	Metrics       int     `json:"metrics"`
	IntervalMS    float64 `json:"interval_ms"`
	ElapsedS      float64 `json:"elapsed_s"`
	Generated     uint64  `json:"generated"`      // snapshots made
	Sent          uint64  `json:"sent"`           // snapshots sent at least once
	Acked         uint64  `json:"acked"`          // snapshots acknowledged
	Samples       uint64  `json:"samples"`        // samples acknowledged
	Batches       uint64  `json:"batches"`        // batches acknowledged
	Resent        uint64  `json:"resent_batches"` // batches sent again (flow control, reconnects)
	SnapshotsPerS float64 `json:"snapshots_per_s"`
	SamplesPerS   float64 `json:"samples_per_s"`
	AckP50MS      float64 `json:"ack_p50_ms"`
	AckP99MS      float64 `json:"ack_p99_ms"`
	AckMaxMS      float64 `json:"ack_max_ms"`
	Errors        uint64  `json:"errors"` // stream failures and protocol errors
	Rejected      uint64  `json:"rejected"`
	FlowControls  uint64  `json:"flow_control"`
	Reconnects    uint64  `json:"reconnects"`
	Lost          uint64  `json:"lost"`    // sent but never acknowledged by the end
	Unsent        uint64  `json:"unsent"`  // made but never sent by the end
	Dropped       uint64  `json:"dropped"` // backlog overflow (an agent's buffer drop)
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	PeakHeapMB    float64 `json:"peak_heap_mb"`
	Goroutines    int     `json:"peak_goroutines"`
}

// String is the one-line summary bin/loadgen prints.
func (r Result) String() string {
	return fmt.Sprintf("hosts=%d conns=%d metrics=%d interval=%s elapsed=%.1fs acked=%d snapshots/s=%.0f samples/s=%.0f ack_p50=%.2fms ack_p99=%.2fms errors=%d rejected=%d flow_control=%d reconnects=%d resent=%d lost=%d unsent=%d dropped=%d peak_rss=%.0fMB goroutines=%d",
		r.Hosts, r.Conns, r.Metrics, time.Duration(r.IntervalMS*float64(time.Millisecond)), r.ElapsedS, r.Acked, r.SnapshotsPerS, r.SamplesPerS,
		r.AckP50MS, r.AckP99MS, r.Errors, r.Rejected, r.FlowControls, r.Reconnects, r.Resent, r.Lost, r.Unsent, r.Dropped, r.PeakRSSMB, r.Goroutines)
}

// Generator is one load run. Create it with New, start it with Run.
type Generator struct {
	cfg      Config
	log      *slog.Logger
	defs     []metricDef
	tags     map[string]string
	enc      *encoder
	snapSize atomic.Int64 // bytes of an encoded snapshot, for allocation
	codec    rawCodec
	hosts    []*host
	conns    []*conn
	tsStart  int64
	saturate bool

	generating atomic.Bool
	closing    atomic.Bool
	start      time.Time    // set by Run before the schedulers start
	startNS    atomic.Int64 // start, for Stats
	lastAck    atomic.Int64 // unix nanos

	generated, sent, acked, samples, batches, resent  atomic.Uint64
	errs, rejected, flowControls, reconnects, dropped atomic.Uint64
	latency                                           histogram
	peakRSS, peakHeap                                 atomic.Uint64
	peakGoroutines                                    atomic.Int64
	errLog                                            atomic.Int64 // unix seconds of the last logged stream error
}

// New checks cfg and prepares the hosts; nothing connects before Run.
func New(cfg Config, logger *slog.Logger) (*Generator, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("loadgen: no broker address")
	}
	if cfg.Hosts < 1 || cfg.Hosts > 1_000_000 {
		return nil, fmt.Errorf("loadgen: %d hosts; want 1 … 1000000", cfg.Hosts)
	}
	if cfg.Interval < 0 || cfg.Duration < 0 {
		return nil, errors.New("loadgen: interval and duration must not be negative")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Generator{cfg: cfg, log: logger, defs: catalog(cfg.Metrics), tags: map[string]string{"env": "loadgen"}}
	g.saturate = cfg.Interval == 0
	g.enc = newEncoder(g.defs, g.tags)
	codec, err := newRawCodec()
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	g.codec = codec
	now := time.Now().Unix()
	g.tsStart = now
	switch {
	case g.saturate || cfg.Duration == 0 && cfg.Interval < time.Second:
		// Unknown count: start 5 days back, inside the 7-day retention.
		g.tsStart = now - 5*24*3600
	case cfg.Interval < time.Second:
		g.tsStart = now - int64(math.Ceil(float64(cfg.Duration)/float64(cfg.Interval))) - 60
	}
	width := len(strconv.Itoa(cfg.Hosts))
	for i := 0; i < cfg.Hosts; i++ {
		id := fmt.Sprintf("%s-%0*d", cfg.Prefix, max(width, 5), i+1)
		if err := storage.ValidateHostID(id); err != nil {
			return nil, fmt.Errorf("loadgen: prefix %q: %w", cfg.Prefix, err)
		}
		h := &host{g: g, id: id, index: i, r: rng(uint64(i)*0x9E3779B97F4A7C15 + 1), lastTS: g.tsStart - 1, nextSeq: 1}
		if cfg.Token != nil {
			h.token = cfg.Token(id)
		}
		h.vals = make([]float64, len(g.defs))
		for j := range g.defs {
			h.vals[j] = g.defs[j].initial(&h.r)
		}
		g.hosts = append(g.hosts, h)
	}
	g.latency.init()
	g.snapSize.Store(int64(len(g.enc.snapshot(nil, g.hosts[0].id, now, g.hosts[0].vals))))
	return g, nil
}

// Hosts returns the simulated host ids.
func (g *Generator) Hosts() []string {
	out := make([]string, len(g.hosts))
	for i, h := range g.hosts {
		out[i] = h.id
	}
	return out
}

// Run connects, opens every host's stream, generates for Duration (or
// until ctx ends), waits up to Drain for the outstanding acks, closes the
// streams and returns the result. The error is non-nil only when the run
// could not start.
func (g *Generator) Run(ctx context.Context) (Result, error) {
	streamCtx, cancelStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelStreams()
	for i := 0; i < g.cfg.Conns; i++ {
		addr := g.cfg.Brokers[i%len(g.cfg.Brokers)]
		dial := g.cfg.DialOptions
		if len(dial) == 0 {
			dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		}
		cc, err := grpc.NewClient(addr, dial...)
		if err != nil {
			for _, c := range g.conns {
				c.cc.Close()
			}
			return Result{}, fmt.Errorf("loadgen: connect to broker %s: %w", addr, err)
		}
		g.conns = append(g.conns, &conn{
			g: g, cc: cc, client: monitorpb.NewMonitorServiceClient(cc),
			ready: make(chan *host, g.cfg.Hosts/g.cfg.Conns+2), closeC: make(chan struct{}, 1),
		})
	}
	defer func() {
		for _, c := range g.conns {
			c.cc.Close()
		}
	}()
	for i, h := range g.hosts {
		h.conn = g.conns[i%len(g.conns)]
		h.conn.hosts = append(h.conn.hosts, h)
	}

	// Open every stream before the clock starts.
	var receivers sync.WaitGroup
	opened := make(chan struct{}, len(g.hosts))
	for _, h := range g.hosts {
		receivers.Add(1)
		go func() {
			defer receivers.Done()
			h.receive(streamCtx, opened)
		}()
	}
	for range g.hosts {
		select {
		case <-opened:
		case <-ctx.Done():
			cancelStreams()
			receivers.Wait()
			return g.Stats(), fmt.Errorf("loadgen: opening streams: %w", ctx.Err())
		}
	}

	g.start = time.Now()
	g.lastAck.Store(g.start.UnixNano())
	g.startNS.Store(g.start.UnixNano())
	g.generating.Store(true)
	monCtx, stopMon := context.WithCancel(context.Background())
	monDone := make(chan struct{})
	go func() {
		defer close(monDone)
		g.monitor(monCtx)
	}()
	schedCtx, stopSched := context.WithCancel(context.Background())
	var scheds sync.WaitGroup
	for _, c := range g.conns {
		scheds.Add(1)
		go func() {
			defer scheds.Done()
			c.run(schedCtx)
		}()
	}

	genCtx := ctx
	if g.cfg.Duration > 0 {
		var cancel context.CancelFunc
		genCtx, cancel = context.WithTimeout(ctx, g.cfg.Duration)
		defer cancel()
	}
	<-genCtx.Done()
	g.generating.Store(false)
	g.log.Info("loadgen: generation ended; waiting for outstanding acks", "max_wait", g.cfg.Drain)
	deadline := time.Now().Add(g.cfg.Drain)
	for time.Now().Before(deadline) && g.outstanding() > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	// Close: each scheduler half-closes its hosts' streams; the brokers
	// answer what is in flight and end them.
	g.closing.Store(true)
	for _, c := range g.conns {
		c.kick()
	}
	done := make(chan struct{})
	go func() {
		receivers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cancelStreams()
		<-done
	}
	stopSched()
	scheds.Wait()
	for _, h := range g.hosts {
		h.stopTimer()
	}
	stopMon()
	<-monDone
	g.sample()
	return g.Stats(), nil
}

// outstanding counts snapshots not yet acknowledged (sent or not).
func (g *Generator) outstanding() int {
	n := 0
	for _, h := range g.hosts {
		h.mu.Lock()
		n += len(h.backlog)
		for _, b := range h.window {
			n += b.snaps
		}
		h.mu.Unlock()
	}
	return n
}

// Stats returns the counters so far.
func (g *Generator) Stats() Result {
	r := Result{
		Hosts: len(g.hosts), Conns: g.cfg.Conns, Metrics: g.cfg.Metrics,
		IntervalMS: float64(g.cfg.Interval) / float64(time.Millisecond),
		Generated:  g.generated.Load(), Sent: g.sent.Load(), Acked: g.acked.Load(), Samples: g.samples.Load(),
		Batches: g.batches.Load(), Resent: g.resent.Load(), Errors: g.errs.Load(), Rejected: g.rejected.Load(),
		FlowControls: g.flowControls.Load(), Reconnects: g.reconnects.Load(), Dropped: g.dropped.Load(),
		PeakRSSMB: float64(g.peakRSS.Load()) / mib, PeakHeapMB: float64(g.peakHeap.Load()) / mib,
		Goroutines: int(g.peakGoroutines.Load()),
	}
	if start := g.startNS.Load(); start != 0 {
		el := time.Duration(g.lastAck.Load() - start)
		r.ElapsedS = el.Seconds()
		if el > 0 {
			r.SnapshotsPerS = float64(r.Acked) / el.Seconds()
			r.SamplesPerS = float64(r.Samples) / el.Seconds()
		}
	}
	r.AckP50MS = g.latency.quantile(0.50).Seconds() * 1000
	r.AckP99MS = g.latency.quantile(0.99).Seconds() * 1000
	r.AckMaxMS = g.latency.max().Seconds() * 1000
	for _, h := range g.hosts {
		h.mu.Lock()
		r.Unsent += uint64(len(h.backlog))
		for _, b := range h.window {
			r.Lost += uint64(b.snaps)
		}
		h.mu.Unlock()
	}
	return r
}

// monitor samples memory once a second.
func (g *Generator) monitor(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.sample()
		if time.Since(last) >= 5*time.Second {
			last = time.Now()
			s := g.Stats()
			g.log.Info("loadgen progress", "acked", s.Acked, "snapshots_per_s", int(s.SnapshotsPerS), "ack_p99_ms", s.AckP99MS,
				"flow_control", s.FlowControls, "errors", s.Errors, "rss_mb", int(s.PeakRSSMB))
		}
	}
}

func (g *Generator) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	storeMax(&g.peakHeap, ms.HeapInuse+ms.StackInuse)
	if rss := readRSS(); rss > 0 {
		storeMax(&g.peakRSS, rss)
	}
	n := int64(runtime.NumGoroutine())
	for {
		old := g.peakGoroutines.Load()
		if n <= old || g.peakGoroutines.CompareAndSwap(old, n) {
			break
		}
	}
}

func storeMax(a *atomic.Uint64, v uint64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// readRSS is the process's resident set in bytes (Linux; 0 elsewhere).
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// logStreamError logs at most one stream error per second; all are counted.
func (g *Generator) logStreamError(hostID string, err error) {
	g.errs.Add(1)
	now := time.Now().Unix()
	if last := g.errLog.Load(); now > last && g.errLog.CompareAndSwap(last, now) {
		g.log.Warn("loadgen: stream failed; reconnecting", "host", hostID, "err", err)
	}
}
