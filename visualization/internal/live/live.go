// Package live is the visualization server's live path: it holds one
// MonitorService.Subscribe stream to every broker of the cluster, hands
// every stored snapshot to the observers (the push core, Top-K, anomaly
// analysis, alerting) the moment it arrives, and after a stream reconnects
// or reports a gap, catches up by an incremental pull (a raw QueryRange
// from the last timestamp seen of each host that broker delivered).
//
// Delivery contract for observers: Observe is called for one snapshot at a
// time, never concurrently (a Feed serializes its streams' deliveries), and
// per host in strictly increasing timestamp order: a snapshot not newer
// than the last one delivered for its host (a duplicate from the catch-up,
// or one stored late, e.g. an agent replaying its spool) is counted as
// late and not delivered. Observe must return quickly (it holds up every
// broker's stream) and must not keep labels or samples after it returns:
// they are shared with the other observers and read-only, and the samples'
// memory is reused for the next snapshots (the strings in them may be kept).
//
// Concurrency: SetBrokers, Stats and Run are safe to call from any
// goroutine; Run owns one goroutine per broker stream and ends them all
// before it returns.
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Sample is one value of one series: Series is the canonical key
// name{k=v,...} with labels sorted (pkg/storage.SeriesKey).
type Sample = storage.Sample

