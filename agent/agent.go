// Package agent is the monitoring agent as a library: it collects this
// host's metrics every interval into a snapshot, holds the snapshots in a
// bounded buffer, and streams them to a broker, keeping each one until the
// broker acknowledges it (see internal/uplink for the protocol side).
//
// Startup: New validates the configuration and builds the collectors, the
// buffer and the uplink; Run starts the uplink (register, heartbeats, ingest
// stream) and then the collection loop, whose ticks are aligned to the
// interval (a 5 s interval collects at :00, :05, …); a snapshot's timestamp
// is the Unix second of its tick.
//
// Shutdown, when Run's ctx ends, in this order:
//  1. stop collecting: no new round starts, a round in progress is
//     abandoned, and collector calls still running get up to
//     collector_timeout to return (a call stuck in the kernel is left
//     behind and logged);
//  2. flush: the uplink keeps sending what the buffer holds, reconnecting if
//     need be, and waits for the acks, up to shutdown_timeout in all;
//  3. close the stream: CloseSend, then wait for the broker to end it;
//  4. return, after logging how many snapshots were left unacknowledged
//     (they are lost; Stats counts them as dropped for "shutdown").
//
// Concurrency: Run is called once. Stats is safe from any goroutine.
package agent

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	"github.com/monitorhq/monitor/agent/internal/buffer"
	"github.com/monitorhq/monitor/agent/internal/collector"
	"github.com/monitorhq/monitor/agent/internal/uplink"
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
)

// Drop reasons in Stats.Dropped.
const (
	DropBufferFull = "buffer_full" // the buffer was full; the oldest snapshot made room
	DropShutdown   = "shutdown"    // still unacknowledged when shutdown_timeout ran out
)

// Agent collects and ships one host's metrics.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	buf    *buffer.Buffer
	runner *collector.Runner
	up     *uplink.Uplink

	// ticks, when set (tests), replaces the aligned interval ticker.
	ticks <-chan time.Time

	collected   atomic.Uint64
	emptyRounds atomic.Uint64
	leftUnacked atomic.Uint64
}

// New validates cfg and builds the agent. It opens no connection.
func New(cfg Config, logger *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:    cfg,
		log:    logger,
		buf:    buffer.New(cfg.BufferSize),
		runner: collector.NewRunner(collectors(cfg.Collectors), cfg.CollectorTimeout.D(), logger),
	}
	up, err := uplink.New(a.uplinkConfig(), a.buf, a.hostInfo, logger)
	if err != nil {
		return nil, err
	}
	a.up = up
	return a, nil
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
	}
}

func collectors(c CollectorsConfig) []collector.Collector {
	var out []collector.Collector
	if c.CPU {
		out = append(out, collector.NewCPU())
	}
	if c.Memory {
		out = append(out, collector.NewMemory())
	}
	if c.Disk {
		out = append(out, collector.NewDisk())
	}
	if c.Network {
		out = append(out, collector.NewNetwork())
	}
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

// Run collects and ships until ctx ends, then shuts down in the order of
// the package comment. It returns nil after a shutdown, whether or not
// everything was acknowledged (the count is logged and in Stats).
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("agent starting", "host_id", a.cfg.HostID, "brokers", a.up.Order(), "interval", a.cfg.Interval,
		"buffer_size", a.cfg.BufferSize, "version", Version)
	upCtx, stopUplink := context.WithCancel(context.WithoutCancel(ctx))
	defer stopUplink()
	upDone := make(chan int, 1)
	go func() { upDone <- a.up.Run(upCtx) }()

	a.collect(ctx)

	// 1. Collectors: give calls still running their deadline to return.
	wctx, cancel := context.WithTimeout(context.Background(), a.cfg.CollectorTimeout.D())
	if stuck, err := a.runner.Wait(wctx); err != nil {
		a.log.Warn("collector calls still running at shutdown; leaving them", "count", stuck)
	}
	cancel()

	// 2 and 3. Flush and close: the uplink drains when its context ends.
	a.log.Info("flushing buffered snapshots", "buffered", a.buf.Len(), "timeout", a.cfg.ShutdownTimeout)
	stopUplink()
	left := <-upDone
	a.leftUnacked.Store(uint64(left))
	if left > 0 {
		a.log.Warn("agent stopped with snapshots unacknowledged; they are lost", "unacknowledged", left)
	} else {
		a.log.Info("agent stopped; every snapshot was acknowledged", "acknowledged", a.up.Stats().Acked)
	}
	return nil
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
			a.log.Debug("round produced no metrics; no snapshot", "tick", at)
			continue
		}
		snap := &monitorpb.Snapshot{HostId: a.cfg.HostID, Timestamp: at.Unix(), Tags: maps.Clone(a.cfg.Labels), Metrics: metrics}
		a.collected.Add(1)
		switch dropped := a.buf.Push(snap); {
		case dropped && !dropping:
			a.log.Warn("buffer full; dropping the oldest snapshots until the broker catches up", "buffer_size", a.cfg.BufferSize)
			dropping = true
		case !dropped && dropping:
			a.log.Info("buffer has room again", "dropped_total", a.buf.Dropped())
			dropping = false
		}
	}
}

// nextTick returns the first multiple of interval (since the Unix epoch)
// after now.
func nextTick(now time.Time, interval time.Duration) time.Time {
	return now.Truncate(interval).Add(interval)
}

// CollectorStats are one collector's failure counters.
type CollectorStats struct {
	Errors   uint64 // calls that returned an error
	Timeouts uint64 // calls that missed collector_timeout
	Skips    uint64 // rounds skipped because the previous call was still running
}

// Stats are the agent's counters since New.
type Stats struct {
	Collected    uint64            // snapshots put into the buffer
	Acked        uint64            // snapshots acknowledged by a broker
	Dropped      map[string]uint64 // snapshots lost, by reason (DropBufferFull, DropShutdown)
	Rejected     uint64            // items the broker refused (each also acked)
	EmptyRounds  uint64            // rounds in which no collector returned metrics
	Collectors   map[string]CollectorStats
	FlowControls uint64 // FlowControl messages from brokers
	Reconnects   uint64 // broker connections lost or refused
	Buffered     int    // snapshots held now (unsent or unacknowledged)
	Connected    bool   // a stream to a broker is up now
	Broker       string // the broker of the current or last stream
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
	s := Stats{
		Collected:    a.collected.Load(),
		Acked:        up.Acked,
		Dropped:      map[string]uint64{DropBufferFull: a.buf.Dropped(), DropShutdown: a.leftUnacked.Load()},
		Rejected:     up.Rejected,
		EmptyRounds:  a.emptyRounds.Load(),
		Collectors:   map[string]CollectorStats{},
		FlowControls: up.FlowControls,
		Reconnects:   up.Reconnects,
		Buffered:     a.buf.Len(),
		Connected:    up.Connected,
		Broker:       up.Broker,
	}
	for name, c := range a.runner.Stats() {
		s.Collectors[name] = CollectorStats(c)
	}
	return s
}

// CollectOnce reads every enabled collector twice, onceWindow apart (rates
// need two readings), and returns the second reading as a snapshot stamped
// now. It is what `agent -once` prints. Only cfg's host id, labels,
// collectors and collector_timeout are used.
func CollectOnce(ctx context.Context, cfg Config, logger *slog.Logger) (*monitorpb.Snapshot, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := collector.NewRunner(collectors(cfg.Collectors), cfg.CollectorTimeout.D(), logger)
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
