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
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	now := s.opts.Now()
	if _, err := s.store.RegisterHost(ctx, h, now); err != nil {
		return nil, storageErr("register host", err)
	}
	if s.opts.OnRegister != nil {
		s.opts.OnRegister(h, now)
	}
	return &monitorpb.RegisterResponse{HeartbeatIntervalMs: uint32(s.opts.HeartbeatInterval / time.Millisecond)}, nil
}

// Heartbeat records that a host's agent is alive.
func (s *Service) Heartbeat(ctx context.Context, req *monitorpb.HeartbeatRequest) (*monitorpb.HeartbeatResponse, error) {
	if err := storage.ValidateHostID(req.GetHostId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
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

// Defaults of QueryOptions.
const (
	DefaultMaxPoints   = 2000
	DefaultRawInterval = 5 * time.Second
)

// QueryOptions choose what a range query reads. Zero fields take the
// defaults noted.
type QueryOptions struct {
	// MaxPoints is the most points per series one query may read from
	// storage; default DefaultMaxPoints. It bounds the work of a query,
	// whatever the range and step.
	MaxPoints int
	// RawInterval is the agents' collection interval, from which the raw
	// points of a range are estimated; default DefaultRawInterval (5 s).
	RawInterval time.Duration
	// RawRetention is how long raw snapshots are kept (storage.ttl);
	// default storage.DefaultRetention.
	RawRetention time.Duration
	// Rollups is how long each rollup resolution is kept.
	Rollups storage.RollupRetention
	// NoRollups says the store keeps no rollups: every query reads raw.
	NoRollups bool
}

func (o QueryOptions) withDefaults() QueryOptions {
	if o.MaxPoints <= 0 {
		o.MaxPoints = DefaultMaxPoints
	}
	if o.RawInterval <= 0 {
		o.RawInterval = DefaultRawInterval
	}
	if o.RawRetention <= 0 {
		o.RawRetention = storage.DefaultRetention
	}
	o.Rollups = o.Rollups.WithDefaults()
	return o
}

// level is one resolution a query can read.
type level struct {
	res       storage.Resolution
	width     int64 // seconds per point read: the raw interval, 60, 3600
	retention time.Duration
	pb        monitorpb.Resolution
}

func (o QueryOptions) levels() []level {
	ls := []level{{storage.Raw, max(1, int64(o.RawInterval/time.Second)), o.RawRetention, monitorpb.Resolution_RESOLUTION_RAW}}
	if !o.NoRollups {
		ls = append(ls,
			level{storage.Minute, int64(storage.Minute), o.Rollups.Minute, monitorpb.Resolution_RESOLUTION_1M},
			level{storage.Hour, int64(storage.Hour), o.Rollups.Hour, monitorpb.Resolution_RESOLUTION_1H})
	}
	return ls
}

// points is how many points per series l reads over from..to.
func (l level) points(from, to int64) int64 {
	if l.res == storage.Raw {
		return (to-from)/l.width + 1
	}
	return (l.res.BucketStart(to)-l.res.BucketStart(from))/l.width + 1
}

// covers reports whether l still holds data as old as from.
func (l level) covers(from int64, now time.Time) bool {
	return from >= now.Add(-l.retention).Unix()
}

// chooseLevel picks what a query reads (see QueryRangeRequest in
// proto/monitor.proto): with AUTO, the finest level, not finer than step,
// whose retention covers from and that reads at most MaxPoints points per
// series; when none does, the coarsest level. An explicit resolution is
// taken as asked unless it reads too much.
func (o QueryOptions) chooseLevel(from, to, step int64, want monitorpb.Resolution, now time.Time) (level, error) {
	ls := o.levels()
	if want != monitorpb.Resolution_RESOLUTION_AUTO {
		for _, l := range ls {
			if l.pb != want {
				continue
			}
			if n := l.points(from, to); n > int64(o.MaxPoints) {
				return level{}, status.Errorf(codes.InvalidArgument, "resolution %s over %s reads about %d points per series, more than query.max_points %d; use a coarser resolution, a shorter range or resolution AUTO",
					l.res, time.Duration(to-from)*time.Second, n, o.MaxPoints)
			}
			return l, nil
		}
		if want == monitorpb.Resolution_RESOLUTION_1M || want == monitorpb.Resolution_RESOLUTION_1H {
			return level{}, status.Errorf(codes.FailedPrecondition, "resolution %s: this broker keeps no rollups (storage.rollups.enabled is false)", want)
		}
		return level{}, status.Errorf(codes.InvalidArgument, "resolution %v is not one of AUTO, RAW, 1M, 1H", want)
	}
	first := 0
	for i, l := range ls {
		if l.res != storage.Raw && step >= int64(l.res) {
			first = i
		}
	}
	for _, l := range ls[first:] {
		if l.points(from, to) <= int64(o.MaxPoints) && l.covers(from, now) {
			return l, nil
		}
	}
	return ls[len(ls)-1], nil
}

// QueryRange returns one host's series over a time range, from the raw
// snapshots or the rollups (see chooseLevel); the response says which.
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
	qo := s.opts.Query.withDefaults()
	l, err := qo.chooseLevel(from, to, step, req.GetResolution(), s.opts.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.QueryTimeout)
	defer cancel()
	match := storage.NewMatcher(req.GetNames())
	out := &monitorpb.QueryRangeResponse{HostId: req.GetHostId(), Resolution: l.pb}
	if l.res == storage.Raw {
		snaps, err := s.store.Range(ctx, storage.RangeQuery{HostID: req.GetHostId(), From: from, To: to, Match: match})
		if err != nil {
			return nil, storageErr("range query", err)
		}
		out.Series, out.Step, out.SnapshotsRead = toSeries(snaps, step), step, uint32(len(snaps))
		return out, nil
	}
	rs, err := s.store.RangeRollup(ctx, storage.RollupQuery{HostID: req.GetHostId(), Resolution: l.res, From: from, To: to, Match: match})
	if err != nil {
		return nil, storageErr("range query", err)
	}
	// Points are whole buckets: a step is rounded up to a multiple of the
	// bucket width, so every point aggregates the same number of buckets.
	// (A step longer than the range gives one point either way; capping it
	// keeps the rounding from overflowing.)
	w := int64(l.res)
	st := min(step, to-from+w)
	out.Step = max(w, (st+w-1)/w*w)
	out.Series, out.BucketsRead = rollupSeries(rs, out.Step), uint32(bucketsRead(rs))
	return out, nil
}

// Subscribe streams stored snapshots as they are stored.
func (s *Service) Subscribe(req *monitorpb.SubscribeRequest, stream monitorpb.MonitorService_SubscribeServer) error {
	for _, id := range req.GetHostIds() {
		if err := storage.ValidateHostID(id); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
	sub := s.hub.Subscribe(req.GetHostIds(), s.opts.SubscriberBuffer)
	defer sub.Close()
	enc := newBatchEncoder() // see storedbatch.go
	var snaps []storage.Snapshot
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case d, ok := <-sub.C():
			if !ok {
				return errDraining
			}
			// The hub gets one delivery per agent batch, often of one
			// snapshot. What else is already queued goes in the same
			// message: a reader that fell behind gets fewer, larger
			// messages (less per-message work on both sides) and the
			// queue empties sooner. The gap markers add up; the reader
			// catches up before it takes the message's snapshots, which
			// were stored, so none is lost.
			snaps = append(snaps[:0], d.Snapshots...)
			dropped, closed, n := d.Dropped, false, samplesIn(d.Snapshots)
			for more := true; more && n < maxCoalescedSamples; {
				select {
				case d, ok := <-sub.C():
					if !ok {
						more, closed = false, true
						break
					}
					snaps = append(snaps, d.Snapshots...)
					dropped += d.Dropped
					n += samplesIn(d.Snapshots)
				default:
					more = false
				}
			}
			if err := stream.SendMsg(&encodedBatch{b: enc.encode(snaps, dropped)}); err != nil {
				return err
			}
			clear(snaps) // no references kept to what was sent
			if closed {
				return errDraining
			}
		}
	}
}

