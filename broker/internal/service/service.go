// Package service is the broker's gRPC server: the agents' Ingest stream,
// host registration and heartbeats, and the visualization server's queries
// and Subscribe stream. Domain errors become gRPC codes here and nowhere
// else.
//
// Ingest protocol (see proto/monitor.proto): batches are processed in order
// per stream; a batch is acknowledged only after storage reported it
// durable. When a write fails the stream gets FlowControl{resend_from_seq,
// retry_after} and ignores later batches until the agent resends from that
// sequence (go-back-N), so acks stay cumulative and nothing unstored is ever
// acknowledged.
//
// Drain makes every Ingest handler finish the batch it is writing, send its
// ack and end the stream with Unavailable, so agents reconnect elsewhere.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/broker/internal/hub"
	"github.com/monitorhq/monitor/broker/internal/ingest"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Options configure the service.
type Options struct {
	Limits            ingest.Limits
	WriteTimeout      time.Duration
	RetryAfter        time.Duration
	HeartbeatInterval time.Duration
	OfflineAfter      time.Duration
	MaxRange          time.Duration
	QueryTimeout      time.Duration
	SubscriberBuffer  int // batches queued per Subscribe stream
	Now               func() time.Time
}

// Stats are the service's counters since start.
type Stats struct {
	BatchesAcked     uint64
	SnapshotsStored  uint64
	SamplesStored    uint64
	Rejections       uint64
	WriteFailures    uint64
	FlowControlSent  uint64
	IngestStreams    int64
	SubscriberDrops  uint64
	IgnoredAfterFlow uint64
}

// Service implements monitorpb.MonitorServiceServer.
type Service struct {
	monitorpb.UnimplementedMonitorServiceServer

	store storage.Store
	hub   *hub.Hub
	opts  Options
	log   *slog.Logger

	drainOnce sync.Once
	drain     chan struct{}

	batchesAcked, snapshots, samples, rejections atomic.Uint64
	writeFailures, flowSent, ignored, subDrops   atomic.Uint64
	streams                                      atomic.Int64
}

// New returns a service over store.
func New(store storage.Store, opts Options, logger *slog.Logger) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SubscriberBuffer <= 0 {
		opts.SubscriberBuffer = 1024
	}
	return &Service{store: store, hub: hub.New(), opts: opts, log: logger, drain: make(chan struct{})}
}

// Drain stops ingest (see the package comment) and ends Subscribe streams.
func (s *Service) Drain() {
	s.drainOnce.Do(func() {
		close(s.drain)
		s.hub.Close()
	})
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{
		BatchesAcked: s.batchesAcked.Load(), SnapshotsStored: s.snapshots.Load(),
		SamplesStored: s.samples.Load(), Rejections: s.rejections.Load(),
		WriteFailures: s.writeFailures.Load(), FlowControlSent: s.flowSent.Load(),
		IngestStreams: s.streams.Load(), SubscriberDrops: s.subDrops.Load(),
		IgnoredAfterFlow: s.ignored.Load(),
	}
}

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

// Register records a host's registration.
func (s *Service) Register(ctx context.Context, req *monitorpb.RegisterRequest) (*monitorpb.RegisterResponse, error) {
	info := req.GetHost()
	if err := storage.ValidateHostID(info.GetHostId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for k, v := range info.GetLabels() {
		if err := storage.ValidateLabelName(k); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "label: %v", err)
		}
		if err := storage.ValidateTagValue(v); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "label %q: %v", k, err)
		}
	}
	h := storage.Host{
		ID: info.GetHostId(), Hostname: info.GetHostname(), OS: info.GetOs(), Platform: info.GetPlatform(),
		Kernel: info.GetKernel(), Arch: info.GetArch(), CPUCount: info.GetCpuCount(), MemoryBytes: info.GetMemoryBytes(),
		Labels: info.GetLabels(), AgentVersion: info.GetAgentVersion(), BootTime: info.GetBootTime(),
	}
	if _, err := s.store.RegisterHost(ctx, h, s.opts.Now()); err != nil {
		return nil, storageErr("register host", err)
	}
	return &monitorpb.RegisterResponse{HeartbeatIntervalMs: uint32(s.opts.HeartbeatInterval / time.Millisecond)}, nil
}

