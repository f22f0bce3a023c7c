// Package agent is the monitoring agent as a library: it collects this
// host's metrics every interval into a snapshot, passes the snapshot
// through a bounded lock-free ring to the spool (an on-disk log), and
// streams the spool to a broker, keeping each snapshot until the broker
// acknowledges it as stored (see docs/agent.md for the whole path).
//
//	collectors ──► queue (C11 ring) ──► pump ──► spool (disk) ──► uplink ──► broker
//	   Run's loop      never blocks      fsync       acked → deleted
//
// Startup: New validates the configuration, opens the spool (indexing what
// a previous run left unacknowledged, which is sent first), builds the
// collectors, the ring, the uplink and (follow_membership) the membership
// watcher, and binds the optional HTTP listener (/metrics, /healthz). Run
// starts the HTTP server, the uplink (register, heartbeats, ingest stream),
// the membership watcher (which feeds the cluster's broker list to the
// uplink) and the pump, takes one priming reading (so the
// first snapshot already has rates), then runs the collection loop, whose
// ticks are aligned to the interval (a 5 s interval collects at :00, :05,
// …); a snapshot's timestamp is the Unix second of its tick.
//
// Shutdown, when Run's ctx ends, in this order:
//  1. stop collecting: no new round starts, a round in progress is
//     abandoned, and collector calls still running get up to
//     collector_timeout to return (a call stuck in the kernel is left
//     behind and logged);
//  2. drain the ring into the spool;
//  3. flush: the uplink keeps sending what the spool holds, reconnecting if
//     need be, and waits for the acks, up to shutdown_timeout in all, then
//     closes the stream (CloseSend, then waits for the broker to end it);
//     the membership watcher runs until the uplink is done, then stops;
//  4. stop the HTTP server;
//  5. close the spool: what is still unacknowledged stays on disk for the
//     next start (with data_dir empty it is lost and counted as dropped
//     for "shutdown").
//
// Concurrency: Run is called once. Stats and Gatherer are safe from any
// goroutine.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/monitorhq/monitor/agent/internal/c"
	"github.com/monitorhq/monitor/agent/internal/collector"
	"github.com/monitorhq/monitor/agent/internal/queue"
	"github.com/monitorhq/monitor/agent/internal/spool"
	"github.com/monitorhq/monitor/agent/internal/uplink"
	"github.com/monitorhq/monitor/pkg/membership"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Version is the agent version sent at registration and in Hello.
const Version = "0.1.0-dev"

// Fixed timings that are not worth a config key.
const (
	// rpcTimeout bounds every unary RPC (register, heartbeat) and each send
	// on the ingest stream.
	rpcTimeout = 5 * time.Second
	// ackTimeout is how long outstanding batches may go without an ack
	// before the stream is taken for dead and reopened.
	ackTimeout = 30 * time.Second
	// onceWindow is how far apart CollectOnce's two readings are, so rates
	// and CPU percentages have something to compare with.
	onceWindow = time.Second
	// httpShutdown bounds the HTTP server's graceful stop.
	httpShutdown = 2 * time.Second
)

// Reasons for dropped snapshots, the keys of Stats.Dropped.
const (
	DropRingFull     = queue.DropRingFull       // every ring slot taken: the oldest snapshot went
	DropRingBytes    = queue.DropRingBytes      // over ring_max_bytes with nothing left to strip: the oldest went
	DropSpoolFull    = spool.DropFull           // spool_max_bytes reached: its oldest segment went
	DropSpoolCorrupt = spool.DropCorrupt        // a spool record was torn or failed its checksum
	DropShutdown     = "shutdown"               // memory-only spool (data_dir empty): unacknowledged at shutdown
	DropLowPriority  = queue.DropLowPriority    // (metrics) LOW metrics stripped from queued snapshots
	DropNormPriority = queue.DropNormalPriority // (metrics) NORMAL metrics stripped
)

