package loadgen

import (
	"context"
	"errors"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// encSnap is one encoded Snapshot message.
type encSnap struct {
	b  []byte
	ts int64
}

// batchOut is one batch of a host's window.
type batchOut struct {
	seq      uint64
	msg      rawMsg // the encoded IngestRequest
	snaps    int
	samples  int
	ts       []int64 // snapshot timestamps, kept only for Config.OnAck
	sentAt   int64   // unix nanos of the latest send
	sentOnce bool
}

// host is one simulated agent.
type host struct {
	g      *Generator
	id     string
	token  string // Config.Token's credential for id ("" without)
	index  int
	conn   *conn
	queued atomic.Bool // in conn.ready

	// Used only by the connection's scheduler goroutine.
	r       rng
	vals    []float64
	lastTS  int64
	nextDue time.Time

	mu        sync.Mutex
	stream    monitorpb.MonitorService_IngestClient
	nextSeq   uint64
	window    []*batchOut // sent (or about to be), unacknowledged, in seq order
	resendIdx int         // window[resendIdx:] is to be sent (again)
	paused    bool        // FlowControl: wait for retry
	broken    bool        // stream failed; the receiver reopens it
	closed    bool        // half-closed at the end of the run
	backlog   []encSnap
	retry     *time.Timer
}

// receive owns the host's stream: it opens it (again after failures, with
// backoff) and handles what the broker sends. It returns when the broker
// ended the stream after the final half-close, or when ctx ends.
func (h *host) receive(ctx context.Context, opened chan<- struct{}) {
	g := h.g
	first := true
	defer func() {
		if first {
			opened <- struct{}{}
		}
	}()
	backoff := 100 * time.Millisecond
	for {
		stream, err := h.open(ctx)
		if err == nil {
			h.mu.Lock()
			h.stream, h.broken, h.paused, h.resendIdx = stream, false, false, 0
			h.mu.Unlock()
			if first {
				first = false
				opened <- struct{}{}
			} else {
				g.reconnects.Add(1)
			}
			h.conn.wake(h)
			backoff = 100 * time.Millisecond
			if err = h.recvLoop(stream); err == nil {
				return
			}
			h.mu.Lock()
			h.broken = true
			h.mu.Unlock()
		}
		if ctx.Err() != nil || g.closing.Load() {
			return
		}
		g.logStreamError(h.id, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (h *host) open(ctx context.Context) (monitorpb.MonitorService_IngestClient, error) {
	if h.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+h.token)
	}
	stream, err := h.conn.client.Ingest(ctx, grpc.ForceCodecV2(h.g.codec))
	if err != nil {
		return nil, err
	}
	hello := &monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: h.id, Version: "loadgen"}}}
	if err := stream.Send(hello); err != nil {
		_, err = stream.Recv() // the stream's real error
		return nil, err
	}
	return stream, nil
}

var errEnded = errors.New("broker ended the stream")

// recvLoop handles acks and flow control until the stream ends; nil means
// it ended cleanly after our half-close.
func (h *host) recvLoop(stream monitorpb.MonitorService_IngestClient) error {
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			h.mu.Lock()
			closed := h.closed
			h.mu.Unlock()
			if closed {
				return nil
			}
			return errEnded
		}
		if err != nil {
			return err
		}
		switch k := resp.GetKind().(type) {
		case *monitorpb.IngestResponse_Ack:
			h.onAck(k.Ack)
		case *monitorpb.IngestResponse_FlowControl:
			h.onFlowControl(k.FlowControl)
		}
	}
}

func (h *host) onAck(a *monitorpb.Ack) {
	g := h.g
	now := time.Now().UnixNano()
	var acked []*batchOut
	h.mu.Lock()
	n := 0
	for n < len(h.window) && h.window[n].seq <= a.GetAckedSeq() {
		b := h.window[n]
		g.latency.observe(now - b.sentAt)
		g.acked.Add(uint64(b.snaps))
		g.samples.Add(uint64(b.samples))
		g.batches.Add(1)
		if g.cfg.OnAck != nil {
			acked = append(acked, b)
		}
		n++
	}
	if n > 0 {
		rest := copy(h.window, h.window[n:])
		clear(h.window[rest:])
		h.window = h.window[:rest]
		h.resendIdx = max(0, h.resendIdx-n)
	}
	more := len(h.backlog) > 0 || g.saturate
	h.mu.Unlock()
	g.rejected.Add(uint64(len(a.GetRejections())))
	g.lastAck.Store(now)
	for _, b := range acked {
		g.cfg.OnAck(h.id, b.ts)
	}
	if n > 0 && more {
		h.conn.wake(h)
	}
}

