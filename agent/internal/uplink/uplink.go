// Package uplink is the agent's gRPC client of a broker's MonitorService:
// it registers the host, sends heartbeats, and streams the snapshots held in
// the agent's spool as sequenced batches on the Ingest stream, releasing
// them from the spool only when the broker acknowledges them as stored.
//
// Delivery is at least once. Batches carry a sequence number that grows by
// one per batch for the life of the process (a new stream continues where
// the last one stopped, never reusing a number). At most MaxInflightBatches
// are unacknowledged at once, each of at most BatchMaxSnapshots snapshots
// and about 1 MiB; acks are cumulative. A FlowControl message
// pauses sending for retry_after_ms, then the batches from resend_from_seq
// on are sent again in order with the same numbers (go-back-N). When the
// stream fails, or no ack arrives for AckTimeout while batches are
// outstanding, the uplink reconnects with exponential backoff and full
// jitter, trying the brokers in hash.Preference(host id) order (the ring's
// choice first, then the others), and resends everything unacknowledged
// in fresh batches.
//
// Membership: SetBrokers replaces the broker list (the agent feeds it from
// pkg/membership) and rebuilds the order. When the ring's choice for the
// host changes to a broker other than the current one, or the current
// broker left the list, the session is handed over cleanly: no new batch is
// sent, the batches in flight are acknowledged (or resent and acknowledged
// after a FlowControl), the stream is half-closed, and the uplink connects
// to the new first choice at once, which continues the sequence. Nothing is
// sent twice and nothing held is dropped. A change that leaves the ring's
// choice where it was (or a failover broker still listed) keeps the stream.
// Failover goes through the listed brokers in order, then through the
// configured ones (Config.Brokers) that are not listed: a cluster that
// advertises addresses this host cannot reach does not cut it off.
//
// Shutdown: when Run's ctx ends, the uplink keeps sending (and reconnecting
// if need be) until the spool is empty or ShutdownTimeout has passed, then
// half-closes the stream and waits for the broker to end it. What is still
// unacknowledged stays in the spool.
//
// Concurrency: Run is called once; Stats, Order and SetBrokers are safe
// from any goroutine. Each connection owns two goroutines (ack receiver,
// heartbeats), both ended and waited for before the connection is closed.
package uplink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/agent/internal/spool"
	"github.com/monitorhq/monitor/pkg/hash"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Config tunes the uplink. Every duration must be positive except
// ShutdownTimeout, which may be 0 (do not wait for acks at shutdown).
type Config struct {
	HostID             string
	Brokers            []string // gRPC addresses; the order here does not matter
	Version            string   // sent in Hello
	BatchMaxSnapshots  int
	MaxInflightBatches int
	HeartbeatInterval  time.Duration
	MinBackoff         time.Duration
	MaxBackoff         time.Duration
	ShutdownTimeout    time.Duration
	RPCTimeout         time.Duration // deadline of every unary RPC and of each stream Send
	AckTimeout         time.Duration // outstanding batches with no ack for this long: reconnect
	// ObserveAck, when set, is called for every acknowledged batch with the
	// time from its (last) send to the ack.
	ObserveAck func(latency time.Duration)
	// DialOptions carry the transport and per-RPC credentials (TLS, the
	// agent token); default plaintext without credentials.
	DialOptions []grpc.DialOption
}

// HostInfoFunc returns what Register reports about the host.
type HostInfoFunc func(ctx context.Context) (*monitorpb.HostInfo, error)

// Stats are the uplink's counters since New.
type Stats struct {
	Acked         uint64 // snapshots released by acks
	SnapshotsSent uint64 // snapshots sent, resends included
	Rejected      uint64 // items the broker refused (listed in acks)
	FlowControls  uint64 // FlowControl messages received
	Reconnects    uint64 // connections lost or refused
	Moves         uint64 // streams handed over to another broker after a membership change
	BatchesSent   uint64 // batches sent, resends included
	BatchesResent uint64 // batches sent again after FlowControl
	Connected     bool   // a stream is established now
	Broker        string // the broker of the current or last stream
}