// Agent collects and ships one host's metrics.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	queue  *queue.Queue
	spool  *spool.Spool
	runner *collector.Runner
	up     *uplink.Uplink
	// members follows the cluster's broker list (nil: follow_membership
	// off); Run feeds its updates to up.
	members *membership.Watcher

	reg         *prometheus.Registry
	collectTime *prometheus.HistogramVec
	sendLatency prometheus.Histogram
	httpLis     net.Listener

	// ticks, when set (tests), replaces the aligned interval ticker.
	ticks <-chan time.Time

	started     time.Time
	collected   atomic.Uint64
	emptyRounds atomic.Uint64
	leftUnacked atomic.Uint64 // memory-only spool: lost at shutdown
	lastLatency atomic.Int64  // ns, of the latest acknowledged batch
	lastRound   atomic.Int64  // Unix ns of the latest finished round
	closeOnce   sync.Once
}

// New validates cfg and builds the agent: it opens the spool and binds the
// HTTP listener (if any), but opens no broker connection.
func New(cfg Config, logger *slog.Logger) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: logger, started: time.Now()}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.queue, err = queue.New(cfg.RingSize, int64(cfg.RingMaxBytes)); err != nil {
		return nil, fmt.Errorf("build the ring: %w", err)
	}
	if a.spool, err = spool.Open(spool.Options{Dir: cfg.DataDir, MaxBytes: int64(cfg.SpoolMaxBytes)}, logger); err != nil {
		return nil, fmt.Errorf("open the spool in %q (data_dir): %w", cfg.DataDir, err)
	}
	a.reg = prometheus.NewRegistry()
	a.registerMetrics()
	a.runner = collector.NewRunner(collectors(cfg), cfg.CollectorTimeout.D(), logger, a.observeCollect)
	dial, err := cfg.dialOptions()
	if err != nil {
		return nil, fmt.Errorf("broker credentials: %w", err)
	}
	upCfg := a.uplinkConfig()
	upCfg.DialOptions = dial
	if a.up, err = uplink.New(upCfg, a.spool, a.hostInfo, logger); err != nil {
		return nil, err
	}
	if cfg.FollowMembership {
		opts := membership.Options{Retry: cfg.ReconnectMinBackoff.D(), Logger: logger, DialOptions: dial}
		if a.members, err = membership.New(cfg.Brokers, opts); err != nil {
			return nil, fmt.Errorf("follow broker membership: %w", err)
		}
	}
	if cfg.HTTPListen != "" {
		if a.httpLis, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return nil, fmt.Errorf("listen on http_listen %s: %w", cfg.HTTPListen, err)
		}
	}
	return a, nil
}

// close releases the listener and the spool (its lock and files); Run
// calls it at its end. The ring's C memory stays until the Agent is
// garbage collected, so Stats keeps working after Run.
func (a *Agent) close() {
	a.closeOnce.Do(func() {
		if a.httpLis != nil {
			a.httpLis.Close()
		}
		if a.spool != nil {
			a.spool.Close()
		}
	})
}

func (a *Agent) uplinkConfig() uplink.Config {
	c := a.cfg
	return uplink.Config{
		HostID:             c.HostID,
		Brokers:            c.Brokers,
		Version:            Version,
		BatchMaxSnapshots:  c.BatchMaxSnapshots,
		MaxInflightBatches: c.MaxInflightBatches,
		HeartbeatInterval:  c.HeartbeatInterval.D(),
		MinBackoff:         c.ReconnectMinBackoff.D(),
		MaxBackoff:         c.ReconnectMaxBackoff.D(),
		ShutdownTimeout:    c.ShutdownTimeout.D(),
		RPCTimeout:         rpcTimeout,
		AckTimeout:         ackTimeout,
		ObserveAck:         a.observeAck,
	}
}

// collectors builds the enabled collectors in a fixed order (the order of
// metrics in a snapshot).
func collectors(cfg Config) []collector.Collector {
	p := collector.Paths{Proc: cfg.ProcPath, Sys: cfg.SysPath}
	w := cfg.RateWindow.D()
	on := cfg.Collectors
	var out []collector.Collector
	add := func(enabled bool, c collector.Collector) {
		if enabled {
			out = append(out, c)
		}
	}
	add(on.CPU, collector.NewCPU(p, w))
	add(on.Memory, collector.NewMemory(p, w))
	add(on.Filesystem, collector.NewFilesystem(p))
	add(on.Disk, collector.NewDisk(p, w))
	add(on.Network, collector.NewNetwork(p, w))
	add(on.TCP, collector.NewTCP(p, w))
	add(on.TCPStates, collector.NewTCPStates(p))
	add(on.Processes, collector.NewProcesses(p, cfg.TopProcesses, w))
	add(on.System, collector.NewSystem(p))
	add(on.Sensors, collector.NewSensors(p))
	return out
}

