package service

import (
	"context"
	"errors"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

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