// Uplink streams the spool's snapshots to a broker.
type Uplink struct {
	cfg      Config
	log      *slog.Logger
	sp       *spool.Spool
	hostInfo HostInfoFunc

	seeds   []string // Config.Brokers: the last resort of failover
	mu      sync.Mutex
	order   []string      // guarded by mu: the brokers by ring preference for the host
	reorder chan struct{} // one slot: the order changed (SetBrokers)

	nextSeq uint64 // owned by Run's goroutine

	acked, rejected, flowControls, reconnects, moves, sent, resent, snapsSent atomic.Uint64
	connected                                                                 atomic.Bool
	broker                                                                    atomic.Pointer[string]

	rejectLog logLimiter
}

// New returns an uplink that sends sp's snapshots to cfg.Brokers.
func New(cfg Config, sp *spool.Spool, hostInfo HostInfoFunc, logger *slog.Logger) (*Uplink, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("uplink: no brokers")
	}
	order, err := preference(cfg.HostID, cfg.Brokers)
	if err != nil {
		return nil, err
	}
	return &Uplink{
		cfg:       cfg,
		log:       logger,
		sp:        sp,
		seeds:     slices.Clone(cfg.Brokers),
		order:     order,
		reorder:   make(chan struct{}, 1),
		hostInfo:  hostInfo,
		nextSeq:   1,
		rejectLog: logLimiter{every: 10 * time.Second},
	}, nil
}

// preference orders brokers by the ring's preference for hostID.
func preference(hostID string, brokers []string) ([]string, error) {
	ring, err := hash.New(brokers, hash.DefaultVirtualNodes)
	if err != nil {
		return nil, fmt.Errorf("broker ring: %w", err)
	}
	return ring.Preference(hostID), nil
}

// Order returns the brokers in the order the uplink tries them.
func (u *Uplink) Order() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.order)
}

// pick returns the broker to try next and the ring's choice (read
// together, so a session knows what "first" meant when it was chosen).
// With failed empty it is the ring's choice; else the broker after failed
// in the failover cycle (the order, then the configured brokers not in
// it), or the first when failed is in neither.
func (u *Uplink) pick(failed string) (addr, pref string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if failed == "" {
		return u.order[0], u.order[0]
	}
	cycle := slices.Clone(u.order)
	for _, s := range u.seeds {
		if !slices.Contains(cycle, s) {
			cycle = append(cycle, s)
		}
	}
	i := slices.Index(cycle, failed)
	return cycle[(i+1)%len(cycle)], u.order[0]
}