func (a *Agent) hostInfo(ctx context.Context) (*monitorpb.HostInfo, error) {
	h, err := collector.HostInfo(ctx)
	if err != nil {
		return nil, err
	}
	h.HostId = a.cfg.HostID
	h.Labels = maps.Clone(a.cfg.Labels)
	h.AgentVersion = Version
	return h, nil
}

// HTTPAddr returns the address of the /metrics listener, or "" when
// http_listen is empty.
func (a *Agent) HTTPAddr() string {
	if a.httpLis == nil {
		return ""
	}
	return a.httpLis.Addr().String()
}

// Gatherer returns the registry behind /metrics, for embedding the agent
// (cmd/monitor) without its own listener.
func (a *Agent) Gatherer() prometheus.Gatherer { return a.reg }

// Run collects and ships until ctx ends, then shuts down in the order of
// the package comment. It returns nil after a shutdown, whether or not
// everything was acknowledged (the count is logged and in Stats), or an
// error if the HTTP server failed.
func (a *Agent) Run(ctx context.Context) error {
	defer a.close()
	head, tail := a.spool.Bounds()
	a.log.Info("agent starting", "host_id", a.cfg.HostID, "brokers", a.up.Order(), "follow_membership", a.members != nil, "interval", a.cfg.Interval,
		"ring", c.Implementation, "ring_size", a.cfg.RingSize, "data_dir", a.cfg.DataDir, "spooled", tail-head,
		"http", a.HTTPAddr(), "version", Version)

	httpErr := make(chan error, 1)
	var srv *http.Server
	if a.httpLis != nil {
		srv = &http.Server{Handler: a.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(a.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				httpErr <- fmt.Errorf("serve http on %s: %w", a.httpLis.Addr(), err)
			}
			close(httpErr)
		}()
	} else {
		close(httpErr)
	}

	upCtx, stopUplink := context.WithCancel(context.WithoutCancel(ctx))
	defer stopUplink()
	upDone := make(chan int, 1)
	go func() { upDone <- a.up.Run(upCtx) }()

	// The membership watcher outlives ctx until the uplink is done: a
	// drain may still need to move to another broker.
	memCtx, stopMembers := context.WithCancel(context.WithoutCancel(ctx))
	var memWG sync.WaitGroup
	defer func() {
		stopMembers()
		memWG.Wait()
	}()
	if a.members != nil {
		memWG.Add(2)
		go func() {
			defer memWG.Done()
			_ = a.members.Run(memCtx) // returns when memCtx ends
		}()
		go func() {
			defer memWG.Done()
			a.followMembers(memCtx)
		}()
	}

	pumpStop := make(chan struct{})
	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		a.pump(pumpStop)
	}()

	a.runner.Collect(ctx) // priming reading: rates need a previous one
	a.collect(ctx)

	// 1. Collectors: give calls still running their deadline to return.
	wctx, cancel := context.WithTimeout(context.Background(), a.cfg.CollectorTimeout.D())
	if stuck, err := a.runner.Wait(wctx); err != nil {
		a.log.Warn("collector calls still running at shutdown; leaving them", "count", stuck)
	}
	cancel()

	// 2. The ring into the spool.
	close(pumpStop)
	<-pumpDone

	// 3. Flush and close the stream: the uplink drains when its context ends.
	a.log.Info("flushing spooled snapshots", "spooled", a.spool.Len(), "timeout", a.cfg.ShutdownTimeout)
	stopUplink()
	left := <-upDone
	stopMembers()
	memWG.Wait()

	// 4. HTTP.
	var err error
	if srv != nil {
		hctx, cancel := context.WithTimeout(context.Background(), httpShutdown)
		if e := srv.Shutdown(hctx); e != nil {
			srv.Close()
		}
		cancel()
		err = <-httpErr
	}

	// 5. The spool.
	durable := a.spool.Durable()
	switch {
	case left == 0:
		a.log.Info("agent stopped; every snapshot was acknowledged", "acknowledged", a.up.Stats().Acked)
	case durable:
		a.log.Warn("agent stopped with snapshots unacknowledged; they stay in the spool and are sent first at the next start",
			"unacknowledged", left, "data_dir", a.cfg.DataDir)
	default:
		a.leftUnacked.Store(uint64(left))
		a.log.Warn("agent stopped with snapshots unacknowledged and no durable spool; they are lost", "unacknowledged", left)
	}
	return err
}