// maxCoalescedSamples bounds the samples Subscribe puts in one message by
// coalescing queued deliveries (a delivery itself is never split): about
// 1 MB encoded, well under gRPC's default 4 MB receive limit.
const maxCoalescedSamples = 1 << 14

func samplesIn(snaps []storage.Snapshot) int {
	n := 0
	for i := range snaps {
		n += len(snaps[i].Samples)
	}
	return n
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

// toSeries regroups snapshots by series; step > 0 aggregates the samples of
// each step-aligned bucket (timestamp = bucket start, value = average).
func toSeries(snaps []storage.Snapshot, step int64) []*monitorpb.Series {
	type acc struct {
		series *monitorpb.Series
		bucket int64
		agg    storage.Aggregate
	}
	bySeries := map[string]*acc{}
	var order []string
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
			if a.agg.Count > 0 && b != a.bucket {
				a.series.Points = append(a.series.Points, aggregatePoint(a.bucket, &a.agg))
				a.agg = storage.Aggregate{}
			}
			a.bucket = b
			a.agg.Add(ts, smp.Value, smp.Unit)
		}
	}
	sort.Strings(order)
	out := make([]*monitorpb.Series, 0, len(order))
	for _, k := range order {
		a := bySeries[k]
		if a.agg.Count > 0 {
			a.series.Points = append(a.series.Points, aggregatePoint(a.bucket, &a.agg))
		}
		out = append(out, a.series)
	}
	return out
}

// rollupSeries turns rollup buckets into series; a step wider than the
// buckets merges them per step-aligned bucket.
func rollupSeries(rs []storage.RollupSeries, step int64) []*monitorpb.Series {
	out := make([]*monitorpb.Series, 0, len(rs))
	for i := range rs {
		r := &rs[i]
		name, labels, err := storage.ParseSeries(r.Series)
		if err != nil || len(r.Points) == 0 {
			continue // validated on the way in; unreachable unless storage was edited by hand
		}
		ser := &monitorpb.Series{Name: name, Labels: labels, Unit: r.Points[len(r.Points)-1].Unit, Points: make([]*monitorpb.Point, 0, len(r.Points))}
		var agg storage.Aggregate
		var bucket int64
		for j := range r.Points {
			p := &r.Points[j]
			b := p.Start - p.Start%step
			if agg.Count > 0 && b != bucket {
				ser.Points = append(ser.Points, aggregatePoint(bucket, &agg))
				agg = storage.Aggregate{}
			}
			bucket = b
			agg.Merge(p.Aggregate)
		}
		if agg.Count > 0 {
			ser.Points = append(ser.Points, aggregatePoint(bucket, &agg))
		}
		out = append(out, ser)
	}
	return out
}

func aggregatePoint(ts int64, a *storage.Aggregate) *monitorpb.Point {
	return &monitorpb.Point{Timestamp: ts, Value: a.Avg(), Min: a.Min, Max: a.Max, Count: uint64(a.Count), Last: a.Last}
}

// bucketsRead counts the distinct buckets behind rs.
func bucketsRead(rs []storage.RollupSeries) int {
	starts := map[int64]struct{}{}
	for i := range rs {
		for j := range rs[i].Points {
			starts[rs[i].Points[j].Start] = struct{}{}
		}
	}
	return len(starts)
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