// SetBrokers replaces the broker list (gRPC addresses, in any order;
// duplicates and empty ones are ignored) and rebuilds the ring. If the
// ring's choice moved away from the broker streamed to, or that broker is
// no longer listed, the stream is handed over (see the package comment).
// An empty list is refused and the old one kept.
func (u *Uplink) SetBrokers(addrs []string) error {
	var list []string
	for _, a := range addrs {
		if a != "" && !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	if len(list) == 0 {
		return errors.New("uplink: empty broker list; keeping the current one")
	}
	order, err := preference(u.cfg.HostID, list)
	if err != nil {
		return err
	}
	u.mu.Lock()
	changed := !slices.Equal(order, u.order)
	u.order = order
	u.mu.Unlock()
	if changed {
		u.log.Info("broker ring changed", "order", order)
		select {
		case u.reorder <- struct{}{}:
		default: // a signal is pending already
		}
	}
	return nil
}

// moveReason says why a stream to addr should be handed over after the
// order changed, or "" to keep it. pref is the ring's choice the last time
// it was looked at (updated here): a failover broker is kept while the
// ring's choice stays the same.
func (u *Uplink) moveReason(addr string, pref *string) string {
	order := u.Order()
	was := *pref
	*pref = order[0]
	switch {
	case !slices.Contains(order, addr):
		return "the broker left the cluster"
	case order[0] != addr && order[0] != was:
		return "the ring of brokers moved this host"
	}
	return ""
}

// Stats returns the counters.
func (u *Uplink) Stats() Stats {
	s := Stats{
		Acked: u.acked.Load(), Rejected: u.rejected.Load(), FlowControls: u.flowControls.Load(),
		Reconnects: u.reconnects.Load(), BatchesSent: u.sent.Load(), BatchesResent: u.resent.Load(),
		SnapshotsSent: u.snapsSent.Load(), Connected: u.connected.Load(), Moves: u.moves.Load(),
	}
	if b := u.broker.Load(); b != nil {
		s.Broker = *b
	}
	return s
}

// errDrained ends a session after shutdown once everything was acked and
// the broker closed the stream; errMoved ends one handed over to another
// broker after a membership change, everything sent acknowledged.
var (
	errDrained = errors.New("drained")
	errMoved   = errors.New("handed over to another broker")
)

// Run streams until ctx ends, then drains (see the package comment) and
// returns the number of snapshots left unacknowledged in the spool.
func (u *Uplink) Run(ctx context.Context) (unacked int) {
	// life outlives ctx by at most ShutdownTimeout: the drain's deadline.
	life, cancelLife := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-life.Done():
			return
		}
		if u.sp.Len() == 0 && !u.connected.Load() {
			cancelLife() // nothing to deliver and no stream to close
			return
		}
		t := time.NewTimer(u.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelLife()
		case <-life.Done():
		}
	}()
	defer func() {
		cancelLife()
		wg.Wait()
	}()

	failures := 0 // consecutive failed connection attempts
	addr, pref := u.pick("")
	var downSince time.Time
	for {
		if ctx.Err() != nil && u.sp.Len() == 0 {
			return 0
		}
		if life.Err() != nil {
			return u.sp.Len()
		}
		healthy, err := u.session(ctx, life, addr, pref)
		if errors.Is(err, errDrained) {
			return u.sp.Len()
		}
		if life.Err() != nil {
			return u.sp.Len()
		}
		if errors.Is(err, errMoved) {
			u.moves.Add(1)
			failures, downSince = 0, time.Time{}
			addr, pref = u.pick("")
			continue // a clean handover: no backoff
		}
		u.reconnects.Add(1)
		if healthy {
			u.log.Warn("broker stream lost; reconnecting", "broker", addr, "err", err)
			failures = 0
			addr, pref = u.pick("")
			downSince = time.Now()
		} else {
			failures++
			failed := addr
			addr, pref = u.pick(failed)
			if downSince.IsZero() {
				downSince = time.Now()
			}
			// A long outage logs at 1, 2, 4, 8, … failures, not every try.
			lvl := slog.LevelDebug
			if isPow2(failures) {
				lvl = slog.LevelWarn
			}
			u.log.Log(ctx, lvl, "cannot reach broker", "broker", failed, "next", addr,
				"failures", failures, "down_for", time.Since(downSince).Round(time.Millisecond), "err", err)
		}
		t := time.NewTimer(u.backoff(failures))
		select {
		case <-t.C:
		case <-u.reorder:
			// New brokers: try the ring's choice now rather than wait.
			t.Stop()
			addr, pref = u.pick("")
		case <-life.Done():
			t.Stop()
			return u.sp.Len()
		}
	}
}

func isPow2(n int) bool { return n > 0 && n&(n-1) == 0 }

// backoff returns a delay uniformly drawn from [MinBackoff, min(MaxBackoff,
// MinBackoff·2^failures)] ("full jitter" above the floor).
func (u *Uplink) backoff(failures int) time.Duration {
	lo, hi := u.cfg.MinBackoff, u.cfg.MinBackoff
	for i := 0; i < failures && hi < u.cfg.MaxBackoff; i++ {
		hi *= 2
	}
	hi = min(hi, u.cfg.MaxBackoff)
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo+1)
}

// inflight is a sent, unacknowledged batch: its sequence number, the spool
// positions [from, to) it carried, how many snapshots its last send held,
// and when that was.
type inflight struct {
	seq      uint64
	from, to uint64
	count    int
	sentAt   time.Time
}