func (h *host) onFlowControl(fc *monitorpb.FlowControl) {
	g := h.g
	g.flowControls.Add(1)
	from := fc.GetResendFromSeq()
	h.mu.Lock()
	if len(h.window) > 0 && from < h.window[0].seq {
		// The broker asks for something it already acknowledged: a
		// protocol error; resend the whole window.
		g.errs.Add(1)
	}
	i := 0
	for i < len(h.window) && h.window[i].seq < from {
		i++
	}
	h.paused, h.resendIdx = true, i
	if h.retry != nil {
		h.retry.Stop()
	}
	h.retry = time.AfterFunc(time.Duration(fc.GetRetryAfterMs())*time.Millisecond, func() {
		h.mu.Lock()
		h.paused = false
		h.mu.Unlock()
		h.conn.wake(h)
	})
	h.mu.Unlock()
	if g.cfg.OnFlowControl != nil {
		g.cfg.OnFlowControl(h.id, fc)
	}
}

func (h *host) stopTimer() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.retry != nil {
		h.retry.Stop()
	}
}

// generate makes the host's next snapshot, encoded (scheduler goroutine
// only).
func (h *host) generate(now time.Time) encSnap {
	g := h.g
	ts := h.lastTS + 1
	if !g.saturate && g.cfg.Interval >= time.Second {
		ts = max(ts, now.Unix())
	}
	h.lastTS = ts
	for j := range g.defs {
		h.vals[j] = g.defs[j].next(h.vals[j], &h.r)
	}
	if g.cfg.Stamp {
		h.vals[0] = float64(time.Now().UnixMicro()) / 1000 // send time, not the tick's
	}
	g.generated.Add(1)
	return encSnap{b: g.enc.snapshot(make([]byte, 0, g.snapSize.Load()), h.id, ts, h.vals), ts: ts}
}

// batch turns snaps into the next batch of the window; h.mu is held.
func (h *host) batch(snaps []encSnap) {
	b := &batchOut{seq: h.nextSeq, snaps: len(snaps), samples: len(snaps) * len(h.g.defs)}
	h.nextSeq++
	parts := make([][]byte, len(snaps))
	for i, s := range snaps {
		parts[i] = s.b
		if h.g.cfg.OnAck != nil {
			b.ts = append(b.ts, s.ts)
		}
	}
	b.msg = batchRequest(b.seq, parts)
	h.window = append(h.window, b)
}

// conn is one gRPC connection and the scheduler of its hosts.
type conn struct {
	g      *Generator
	cc     *grpc.ClientConn
	client monitorpb.MonitorServiceClient
	hosts  []*host
	ready  chan *host // hosts with something to send; each at most once
	closeC chan struct{}
	buf    []*batchOut
}

// wake queues h for its scheduler; it never blocks (ready has room for
// every host of the connection and a host is queued at most once).
func (c *conn) wake(h *host) {
	if h.queued.CompareAndSwap(false, true) {
		c.ready <- h
	}
}

func (c *conn) kick() {
	select {
	case c.closeC <- struct{}{}:
	default:
	}
}

// run is the connection's scheduler: it makes snapshots on each host's
// schedule and does all sending for its hosts, so a stream never has two
// concurrent senders.
func (c *conn) run(ctx context.Context) {
	g := c.g
	var tc <-chan time.Time
	var timer *time.Timer
	cursor := 0
	if g.saturate {
		for _, h := range c.hosts {
			c.pump(h)
		}
	} else {
		// Hosts are spread evenly over the interval, in index order.
		for _, h := range c.hosts {
			h.nextDue = g.start.Add(time.Duration(float64(g.cfg.Interval) * float64(h.index) / float64(len(g.hosts))))
		}
		timer = time.NewTimer(time.Until(c.hosts[0].nextDue))
		defer timer.Stop()
		tc = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case h := <-c.ready:
			h.queued.Store(false)
			c.pump(h)
		case <-c.closeC:
			for _, h := range c.hosts {
				c.closeSend(h)
			}
		case now := <-tc:
			if !g.generating.Load() {
				tc = nil
				continue
			}
			// At most one round of the hosts per wake-up, so acks are
			// served even when the schedule runs behind.
			for range c.hosts {
				h := c.hosts[cursor]
				if h.nextDue.After(now) {
					break
				}
				c.produce(h, now)
				h.nextDue = h.nextDue.Add(g.cfg.Interval)
				cursor = (cursor + 1) % len(c.hosts)
			}
			timer.Reset(max(0, time.Until(c.hosts[cursor].nextDue)))
		}
	}
}