// Heartbeat records that a host's agent is alive.
func (s *Service) Heartbeat(ctx context.Context, req *monitorpb.HeartbeatRequest) (*monitorpb.HeartbeatResponse, error) {
	if err := storage.ValidateHostID(req.GetHostId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	known, err := s.store.Heartbeat(ctx, req.GetHostId(), s.opts.Now())
	if err != nil {
		return nil, storageErr("heartbeat", err)
	}
	return &monitorpb.HeartbeatResponse{Registered: known}, nil
}

// ListHosts lists every known host with liveness and freshness.
func (s *Service) ListHosts(ctx context.Context, _ *monitorpb.ListHostsRequest) (*monitorpb.ListHostsResponse, error) {
	hosts, err := s.store.Hosts(ctx)
	if err != nil {
		return nil, storageErr("list hosts", err)
	}
	now := s.opts.Now()
	out := &monitorpb.ListHostsResponse{Hosts: make([]*monitorpb.HostStatus, 0, len(hosts))}
	for _, h := range hosts {
		alive := max(h.LastHeartbeat, h.LastRegistered)
		out.Hosts = append(out.Hosts, &monitorpb.HostStatus{
			Info: &monitorpb.HostInfo{
				HostId: h.ID, Hostname: h.Hostname, Os: h.OS, Platform: h.Platform, Kernel: h.Kernel,
				Arch: h.Arch, CpuCount: h.CPUCount, MemoryBytes: h.MemoryBytes, Labels: h.Labels,
				AgentVersion: h.AgentVersion, BootTime: h.BootTime,
			},
			FirstSeen: h.FirstSeen, LastRegistered: h.LastRegistered, LastHeartbeat: h.LastHeartbeat,
			LastData: h.LastData,
			// A registration is proof of life too: a host that has just
			// registered is online before its first heartbeat.
			Online: alive > 0 && now.Sub(time.Unix(alive, 0)) <= s.opts.OfflineAfter,
		})
	}
	return out, nil
}

// Latest returns a host's newest snapshot.
func (s *Service) Latest(ctx context.Context, req *monitorpb.LatestRequest) (*monitorpb.LatestResponse, error) {
	if err := storage.ValidateHostID(req.GetHostId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	snap, ok, err := s.store.Latest(ctx, req.GetHostId())
	if err != nil {
		return nil, storageErr("latest snapshot", err)
	}
	if !ok {
		return &monitorpb.LatestResponse{}, nil
	}
	return &monitorpb.LatestResponse{Snapshot: ToProto(&snap)}, nil
}

// QueryRange returns one host's series over a time range.
func (s *Service) QueryRange(ctx context.Context, req *monitorpb.QueryRangeRequest) (*monitorpb.QueryRangeResponse, error) {
	if err := storage.ValidateHostID(req.GetHostId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	from, to, step := req.GetFrom(), req.GetTo(), req.GetStep()
	switch {
	case from <= 0 || to <= 0:
		return nil, status.Errorf(codes.InvalidArgument, "from and to must be positive Unix seconds, got from=%d to=%d", from, to)
	case from > to:
		return nil, status.Errorf(codes.InvalidArgument, "from %d is after to %d", from, to)
	case time.Duration(to-from)*time.Second > s.opts.MaxRange:
		return nil, status.Errorf(codes.InvalidArgument, "range of %s is longer than the limit %s", time.Duration(to-from)*time.Second, s.opts.MaxRange)
	case step < 0:
		return nil, status.Errorf(codes.InvalidArgument, "step %d is negative", step)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.QueryTimeout)
	defer cancel()
	snaps, err := s.store.Range(ctx, storage.RangeQuery{HostID: req.GetHostId(), From: from, To: to, Match: storage.NewMatcher(req.GetNames())})
	if err != nil {
		return nil, storageErr("range query", err)
	}
	return &monitorpb.QueryRangeResponse{HostId: req.GetHostId(), Series: toSeries(snaps, step), SnapshotsRead: uint32(len(snaps))}, nil
}

// Subscribe streams stored snapshots as they are stored.
func (s *Service) Subscribe(req *monitorpb.SubscribeRequest, stream monitorpb.MonitorService_SubscribeServer) error {
	for _, id := range req.GetHostIds() {
		if err := storage.ValidateHostID(id); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
	sub := s.hub.Subscribe(req.GetHostIds(), s.opts.SubscriberBuffer)
	defer func() {
		s.subDrops.Add(sub.Dropped())
		sub.Close()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case d, ok := <-sub.C():
			if !ok {
				return errDraining
			}
			msg := &monitorpb.StoredBatch{Dropped: d.Dropped, Snapshots: make([]*monitorpb.Snapshot, len(d.Snapshots))}
			for i := range d.Snapshots {
				msg.Snapshots[i] = ToProto(&d.Snapshots[i])
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}

// ToProto converts a stored snapshot for the wire.
func ToProto(s *storage.Snapshot) *monitorpb.Snapshot {
	out := &monitorpb.Snapshot{HostId: s.HostID, Timestamp: s.Timestamp, Tags: s.Tags, Metrics: make([]*monitorpb.Metric, 0, len(s.Samples))}
	for _, smp := range s.Samples {
		name, labels, err := storage.ParseSeries(smp.Series)
		if err != nil {
			continue // validated on the way in; unreachable unless storage was edited by hand
		}
		out.Metrics = append(out.Metrics, &monitorpb.Metric{Name: name, Labels: labels, Value: smp.Value, Unit: smp.Unit})
	}
	return out
}

// toSeries regroups snapshots by series; step > 0 averages the samples of
// each step-aligned bucket (timestamp = bucket start).
func toSeries(snaps []storage.Snapshot, step int64) []*monitorpb.Series {
	type acc struct {
		series        *monitorpb.Series
		bucket        int64
		sum           float64
		n             int
		bucketStarted bool
	}
	bySeries := map[string]*acc{}
	var order []string
	flush := func(a *acc) {
		if a.bucketStarted {
			a.series.Points = append(a.series.Points, &monitorpb.Point{Timestamp: a.bucket, Value: a.sum / float64(a.n)})
			a.bucketStarted, a.sum, a.n = false, 0, 0
		}
	}
	for i := range snaps {
		for _, smp := range snaps[i].Samples {
			a := bySeries[smp.Series]
			if a == nil {
				name, labels, err := storage.ParseSeries(smp.Series)
				if err != nil {
					continue
				}
				a = &acc{series: &monitorpb.Series{Name: name, Labels: labels, Unit: smp.Unit}}
				bySeries[smp.Series] = a
				order = append(order, smp.Series)
			}
			ts := snaps[i].Timestamp
			if step <= 0 {
				a.series.Points = append(a.series.Points, &monitorpb.Point{Timestamp: ts, Value: smp.Value})
				continue
			}
			b := ts - ts%step
			if a.bucketStarted && b != a.bucket {
				flush(a)
			}
			a.bucket, a.bucketStarted = b, true
			a.sum += smp.Value
			a.n++
		}
	}
	sort.Strings(order)
	out := make([]*monitorpb.Series, 0, len(order))
	for _, k := range order {
		a := bySeries[k]
		flush(a)
		out = append(out, a.series)
	}
	return out
}

// storageErr maps a storage error to a gRPC status at the edge.
func storageErr(op string, err error) error {
	switch {
	case errors.Is(err, storage.ErrInvalid):
		return status.Errorf(codes.InvalidArgument, "%s: %v", op, err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: %v", op, err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: %v", op, err)
	default:
		return status.Errorf(codes.Unavailable, "%s: storage: %v", op, err)
	}
}