// session connects to addr, registers, and runs one Ingest stream until it
// fails or, after ctx ended, everything is acknowledged. healthy reports
// whether the broker worked: the stream got an ack, or stayed up for at
// least MaxBackoff. A broker that accepts streams and then drops them at
// once is not healthy, so it is backed off from and failed over like one
// that refuses connections.
//
// pref is the ring's choice when addr was picked: a membership change that
// moves the ring's choice elsewhere hands the session over.
func (u *Uplink) session(ctx, life context.Context, addr, pref string) (healthy bool, err error) {
	dial := u.cfg.DialOptions
	if len(dial) == 0 {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return false, fmt.Errorf("dial broker %s: %w", addr, err)
	}
	defer conn.Close()
	client := monitorpb.NewMonitorServiceClient(conn)

	sctx, cancel := context.WithCancelCause(life)
	defer cancel(nil)
	if err := u.register(sctx, client); err != nil {
		return false, fmt.Errorf("register with broker %s: %w", addr, err)
	}
	opening := time.AfterFunc(u.cfg.RPCTimeout, func() { cancel(errors.New("opening the ingest stream timed out")) })
	stream, err := client.Ingest(sctx)
	opening.Stop()
	if err != nil {
		return false, fmt.Errorf("open ingest stream to %s: %w", addr, err)
	}
	s := &session{u: u, stream: stream, cancel: cancel, addr: addr, pref: pref}
	if err := s.send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: u.cfg.HostID, Version: u.cfg.Version}}}); err != nil {
		return false, fmt.Errorf("send hello to %s: %w", addr, err)
	}
	u.broker.Store(&addr)
	u.connected.Store(true)
	defer u.connected.Store(false)
	u.log.Info("streaming to broker", "broker", addr, "spooled", u.sp.Len(), "next_seq", u.nextSeq)

	responses := make(chan *monitorpb.IngestResponse, 16)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer func() {
		cancel(nil)
		wg.Wait()
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case responses <- resp:
			case <-sctx.Done():
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		u.heartbeats(sctx, client)
	}()

	opened := time.Now()
	err = s.run(ctx, sctx, responses, recvErr)
	if cause := context.Cause(sctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(err, cause) {
		err = fmt.Errorf("%w (%v)", err, cause)
	}
	return s.acked || time.Since(opened) >= u.cfg.MaxBackoff, err
}

func (u *Uplink) register(ctx context.Context, client monitorpb.MonitorServiceClient) error {
	rctx, cancel := context.WithTimeout(ctx, u.cfg.RPCTimeout)
	defer cancel()
	info, err := u.hostInfo(rctx)
	if err != nil {
		return fmt.Errorf("read host info: %w", err)
	}
	_, err = client.Register(rctx, &monitorpb.RegisterRequest{Host: info})
	return err
}

// heartbeats sends a heartbeat every HeartbeatInterval until ctx ends and
// registers again when the broker has forgotten the host. Failures are
// logged when the state changes, not every time.
func (u *Uplink) heartbeats(ctx context.Context, client monitorpb.MonitorServiceClient) {
	t := time.NewTicker(u.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, u.cfg.RPCTimeout)
		resp, err := client.Heartbeat(hctx, &monitorpb.HeartbeatRequest{HostId: u.cfg.HostID, Timestamp: time.Now().Unix()})
		cancel()
		if err == nil && !resp.GetRegistered() {
			u.log.Info("broker lost the registration; registering again")
			err = u.register(ctx, client)
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && !failing:
			u.log.Warn("heartbeat failed", "err", err)
			failing = true
		case err == nil && failing:
			u.log.Info("heartbeats recovered")
			failing = false
		}
	}
}

// session is one Ingest stream's sending state; run's goroutine owns it.
type session struct {
	u      *Uplink
	stream monitorpb.MonitorService_IngestClient
	cancel context.CancelCauseFunc
	addr   string // the broker
	pref   string // the ring's choice when last looked at

	window       []inflight
	nextPos      uint64 // spool position of the first snapshot not yet batched
	paused       bool   // FlowControl: wait for the timer, then resend
	resendIdx    int    // index into window to resend from when the pause ends
	lastProgress time.Time
	acked        bool // an ack arrived on this stream
}

var errSendTimeout = errors.New("send on ingest stream timed out")

