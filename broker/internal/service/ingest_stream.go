package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/broker/internal/ingest"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

var errDraining = status.Error(codes.Unavailable, "broker is shutting down; reconnect to another broker")

// Ingest is the agent's stream.
func (s *Service) Ingest(stream monitorpb.MonitorService_IngestServer) error {
	select {
	case <-s.drain:
		return errDraining
	default:
	}
	s.streams.Add(1)
	defer s.streams.Add(-1)
	ctx := stream.Context()

	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message of an Ingest stream must be a Hello")
	}
	log := s.log.With("agent", hello.GetAgentId())

	// Recv runs in its own goroutine so that a drain is noticed between
	// batches even while the agent is idle. It ends when the stream does
	// (the handler returning cancels the stream's context).
	type recvd struct {
		req *monitorpb.IngestRequest
		err error
	}
	in := make(chan recvd)
	go func() {
		for {
			req, err := stream.Recv()
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

	var lastSeq uint64 // highest sequence seen in order
	var resendFrom uint64
	for {
		var r recvd
		select {
		case <-s.drain:
			return errDraining
		case <-ctx.Done():
			return ctx.Err()
		case r = <-in:
		}
		if errors.Is(r.err, io.EOF) {
			return nil // the agent closed its side after its last ack
		}
		if r.err != nil {
			return r.err
		}
		b := r.req.GetBatch()
		if b == nil {
			return status.Error(codes.InvalidArgument, "expected a Batch after Hello")
		}
		seq := b.GetSeq()
		if seq == 0 {
			return status.Error(codes.InvalidArgument, "batch sequence numbers start at 1")
		}
		if resendFrom != 0 {
			if seq != resendFrom {
				s.ignored.Add(1)
				continue // sent before the agent saw our FlowControl
			}
			resendFrom = 0
		} else if seq <= lastSeq {
			// A resend of something already acknowledged: writes are
			// idempotent, store again and ack, nothing else to do.
			log.Debug("batch sequence went back; storing again", "seq", seq, "last", lastSeq)
		}
		ack, err := s.store1(ctx, b)
		if err != nil {
			s.writeFailures.Add(1)
			s.flowSent.Add(1)
			resendFrom = seq
			log.Warn("storing batch failed; asking the agent to resend", "seq", seq, "err", err)
			fc := &monitorpb.FlowControl{ResendFromSeq: seq, RetryAfterMs: uint32(s.opts.RetryAfter / time.Millisecond), Reason: err.Error()}
			if err := stream.Send(&monitorpb.IngestResponse{Kind: &monitorpb.IngestResponse_FlowControl{FlowControl: fc}}); err != nil {
				return err
			}
			continue
		}
		if seq > lastSeq {
			lastSeq = seq
		}
		ack.AckedSeq = lastSeq
		if err := stream.Send(&monitorpb.IngestResponse{Kind: &monitorpb.IngestResponse_Ack{Ack: ack}}); err != nil {
			return err
		}
	}
}

// store1 validates and stores one batch.
func (s *Service) store1(ctx context.Context, b *monitorpb.Batch) (*monitorpb.Ack, error) {
	res := ingest.Convert(b, s.opts.Now(), s.opts.Limits)
	if len(res.Snapshots) > 0 {
		// The write gets its own deadline but not the stream's context:
		// once started it finishes, so a drain never abandons a write
		// half-done without telling the agent.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.WriteTimeout)
		err := s.store.WriteSnapshots(wctx, res.Snapshots)
		cancel()
		if err != nil {
			if errors.Is(err, storage.ErrInvalid) {
				// Validation let through something the backend refuses:
				// reject the batch rather than retry it forever.
				for i := range res.Snapshots {
					res.Rejections = append(res.Rejections, &monitorpb.Rejection{Seq: b.GetSeq(), HostId: res.Snapshots[i].HostID, Timestamp: res.Snapshots[i].Timestamp, Reason: err.Error()})
				}
				res.Snapshots, res.Samples = nil, 0
			} else {
				return nil, fmt.Errorf("write %d snapshots: %w", len(res.Snapshots), err)
			}
		}
	}
	s.hub.Publish(res.Snapshots)
	s.batchesAcked.Add(1)
	s.snapshots.Add(uint64(len(res.Snapshots)))
	s.samples.Add(uint64(res.Samples))
	s.rejections.Add(uint64(len(res.Rejections)))
	return &monitorpb.Ack{StoredSnapshots: uint32(len(res.Snapshots)), StoredSamples: uint32(res.Samples), Rejections: res.Rejections}, nil
}
