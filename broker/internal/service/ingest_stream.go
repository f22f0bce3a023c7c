package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/broker/internal/ingest"
	"github.com/monitorhq/monitor/pkg/queue"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

var errDraining = status.Error(codes.Unavailable, "broker is shutting down; reconnect to another broker")

// maxQueueRetry bounds the wait a full queue asks of an agent.
const maxQueueRetry = 30 * time.Second

// inflight is one batch of a stream between receipt and its answer. err is
// written by the queue's completion before the batch is sent on the
// stream's completion channel, and read by the handler after it arrived.
type inflight struct {
	seq       uint64
	res       ingest.Result
	err       error
	done      bool // completed (or never queued)
	discarded bool // an earlier batch failed: never answered
}

// Ingest is the agent's stream (see the package comment for the protocol).
func (s *Service) Ingest(stream monitorpb.MonitorService_IngestServer) error {
	select {
	case <-s.drain:
		return errDraining
	default:
	}
	s.streams.Add(1)
	defer s.streams.Add(-1)
	ctx := stream.Context()
	if err := s.waitReady(ctx); err != nil {
		return err
	}

	// Requests are read with the broker's own decoder (ingest.Request,
	// ingest/wire.go): the generated code's maps per metric were the
	// largest cost of the ingest path.
	first := &ingest.Request{}
	if err := stream.RecvMsg(first); err != nil {
		return err
	}
	hello := first.Hello
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message of an Ingest stream must be a Hello")
	}
	st := &ingestStream{
		s: s, stream: stream, log: s.log.With("agent", hello.GetAgentId()),
		// Every queued batch completes exactly once into this channel and
		// at most MaxInflightBatches are queued, so a completion never
		// blocks a queue worker, even after the handler has returned.
		completions: make(chan *inflight, s.opts.MaxInflightBatches),
	}

	// Recv runs in its own goroutine so that completions and a drain are
	// handled while the agent is idle. It ends when the stream does (the
	// handler returning cancels the stream's context).
	type recvd struct {
		req *ingest.Request
		err error
	}
	in := make(chan recvd)
	go func() {
		for {
			req := &ingest.Request{}
			err := stream.RecvMsg(req)
			select {
			case in <- recvd{req, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	drain := s.drain
	draining := false
	for {
		// Stop reading when enough batches are queued or waiting for their
		// answer (the agent is then held by gRPC flow control), and once
		// draining.
		recv := in
		if st.outstanding >= s.opts.MaxInflightBatches || len(st.pending) >= s.opts.MaxInflightBatches || draining {
			recv = nil
		}
		select {
		case <-drain:
			draining, drain = true, nil
		case <-ctx.Done():
			return ctx.Err()
		case p := <-st.completions:
			st.complete(p)
		case r := <-recv:
			if errors.Is(r.err, io.EOF) {
				// The agent closed its side: answer what is in flight, then end.
				return st.finish(ctx)
			}
			if r.err != nil {
				return r.err
			}
			if err := st.receive(r.req); err != nil {
				return err
			}
		}
		if err := st.answer(draining); err != nil {
			return err
		}
		if draining && len(st.pending) == 0 {
			return errDraining
		}
	}
}

// ingestStream is the state of one Ingest handler; only its goroutine
// touches it.
type ingestStream struct {
	s           *Service
	stream      monitorpb.MonitorService_IngestServer
	log         *slog.Logger
	completions chan *inflight
	pending     []*inflight // in arrival order, not yet answered
	outstanding int         // batches in the queue (answered or not)
	failed      bool        // a pending batch failed: ignore new ones until its FlowControl
	resendFrom  uint64      // FlowControl sent: ignore batches until this one
	lastSeq     uint64      // highest sequence acknowledged
}

// receive validates a batch and queues it.
func (st *ingestStream) receive(req *ingest.Request) error {
	s := st.s
	b := req.Batch
	if b == nil {
		return status.Error(codes.InvalidArgument, "expected a Batch after Hello")
	}
	seq := b.Seq
	if seq == 0 {
		return status.Error(codes.InvalidArgument, "batch sequence numbers start at 1")
	}
	if st.resendFrom != 0 {
		if seq != st.resendFrom {
			s.ignored.Add(1)
			return nil // sent before the agent saw our FlowControl
		}
		st.resendFrom = 0
	} else if st.failed {
		s.ignored.Add(1)
		return nil // a FlowControl for an earlier batch is on its way
	}
	// A sequence at or below lastSeq is a resend of something already
	// acknowledged: writes are idempotent, so it is simply stored again.
	if snaps := b.Snapshots; len(snaps) > 0 {
		// Refused without validating it when its first host's lane is full.
		if err := s.queue.Refuse(snaps[0].HostID, len(snaps)); err != nil {
			st.pending = append(st.pending, &inflight{seq: seq, err: err, done: true})
			st.failed = true
			s.queueFull.Add(1)
			return nil
		}
	}
	p := &inflight{seq: seq, res: ingest.ConvertBatch(b, s.opts.Now(), s.opts.Limits)}
	st.pending = append(st.pending, p)
	if len(p.res.Snapshots) == 0 {
		p.done = true
		return nil
	}
	err := s.queue.Enqueue(p.res.Snapshots, func(err error) {
		p.err = err
		st.completions <- p
	})
	if err != nil {
		p.done, p.err, st.failed = true, err, true
		if errors.Is(err, queue.ErrFull) {
			s.queueFull.Add(1)
		}
		return nil
	}
	st.outstanding++
	return nil
}

// complete records a queued batch's completion.
func (st *ingestStream) complete(p *inflight) {
	st.outstanding--
	p.done = true
	if p.err != nil && !p.discarded && !errors.Is(p.err, storage.ErrInvalid) {
		// A FlowControl at or before p is coming; what arrives meanwhile
		// would be discarded anyway, so do not queue it.
		st.failed = true
	}
}

// answer sends the acks and the FlowControl that the completed head of the
// pending list allows, in sequence order.
func (st *ingestStream) answer(draining bool) error {
	s := st.s
	for len(st.pending) > 0 && st.pending[0].done {
		p := st.pending[0]
		st.pending[0] = nil
		st.pending = st.pending[1:]
		if p.discarded {
			continue
		}
		if p.err != nil && errors.Is(p.err, storage.ErrInvalid) {
			// Validation let through something the backend refuses:
			// reject the batch rather than have it resent forever.
			for i := range p.res.Snapshots {
				sn := &p.res.Snapshots[i]
				p.res.Rejections = append(p.res.Rejections, &monitorpb.Rejection{Seq: p.seq, HostId: sn.HostID, Timestamp: sn.Timestamp, Reason: p.err.Error()})
			}
			p.res.Snapshots, p.res.Samples, p.err = nil, 0, nil
		}
		if p.err != nil {
			if draining {
				// Not stored and the stream is ending: the agent resends
				// it to another broker.
				st.discardPending()
				return nil
			}
			if err := st.flowControl(p); err != nil {
				return err
			}
			continue
		}
		s.hub.Publish(p.res.Snapshots)
		s.batchesAcked.Add(1)
		s.snapshots.Add(uint64(len(p.res.Snapshots)))
		s.samples.Add(uint64(p.res.Samples))
		s.rejections.Add(uint64(len(p.res.Rejections)))
		st.lastSeq = max(st.lastSeq, p.seq)
		ack := &monitorpb.Ack{AckedSeq: st.lastSeq, StoredSnapshots: uint32(len(p.res.Snapshots)), StoredSamples: uint32(p.res.Samples), Rejections: p.res.Rejections}
		if err := st.stream.Send(&monitorpb.IngestResponse{Kind: &monitorpb.IngestResponse_Ack{Ack: ack}}); err != nil {
			return err
		}
	}
	return nil
}

// flowControl asks the agent to resend from p, which was not stored, and
// drops every later batch (they will be resent).
func (st *ingestStream) flowControl(p *inflight) error {
	s := st.s
	// A full queue asks the agent to come back when its lane should have
	// drained (bounded), not after the fixed retry_after: under overload
	// thousands of agents retrying every second would spend the broker's
	// CPU on decoding batches it must refuse again. Jitter (±50 %) keeps
	// the agents refused at one moment from coming back at the same one.
	retry := s.opts.RetryAfter
	var full *queue.FullError
	if errors.As(p.err, &full) {
		retry = max(retry, min(full.Drain, maxQueueRetry))
	}
	retry = time.Duration(float64(retry) * (0.5 + rand.Float64()))
	reason := "queue full"
	if errors.Is(p.err, queue.ErrFull) {
		if n, ok := s.fullLog.allow(time.Now()); ok {
			st.log.Warn("write queue full; asking agents to resend later", "seq", p.seq, "retry_after", retry, "suppressed_since_last_log", n)
		}
	} else {
		s.writeFailures.Add(1)
		reason = p.err.Error()
		if n, ok := s.failLog.allow(time.Now()); ok {
			st.log.Warn("storing batch failed; asking agents to resend", "seq", p.seq, "err", p.err, "suppressed_since_last_log", n)
		}
	}
	s.flowSent.Add(1)
	st.discardPending()
	st.failed, st.resendFrom = false, p.seq
	fc := &monitorpb.FlowControl{ResendFromSeq: p.seq, RetryAfterMs: uint32(max(retry, time.Millisecond) / time.Millisecond), Reason: reason}
	if err := st.stream.Send(&monitorpb.IngestResponse{Kind: &monitorpb.IngestResponse_FlowControl{FlowControl: fc}}); err != nil {
		return fmt.Errorf("send flow control: %w", err)
	}
	return nil
}

// discardPending drops every pending batch: none will be answered. Those
// still queued complete later into the completion channel and are ignored.
func (st *ingestStream) discardPending() {
	for _, p := range st.pending {
		p.discarded = true
		st.s.ignored.Add(1)
	}
	clear(st.pending) // do not keep their snapshots reachable
	st.pending = st.pending[:0]
}

// finish answers every pending batch after the agent closed its side, then
// ends the stream cleanly.
func (st *ingestStream) finish(ctx context.Context) error {
	for {
		if err := st.answer(false); err != nil {
			return err
		}
		if len(st.pending) == 0 || st.resendFrom != 0 {
			return nil
		}
		select {
		case p := <-st.completions:
			st.complete(p)
		case <-ctx.Done():
			return nil
		}
	}
}

// logLimiter lets one line per second through and counts the others, so
// that thousands of agents refused at once cost one log line, not
// thousands.
type logLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *logLimiter) allow(now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) < time.Second {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}