// send sends one message under RPCTimeout: a broker that stops reading
// cannot block the uplink forever.
func (s *session) send(req *monitorpb.IngestRequest) error {
	t := time.AfterFunc(s.u.cfg.RPCTimeout, func() { s.cancel(errSendTimeout) })
	err := s.stream.Send(req)
	t.Stop()
	return err
}

func (s *session) sendBatch(seq uint64, snaps []*monitorpb.Snapshot) error {
	err := s.send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: &monitorpb.Batch{Seq: seq, Snapshots: snaps}}})
	if err != nil {
		return fmt.Errorf("send batch %d: %w", seq, err)
	}
	s.u.sent.Add(1)
	s.u.snapsSent.Add(uint64(len(snaps)))
	return nil
}

// fill sends new batches while the window has room.
func (s *session) fill() error {
	u := s.u
	for len(s.window) < u.cfg.MaxInflightBatches {
		items, next := u.sp.Read(s.nextPos, u.cfg.BatchMaxSnapshots, maxBatchBytes)
		if len(items) == 0 {
			s.nextPos = next
			return nil
		}
		s.nextPos = next
		seq := u.nextSeq
		u.nextSeq++
		if len(s.window) == 0 {
			s.lastProgress = time.Now()
		}
		snaps := snapshots(items)
		s.window = append(s.window, inflight{seq: seq, from: items[0].Pos, to: next, count: len(snaps), sentAt: time.Now()})
		if err := s.sendBatch(seq, snaps); err != nil {
			return err
		}
	}
	return nil
}

func snapshots(items []spool.Item) []*monitorpb.Snapshot {
	out := make([]*monitorpb.Snapshot, len(items))
	for i, it := range items {
		out[i] = it.Snap
	}
	return out
}

// maxBatchBytes keeps a batch well under gRPC's default 4 MiB message
// limit, whatever batch_max_snapshots says, on hosts with many series (a
// single larger snapshot still goes, alone).
const maxBatchBytes = 1 << 20

// resend sends the window from resendIdx on again, same numbers, same
// positions; snapshots dropped from the spool meanwhile (its cap) are left
// out (a batch may go out empty, which keeps the sequence unbroken).
func (s *session) resend() error {
	for i := s.resendIdx; i < len(s.window); i++ {
		b := &s.window[i]
		snaps := snapshots(s.u.sp.ReadRange(b.from, b.to))
		b.count, b.sentAt = len(snaps), time.Now()
		if err := s.sendBatch(b.seq, snaps); err != nil {
			return err
		}
		s.u.resent.Add(1)
	}
	s.resendIdx = len(s.window)
	s.lastProgress = time.Now()
	return nil
}