// Observer receives every stored snapshot; see the package doc for the
// delivery contract. labels are the host-level tags of the snapshot.
type Observer interface {
	Observe(hostID string, labels map[string]string, ts int64, samples []Sample)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(hostID string, labels map[string]string, ts int64, samples []Sample)

// Observe calls f.
func (f ObserverFunc) Observe(hostID string, labels map[string]string, ts int64, samples []Sample) {
	f(hostID, labels, ts, samples)
}

// Source is what the feed needs from the brokers: a Subscribe stream to one
// given broker, and range queries (on any broker) for the catch-up.
// brokerclient.Client implements it.
type Source interface {
	Subscribe(ctx context.Context, addr string, req *monitorpb.SubscribeRequest) (grpc.ServerStreamingClient[monitorpb.StoredBatch], error)
	QueryRange(ctx context.Context, req *monitorpb.QueryRangeRequest) (*monitorpb.QueryRangeResponse, error)
}

// Options configure a Feed.
type Options struct {
	Source    Source
	Observers []Observer
	// RetryMin and RetryMax bound the backoff between reconnects of one
	// broker's stream (defaults 200ms and 5s).
	RetryMin, RetryMax time.Duration
	// CatchupWindow bounds how far back a catch-up reads (default 10m): a
	// host last seen longer ago is read from now-CatchupWindow on.
	CatchupWindow time.Duration
	// CatchupTimeout bounds one host's catch-up query (default 5s).
	CatchupTimeout time.Duration
	// CatchupParallel is how many hosts are caught up at once (default 4).
	CatchupParallel int
	Logger          *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Stats counts what the feed received and what it could not deliver.
type Stats struct {
	Brokers          int    `json:"brokers"`           // brokers followed
	Connected        int    `json:"connected"`         // of them with an open stream
	Batches          uint64 `json:"batches"`           // StoredBatch messages received
	Snapshots        uint64 `json:"snapshots"`         // snapshots delivered to the observers
	Samples          uint64 `json:"samples"`           // samples delivered
	BrokerDropped    uint64 `json:"broker_dropped"`    // batches the brokers dropped for us (StoredBatch.dropped)
	Late             uint64 `json:"late"`              // snapshots not newer than their host's last one: not delivered
	Invalid          uint64 `json:"invalid"`           // metrics whose series could not be keyed: skipped
	Reconnects       uint64 `json:"reconnects"`        // streams re-opened after a break
	Catchups         uint64 `json:"catchups"`          // catch-up pulls run
	CatchupSnapshots uint64 `json:"catchup_snapshots"` // snapshots delivered by catch-up pulls
	CatchupErrors    uint64 `json:"catchup_errors"`    // host queries of a catch-up that failed
}

// Feed follows the brokers' stored-snapshot streams.
type Feed struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	brokers map[string]*stream // by address
	runCtx  context.Context    // set by Run; nil before
	wg      sync.WaitGroup

	deliver  sync.Mutex       // serializes Observe calls and guards hosts
	hosts    map[string]*host // every host delivered
	counters counters

	wire *wireCache // the streams' decoding cache
}

type host struct {
	last int64             // newest timestamp delivered
	tags map[string]string // tags of the newest snapshot
}

type counters struct {
	batches, snapshots, samples, brokerDropped, late, invalid atomic.Uint64
	reconnects, catchups, catchupSnapshots, catchupErrors     atomic.Uint64
}

// stream is one broker's subscription.
type stream struct {
	addr      string
	cancel    context.CancelFunc
	connected atomic.Bool

	mu    sync.Mutex
	hosts map[string]struct{} // hosts this broker delivered: caught up after a break
}

// New returns a feed; it follows no broker until SetBrokers and Run.
func New(opts Options) (*Feed, error) {
	if opts.Source == nil {
		return nil, errors.New("live: no broker source")
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 200 * time.Millisecond
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(opts.RetryMin, 5*time.Second)
	}
	if opts.CatchupWindow <= 0 {
		opts.CatchupWindow = 10 * time.Minute
	}
	if opts.CatchupTimeout <= 0 {
		opts.CatchupTimeout = 5 * time.Second
	}
	if opts.CatchupParallel <= 0 {
		opts.CatchupParallel = 4
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Feed{opts: opts, log: log, brokers: map[string]*stream{}, hosts: map[string]*host{}, wire: newWireCache()}, nil
}

// SetBrokers makes addrs the brokers followed: streams to new ones open
// (once Run runs), streams to brokers no longer listed close.
func (f *Feed) SetBrokers(addrs []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := map[string]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	for a, s := range f.brokers {
		if !want[a] {
			if s.cancel != nil {
				s.cancel()
			}
			delete(f.brokers, a)
			f.log.Info("stopped following broker", "broker", a)
		}
	}
	for a := range want {
		if _, ok := f.brokers[a]; !ok {
			s := &stream{addr: a, hosts: map[string]struct{}{}}
			f.brokers[a] = s
			if f.runCtx != nil {
				f.start(s)
			}
		}
	}
}

// start runs s's loop; f.mu is held.
func (f *Feed) start(s *stream) {
	ctx, cancel := context.WithCancel(f.runCtx)
	s.cancel = cancel
	f.wg.Go(func() { f.follow(ctx, s) })
}

// Run follows the brokers until ctx ends, then stops every stream and
// returns nil. Call it once.
func (f *Feed) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.runCtx != nil {
		f.mu.Unlock()
		return errors.New("live: Run called twice")
	}
	f.runCtx = ctx
	for _, s := range f.brokers {
		f.start(s)
	}
	f.mu.Unlock()
	<-ctx.Done()
	f.wg.Wait()
	return nil
}

// Stats returns the counters.
func (f *Feed) Stats() Stats {
	c := &f.counters
	st := Stats{
		Batches: c.batches.Load(), Snapshots: c.snapshots.Load(), Samples: c.samples.Load(),
		BrokerDropped: c.brokerDropped.Load(), Late: c.late.Load(), Invalid: c.invalid.Load(),
		Reconnects: c.reconnects.Load(), Catchups: c.catchups.Load(),
		CatchupSnapshots: c.catchupSnapshots.Load(), CatchupErrors: c.catchupErrors.Load(),
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st.Brokers = len(f.brokers)
	for _, s := range f.brokers {
		if s.connected.Load() {
			st.Connected++
		}
	}
	return st
}

// Connected reports whether the stream to addr is open.
func (f *Feed) Connected(addr string) bool {
	f.mu.Lock()
	s, ok := f.brokers[addr]
	f.mu.Unlock()
	return ok && s.connected.Load()
}

// follow keeps one broker's stream open until ctx ends: subscribe, catch
// up when this is a reconnect, then deliver every batch; on a break wait
// with backoff and start again.
func (f *Feed) follow(ctx context.Context, s *stream) {
	wait := f.opts.RetryMin
	broken := false // a stream to this broker was open before: catch up
	for {
		opened, lived, err := f.session(ctx, s, broken)
		s.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if opened {
			broken = true
			f.counters.reconnects.Add(1)
			f.log.Warn("broker stream ended; reconnecting", "broker", s.addr, "err", err)
			if lived > f.opts.RetryMax {
				wait = f.opts.RetryMin // it worked for a while: retry soon
			}
		} else {
			f.log.Debug("cannot subscribe to broker", "broker", s.addr, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, f.opts.RetryMax)
	}
}

// session runs one stream until it breaks. opened reports whether the
// subscription was made, lived for how long.
//
// The catch-up pull runs after the subscription is made, so a snapshot
// stored meanwhile comes either by the pull or by the stream (the only
// window is between the call returning here and the broker registering it,
// a round trip).
func (f *Feed) session(ctx context.Context, s *stream, catchup bool) (opened bool, lived time.Duration, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := f.opts.Source.Subscribe(sctx, s.addr, &monitorpb.SubscribeRequest{})
	if err != nil {
		return false, 0, fmt.Errorf("subscribe to broker %s: %w", s.addr, err)
	}
	start := time.Now()
	s.connected.Store(true)
	if catchup {
		f.catchUp(ctx, s)
	}
	b := &batch{cache: f.wire} // reused for every message (see wire.go)
	for {
		// RecvMsg instead of Recv: the feed's own decoder (wire.go).
		if err := st.RecvMsg(b); err != nil {
			return true, time.Since(start), fmt.Errorf("receive from broker %s: %w", s.addr, err)
		}
		f.counters.batches.Add(1)
		if b.invalid > 0 {
			f.counters.invalid.Add(b.invalid)
		}
		if d := b.dropped; d > 0 {
			f.counters.brokerDropped.Add(d)
			f.log.Warn("broker dropped batches for this server (too slow); catching up", "broker", s.addr, "dropped", d)
			f.catchUp(ctx, s)
		}
		f.receive(s, b)
	}
}

// receive delivers one streamed batch's snapshots.
func (f *Feed) receive(s *stream, b *batch) {
	s.mu.Lock()
	for i := range b.snaps {
		s.hosts[b.snaps[i].host] = struct{}{}
	}
	s.mu.Unlock()
	for i := range b.snaps {
		snap := &b.snaps[i]
		f.deliverOne(snap.host, snap.tags, snap.ts, b.snapSamples(i), false)
	}
}

// deliverOne hands a snapshot to the observers if it is newer than the
// host's last one. tags nil (a catch-up) reuses the host's last tags.
func (f *Feed) deliverOne(id string, tags map[string]string, ts int64, samples []Sample, catchup bool) {
	f.deliver.Lock()
	defer f.deliver.Unlock()
	h := f.hosts[id]
	if h == nil {
		h = &host{}
		f.hosts[id] = h
	}
	if ts <= h.last {
		f.counters.late.Add(1)
		return
	}
	h.last = ts
	if tags != nil {
		h.tags = tags
	}
	if h.tags == nil {
		h.tags = map[string]string{}
	}
	// Counted before the observers run, so whoever sees the snapshot
	// downstream (a WebSocket client) also sees it counted.
	f.counters.snapshots.Add(1)
	f.counters.samples.Add(uint64(len(samples)))
	if catchup {
		f.counters.catchupSnapshots.Add(1)
	}
	for _, o := range f.opts.Observers {
		o.Observe(id, h.tags, ts, samples)
	}
}

// catchUp pulls, for every host this broker delivered, the raw snapshots
// stored after the last one delivered (at most CatchupWindow back), and
// delivers them in timestamp order.
func (f *Feed) catchUp(ctx context.Context, s *stream) {
	s.mu.Lock()
	ids := slices.Collect(maps.Keys(s.hosts))
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	f.counters.catchups.Add(1)
	now := f.opts.Now().Unix()
	floor := now - int64(f.opts.CatchupWindow/time.Second)
	sem := make(chan struct{}, f.opts.CatchupParallel)
	var wg sync.WaitGroup
	for _, id := range ids {
		f.deliver.Lock()
		from := floor
		if h := f.hosts[id]; h != nil && h.last+1 > from {
			from = h.last + 1
		}
		f.deliver.Unlock()
		if from > now {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			f.catchUpHost(ctx, id, from, now)
		})
	}
	wg.Wait()
}

func (f *Feed) catchUpHost(ctx context.Context, id string, from, to int64) {
	qctx, cancel := context.WithTimeout(ctx, f.opts.CatchupTimeout)
	defer cancel()
	resp, err := f.opts.Source.QueryRange(qctx, &monitorpb.QueryRangeRequest{
		HostId: id, From: from, To: to, Resolution: monitorpb.Resolution_RESOLUTION_RAW,
	})
	if err != nil {
		if ctx.Err() == nil {
			f.counters.catchupErrors.Add(1)
			f.log.Warn("catch-up pull failed", "host", id, "from", from, "to", to, "err", err)
		}
		return
	}
	// Regroup the series into snapshots by timestamp.
	byTS := map[int64][]Sample{}
	for _, sr := range resp.GetSeries() {
		key, err := storage.SeriesKey(sr.GetName(), sr.GetLabels())
		if err != nil {
			f.counters.invalid.Add(1)
			continue
		}
		for _, p := range sr.GetPoints() {
			byTS[p.GetTimestamp()] = append(byTS[p.GetTimestamp()], Sample{Series: key, Value: p.GetValue(), Unit: sr.GetUnit()})
		}
	}
	tss := slices.Collect(maps.Keys(byTS))
	sort.Slice(tss, func(i, j int) bool { return tss[i] < tss[j] })
	for _, ts := range tss {
		f.deliverOne(id, nil, ts, byTS[ts], true)
	}
}