// followMembers gives the uplink each broker list the membership watcher
// publishes, until ctx ends.
func (a *Agent) followMembers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case list := <-a.members.Updates():
			addrs := make([]string, len(list))
			for i, b := range list {
				addrs[i] = b.Addr
			}
			if err := a.up.SetBrokers(addrs); err != nil {
				a.log.Warn("cannot use the cluster's broker list", "brokers", addrs, "err", err)
			}
		}
	}
}

// pump moves snapshots from the ring to the spool until stop is closed,
// then drains the ring and returns.
func (a *Agent) pump(stop <-chan struct{}) {
	drain := func() {
		for {
			snaps := a.queue.PopBatch(a.cfg.BatchMaxSnapshots)
			if len(snaps) == 0 {
				return
			}
			if err := a.spool.Append(snaps); err != nil {
				a.log.Error("cannot spool snapshots; they are lost", "err", err)
			}
		}
	}
	for {
		select {
		case <-a.queue.Ready():
			drain()
		case <-stop:
			drain()
			return
		}
	}
}

// collect runs one round per tick until ctx ends.
func (a *Agent) collect(ctx context.Context) {
	ticks := a.ticks
	var timer *time.Timer
	if ticks == nil {
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	dropping := false
	for {
		var at time.Time
		if ticks != nil {
			select {
			case <-ctx.Done():
				return
			case at = <-ticks:
			}
		} else {
			at = nextTick(time.Now(), a.cfg.Interval.D())
			timer.Reset(time.Until(at))
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		metrics := a.runner.Collect(ctx)
		if ctx.Err() != nil {
			return // shutting down: the round is abandoned
		}
		if len(metrics) == 0 {
			a.emptyRounds.Add(1)
			a.log.Debug("round produced no host metrics; sending the agent's own", "tick", at)
		}
		a.collected.Add(1)
		metrics = a.selfMetrics(metrics)
		snap := &monitorpb.Snapshot{HostId: a.cfg.HostID, Timestamp: at.Unix(), Tags: maps.Clone(a.cfg.Labels), Metrics: metrics}
		before := a.queue.Drops()
		a.queue.Push(snap)
		a.lastRound.Store(time.Now().UnixNano())
		after := a.queue.Drops()
		switch dropped := !maps.Equal(before.Metrics, after.Metrics) || !maps.Equal(before.Snapshots, after.Snapshots); {
		case dropped && !dropping:
			a.log.Warn("ring over budget: dropping low-priority metrics, then the oldest snapshots, until the spool writer catches up",
				"ring_size", a.cfg.RingSize, "ring_max_bytes", a.cfg.RingMaxBytes, "depth", a.queue.Len())
			dropping = true
		case !dropped && dropping:
			a.log.Info("ring has room again", "dropped_snapshots", after.Snapshots, "dropped_metrics", after.Metrics)
			dropping = false
		}
	}
}

// nextTick returns the first multiple of interval (since the Unix epoch)
// after now.
func nextTick(now time.Time, interval time.Duration) time.Time {
	return now.Truncate(interval).Add(interval)
}

// CollectorStats are one collector's counters.
type CollectorStats struct {
	Errors   uint64        // calls that returned an error
	Timeouts uint64        // calls that missed collector_timeout
	Skips    uint64        // rounds skipped because the previous call was still running
	Last     time.Duration // how long its last call took
}

// Stats are the agent's counters since New, and its state now.
type Stats struct {
	Collected      uint64            // snapshots built and put into the ring
	Sent           uint64            // snapshots sent, resends included
	Acked          uint64            // snapshots acknowledged by a broker
	Dropped        map[string]uint64 // snapshots lost, by reason (the Drop… constants); every reason present
	DroppedMetrics map[string]uint64 // metrics stripped, by DropLowPriority, DropNormPriority
	Rejected       uint64            // items the broker refused (each also acked)
	EmptyRounds    uint64            // rounds in which no collector returned metrics
	Collectors     map[string]CollectorStats
	FlowControls   uint64 // FlowControl messages from brokers
	Reconnects     uint64 // broker connections lost or refused
	Moves          uint64 // streams handed over to another broker after a membership change
	BatchesSent    uint64
	Buffered       int   // snapshots held now, unacknowledged: ring + spool
	RingDepth      int   // snapshots in the ring
	RingBytes      int64 // their encoded size
	Spool          spool.Stats
	Connected      bool          // a stream to a broker is up now
	Broker         string        // the broker of the current or last stream
	SendLatency    time.Duration // send → ack of the latest acknowledged batch
}

// CollectorErrors, CollectorTimeouts and CollectorSkips sum the per
// collector counters.
func (s Stats) CollectorErrors() (n uint64) {
	for _, c := range s.Collectors {
		n += c.Errors
	}
	return n
}

// CollectorTimeouts sums Collectors[*].Timeouts.
func (s Stats) CollectorTimeouts() (n uint64) {
	for _, c := range s.Collectors {
		n += c.Timeouts
	}
	return n
}

// CollectorSkips sums Collectors[*].Skips.
func (s Stats) CollectorSkips() (n uint64) {
	for _, c := range s.Collectors {
		n += c.Skips
	}
	return n
}

// Stats returns the counters.
func (a *Agent) Stats() Stats {
	up := a.up.Stats()
	qd := a.queue.Drops()
	sp := a.spool.Stats()
	s := Stats{
		Collected:      a.collected.Load(),
		Sent:           up.SnapshotsSent,
		Acked:          up.Acked,
		Dropped:        map[string]uint64{DropShutdown: a.leftUnacked.Load()},
		DroppedMetrics: qd.Metrics,
		Rejected:       up.Rejected,
		EmptyRounds:    a.emptyRounds.Load(),
		Collectors:     map[string]CollectorStats{},
		FlowControls:   up.FlowControls,
		Reconnects:     up.Reconnects,
		Moves:          up.Moves,
		BatchesSent:    up.BatchesSent,
		RingDepth:      a.queue.Len(),
		RingBytes:      a.queue.Bytes(),
		Spool:          sp,
		Connected:      up.Connected,
		Broker:         up.Broker,
		SendLatency:    time.Duration(a.lastLatency.Load()),
	}
	maps.Copy(s.Dropped, qd.Snapshots)
	maps.Copy(s.Dropped, sp.Dropped)
	s.Buffered = s.RingDepth + int(sp.Records)
	for name, c := range a.runner.Stats() {
		s.Collectors[name] = CollectorStats(c)
	}
	return s
}

// CollectOnce reads every enabled collector twice, onceWindow apart (rates
// need two readings), and returns the second reading as a snapshot stamped
// now. It is what `agent -once` prints. Only cfg's host id, labels and
// collector keys are used: nothing is spooled or sent.
func CollectOnce(ctx context.Context, cfg Config, logger *slog.Logger) (*monitorpb.Snapshot, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := collector.NewRunner(collectors(cfg), cfg.CollectorTimeout.D(), logger, nil)
	defer func() {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.CollectorTimeout.D())
		defer cancel()
		_, _ = r.Wait(wctx)
	}()
	r.Collect(ctx)
	t := time.NewTimer(onceWindow)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
	}
	metrics := r.Collect(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(metrics) == 0 {
		return nil, errors.New("no collector returned metrics")
	}
	return &monitorpb.Snapshot{HostId: cfg.HostID, Timestamp: time.Now().Unix(), Tags: maps.Clone(cfg.Labels), Metrics: metrics}, nil
}