// produce adds a new snapshot to h's backlog (dropping the oldest when it
// is full, as an agent's buffer does) and sends what the window allows.
func (c *conn) produce(h *host, now time.Time) {
	s := h.generate(now)
	h.mu.Lock()
	if len(h.backlog) >= c.g.cfg.Backlog {
		copy(h.backlog, h.backlog[1:])
		h.backlog = h.backlog[:len(h.backlog)-1]
		c.g.dropped.Add(1)
	}
	h.backlog = append(h.backlog, s)
	h.mu.Unlock()
	c.pump(h)
}

// pump sends what h may send now: the part of its window to (re)send, then
// new batches while the window has room.
func (c *conn) pump(h *host) {
	g := c.g
	h.mu.Lock()
	if h.stream == nil || h.broken || h.paused || h.closed {
		h.mu.Unlock()
		return
	}
	for len(h.window) < g.cfg.Window && len(h.backlog) > 0 {
		k := min(g.cfg.MaxBatch, len(h.backlog))
		h.batch(h.backlog[:k])
		rest := copy(h.backlog, h.backlog[k:])
		clear(h.backlog[rest:])
		h.backlog = h.backlog[:rest]
	}
	if g.saturate && g.generating.Load() {
		now := time.Now()
		for len(h.window) < g.cfg.Window {
			h.batch([]encSnap{h.generate(now)})
		}
	}
	c.buf = append(c.buf[:0], h.window[h.resendIdx:]...)
	now := time.Now().UnixNano()
	for _, b := range c.buf {
		if b.sentOnce {
			g.resent.Add(1)
		} else {
			b.sentOnce = true
			g.sent.Add(uint64(b.snaps))
		}
		b.sentAt = now
	}
	h.resendIdx = len(h.window)
	stream := h.stream
	h.mu.Unlock()
	for _, b := range c.buf {
		if err := stream.SendMsg(b.msg); err != nil {
			break // the receiver sees the stream's error and reopens it
		}
	}
	clear(c.buf)
}

// closeSend half-closes h's stream at the end of the run.
func (c *conn) closeSend(h *host) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	stream, broken := h.stream, h.broken
	h.mu.Unlock()
	if stream != nil && !broken {
		_ = stream.CloseSend()
	}
}

// histogram records durations in log-linear buckets (16 per power of two,
// about 6 % wide) without locks.
type histogram struct {
	counts []atomic.Uint64
	n      atomic.Uint64
	maxNS  atomic.Int64
}

const subBuckets = 16

func (h *histogram) init() { h.counts = make([]atomic.Uint64, 64*subBuckets) }

func bucketOf(ns int64) int {
	if ns < subBuckets {
		return int(max(ns, 0))
	}
	e := bits.Len64(uint64(ns)) - 1 // >= 4
	sub := int(ns>>(e-4)) & (subBuckets - 1)
	return (e-3)*subBuckets + sub
}

// bucketMid is the middle of bucket i in nanoseconds.
func bucketMid(i int) float64 {
	if i < subBuckets {
		return float64(i)
	}
	e := i/subBuckets + 3
	sub := i % subBuckets
	lo := float64(subBuckets+sub) * float64(uint64(1)<<(e-4))
	return lo + float64(uint64(1)<<(e-4))/2
}

func (h *histogram) observe(ns int64) {
	h.counts[bucketOf(ns)].Add(1)
	h.n.Add(1)
	for {
		old := h.maxNS.Load()
		if ns <= old || h.maxNS.CompareAndSwap(old, ns) {
			return
		}
	}
}

func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q * float64(n))
	if rank >= n {
		rank = n - 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen > rank {
			return time.Duration(bucketMid(i))
		}
	}
	return time.Duration(h.maxNS.Load())
}

func (h *histogram) max() time.Duration { return time.Duration(h.maxNS.Load()) }