func (s *session) run(ctx, sctx context.Context, responses <-chan *monitorpb.IngestResponse, recvErr <-chan error) error {
	u := s.u
	s.nextPos, _ = u.sp.Bounds() // everything held is unacknowledged: send it all
	spoolReady := u.sp.Ready()
	ctxDone := ctx.Done()
	reorder := u.reorder
	// draining: ctx ended, deliver everything held; moving: hand over to
	// another broker once the window is acknowledged; closing: half-closed.
	draining, moving, closing := false, false, false
	var pause, closeWait <-chan time.Time
	check := max(u.cfg.AckTimeout/4, 10*time.Millisecond)
	watchdog := time.NewTicker(check)
	defer watchdog.Stop()

	for {
		if !closing && (draining && u.sp.Len() == 0 || moving && len(s.window) == 0) {
			// Everything sent is acknowledged: half-close and wait for the
			// broker to end the stream.
			if err := s.stream.CloseSend(); err != nil {
				return fmt.Errorf("close ingest stream: %w", err)
			}
			closing = true
			if moving {
				// Nothing is outstanding: a broker slow to end the stream
				// does not hold up the handover for long.
				closeWait = time.After(u.cfg.RPCTimeout)
			}
		}
		if !s.paused && !closing && !moving {
			if err := s.fill(); err != nil {
				return err
			}
		}
		select {
		case <-ctxDone:
			draining, ctxDone = true, nil
		case <-reorder:
			if closing {
				break // everything is delivered; the stream is ending anyway
			}
			if why := u.moveReason(s.addr, &s.pref); why != "" {
				moving, reorder = true, nil
				u.log.Info("handing the stream over to another broker once the batches in flight are acknowledged",
					"reason", why, "from", s.addr, "to", s.pref, "in_flight", len(s.window))
			}
		case <-closeWait:
			u.log.Debug("broker did not end the handed-over stream in time; closing it", "broker", s.addr)
			return errMoved
		case <-spoolReady:
		case resp := <-responses:
			if err := s.handle(resp, &pause); err != nil {
				return err
			}
		case err := <-recvErr:
			if closing {
				// We half-closed with everything acknowledged: however the
				// broker ends the stream, the drain (or handover) is complete.
				if !errors.Is(err, io.EOF) {
					u.log.Debug("broker ended the drained stream with an error", "err", err)
				}
				if moving {
					return errMoved
				}
				return errDrained
			}
			if errors.Is(err, io.EOF) {
				return errors.New("broker ended the ingest stream")
			}
			return fmt.Errorf("receive from ingest stream: %w", err)
		case <-pause:
			pause, s.paused = nil, false
			if err := s.resend(); err != nil {
				return err
			}
		case <-watchdog.C:
			if !s.paused && len(s.window) > 0 && time.Since(s.lastProgress) > u.cfg.AckTimeout {
				return fmt.Errorf("no ack for %s with %d batches outstanding", u.cfg.AckTimeout, len(s.window))
			}
		case <-sctx.Done():
			return context.Cause(sctx)
		}
	}
}

func (s *session) handle(resp *monitorpb.IngestResponse, pause *<-chan time.Time) error {
	u := s.u
	switch k := resp.GetKind().(type) {
	case *monitorpb.IngestResponse_Ack:
		a := k.Ack
		n := 0
		for n < len(s.window) && s.window[n].seq <= a.GetAckedSeq() {
			n++
		}
		s.acked = true
		if n > 0 {
			now := time.Now()
			for _, b := range s.window[:n] {
				u.acked.Add(uint64(b.count))
				if u.cfg.ObserveAck != nil {
					u.cfg.ObserveAck(now.Sub(b.sentAt))
				}
			}
			u.sp.Release(s.window[n-1].to)
			s.window = s.window[n:]
			s.resendIdx = max(0, s.resendIdx-n)
			s.lastProgress = time.Now()
		}
		if rej := a.GetRejections(); len(rej) > 0 {
			u.rejected.Add(uint64(len(rej)))
			if suppressed, ok := u.rejectLog.allow(time.Now()); ok {
				r := rej[0]
				u.log.Warn("broker rejected items", "count", len(rej), "suppressed_since_last_log", suppressed,
					"seq", r.GetSeq(), "host", r.GetHostId(), "timestamp", r.GetTimestamp(), "metric", r.GetMetric(), "reason", r.GetReason())
			}
		}
	case *monitorpb.IngestResponse_FlowControl:
		fc := k.FlowControl
		u.flowControls.Add(1)
		from := fc.GetResendFromSeq()
		i := 0
		for i < len(s.window) && s.window[i].seq < from {
			i++
		}
		if len(s.window) > 0 && from < s.window[0].seq {
			return fmt.Errorf("broker asks to resend from batch %d, which it already acknowledged", from)
		}
		s.paused, s.resendIdx = true, i
		wait := time.Duration(fc.GetRetryAfterMs()) * time.Millisecond
		*pause = time.After(wait)
		u.log.Info("broker asks to slow down; resending", "from_seq", from, "batches", len(s.window)-i, "after", wait, "reason", fc.GetReason())
	}
	return nil
}

// logLimiter lets one log line through per period and counts the rest.
type logLimiter struct {
	every      time.Duration
	last       time.Time
	suppressed int
}

func (l *logLimiter) allow(now time.Time) (suppressed int, ok bool) {
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return 0, false
	}
	suppressed, l.suppressed, l.last = l.suppressed, 0, now
	return suppressed, true
}
