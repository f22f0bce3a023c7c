// Package brokertest runs a stand-in broker for the visualization server's
// tests: a real gRPC server on a free loopback port serving the read side of
// monitorpb.MonitorService (ListHosts, Latest, QueryRange) from data the test
// sets. It validates requests the way a broker must (host ids, series names)
// and answers InvalidArgument for bad ones, so the HTTP edge's error mapping
// is exercised against real gRPC status codes.
//
// Concurrency: every method is safe for concurrent use; the server's
// goroutines end in Stop, which t.Cleanup calls.
package brokertest

import (
	"context"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Broker is a running stand-in broker.
type Broker struct {
	monitorpb.UnimplementedMonitorServiceServer

	// Addr is the gRPC address, 127.0.0.1:port.
	Addr string

	srv   *grpc.Server
	calls atomic.Int64

	mu        sync.Mutex
	hosts     []*monitorpb.HostStatus
	latest    map[string]*monitorpb.Snapshot
	series    map[string][]*monitorpb.Series
	lastQuery *monitorpb.QueryRangeRequest
	fail      error
	block     chan struct{}
	stopped   bool
}

// Start serves a stand-in broker on 127.0.0.1:0 until the test ends.
func Start(t testing.TB) *Broker {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen for stand-in broker: %v", err)
	}
	b := &Broker{
		Addr:   lis.Addr().String(),
		srv:    grpc.NewServer(),
		latest: map[string]*monitorpb.Snapshot{},
		series: map[string][]*monitorpb.Series{},
	}
	monitorpb.RegisterMonitorServiceServer(b.srv, b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.srv.Serve(lis)
	}()
	t.Cleanup(func() {
		b.Stop()
		<-done
	})
	return b
}

// Stop stops the server and closes its connections; calls to it then fail
// with Unavailable. It is safe to call twice.
func (b *Broker) Stop() {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	b.stopped = true
	if b.block != nil {
		close(b.block)
		b.block = nil
	}
	b.mu.Unlock()
	b.srv.Stop()
}

// SetHosts replaces the host list ListHosts returns.
func (b *Broker) SetHosts(hosts ...*monitorpb.HostStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hosts = hosts
}

// SetLatest sets the snapshot Latest returns for its host.
func (b *Broker) SetLatest(snap *monitorpb.Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.latest[snap.GetHostId()] = snap
}

// SetSeries sets the stored series of host that QueryRange selects from.
func (b *Broker) SetSeries(hostID string, series ...*monitorpb.Series) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.series[hostID] = series
}

// FailWith makes every later call return err (a gRPC status error); nil
// restores normal answers.
func (b *Broker) FailWith(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = err
}

// Hang makes every later call wait until its deadline (or Stop), like a
// broker that accepts connections but never answers.
func (b *Broker) Hang() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.block == nil && !b.stopped {
		b.block = make(chan struct{})
	}
}

// Calls returns how many RPCs reached this broker.
func (b *Broker) Calls() int64 { return b.calls.Load() }

// LastQuery returns a copy of the last QueryRange request (nil: none).
func (b *Broker) LastQuery() *monitorpb.QueryRangeRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastQuery == nil {
		return nil
	}
	return proto.Clone(b.lastQuery).(*monitorpb.QueryRangeRequest)
}

// enter counts a call and applies FailWith and Hang.
func (b *Broker) enter(ctx context.Context) error {
	b.calls.Add(1)
	b.mu.Lock()
	fail, block := b.fail, b.block
	b.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Error(codes.Unavailable, "stand-in broker stopped")
	}
	return fail
}

// ListHosts implements monitorpb.MonitorServiceServer.
func (b *Broker) ListHosts(ctx context.Context, _ *monitorpb.ListHostsRequest) (*monitorpb.ListHostsResponse, error) {
	if err := b.enter(ctx); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	resp := &monitorpb.ListHostsResponse{}
	for _, h := range b.hosts {
		resp.Hosts = append(resp.Hosts, proto.Clone(h).(*monitorpb.HostStatus))
	}
	sort.Slice(resp.Hosts, func(i, j int) bool { return resp.Hosts[i].GetInfo().GetHostId() < resp.Hosts[j].GetInfo().GetHostId() })
	return resp, nil
}

// Latest implements monitorpb.MonitorServiceServer.
func (b *Broker) Latest(ctx context.Context, req *monitorpb.LatestRequest) (*monitorpb.LatestResponse, error) {
	if err := b.enter(ctx); err != nil {
		return nil, err
	}
	if err := storage.ValidateHostID(req.GetHostId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	resp := &monitorpb.LatestResponse{}
	if s, ok := b.latest[req.GetHostId()]; ok {
		resp.Snapshot = proto.Clone(s).(*monitorpb.Snapshot)
	}
	return resp, nil
}

// QueryRange implements monitorpb.MonitorServiceServer: the points of the
// matching series within [from, to]; the step is recorded, not applied.
func (b *Broker) QueryRange(ctx context.Context, req *monitorpb.QueryRangeRequest) (*monitorpb.QueryRangeResponse, error) {
	if err := b.enter(ctx); err != nil {
		return nil, err
	}
	if err := storage.ValidateHostID(req.GetHostId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetFrom() > req.GetTo() {
		return nil, status.Errorf(codes.InvalidArgument, "from %d is after to %d", req.GetFrom(), req.GetTo())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastQuery = proto.Clone(req).(*monitorpb.QueryRangeRequest)
	m := storage.NewMatcher(req.GetNames())
	resp := &monitorpb.QueryRangeResponse{HostId: req.GetHostId()}
	for _, s := range b.series[req.GetHostId()] {
		key, err := storage.SeriesKey(s.GetName(), s.GetLabels())
		if err != nil {
			return nil, status.Errorf(codes.Internal, "stored series: %v", err)
		}
		if !m.Match(key) {
			continue
		}
		out := &monitorpb.Series{Name: s.GetName(), Labels: s.GetLabels(), Unit: s.GetUnit()}
		for _, p := range s.GetPoints() {
			if p.GetTimestamp() >= req.GetFrom() && p.GetTimestamp() <= req.GetTo() {
				out.Points = append(out.Points, &monitorpb.Point{Timestamp: p.GetTimestamp(), Value: p.GetValue()})
			}
		}
		if len(out.Points) > 0 {
			resp.Series = append(resp.Series, out)
		}
	}
	return resp, nil
}
