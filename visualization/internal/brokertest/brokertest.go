// Package brokertest runs a stand-in broker for the visualization server's
// tests: a real gRPC server on a free loopback port serving the read side of
// monitorpb.MonitorService (ListHosts, Latest, QueryRange) from data the test
// sets, the Subscribe stream (batches the test publishes), and the parts of
// ClusterService the server calls (Status, alert rules), recording the
// authorization metadata they came with. StartWith serves TLS (optionally
// mTLS) and can refuse calls without the cluster secret, as a broker with
// auth on does. It validates requests the way a broker must (host ids, series names)
// and answers InvalidArgument for bad ones, so the HTTP edge's error mapping
// is exercised against real gRPC status codes.
//
// Concurrency: every method is safe for concurrent use; the server's
// goroutines end in Stop, which t.Cleanup calls.
package brokertest

import (
	"context"
	"crypto/tls"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Broker is a running stand-in broker.
type Broker struct {
	monitorpb.UnimplementedMonitorServiceServer
	cluster clusterService

	// Addr is the gRPC address, 127.0.0.1:port.
	Addr string

	srv       *grpc.Server
	calls     atomic.Int64
	listHosts atomic.Int64

	mu        sync.Mutex
	hosts     []*monitorpb.HostStatus
	latest    map[string]*monitorpb.Snapshot
	series    map[string][]*monitorpb.Series
	lastQuery *monitorpb.QueryRangeRequest
	fail      error
	block     chan struct{}
	stopped   bool
	subs      map[chan *monitorpb.StoredBatch]struct{}
	status    *monitorpb.StatusResponse
	rules     map[string]*monitorpb.AlertRule
	auth      []string // authorization metadata of ClusterService calls
	allAuth   []string // authorization metadata of every call
	methods   []string // the full method name of each of allAuth
	secret    string   // Options.RequireSecret
}

// Options configure StartWith.
type Options struct {
	// TLS serves gRPC over TLS with this config (ClientAuth in it makes it
	// mTLS). Nil: plaintext.
	TLS *tls.Config
	// RequireSecret refuses every call (streams included) whose
	// authorization metadata is not "Bearer <RequireSecret>" with
	// Unauthenticated. Empty: calls are not checked.
	RequireSecret string
	// Listen is the address to serve on; default 127.0.0.1:0.
	Listen string
}

// Start serves a plaintext stand-in broker on 127.0.0.1:0 until the test
// ends.
func Start(t testing.TB) *Broker { return StartWith(t, Options{}) }

// StartWith serves a stand-in broker with opts until the test ends.
func StartWith(t testing.TB, opts Options) *Broker {
	t.Helper()
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		t.Fatalf("listen for stand-in broker: %v", err)
	}
	var sopts []grpc.ServerOption
	if opts.TLS != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	b := &Broker{
		Addr:   lis.Addr().String(),
		secret: opts.RequireSecret,
		latest: map[string]*monitorpb.Snapshot{},
		series: map[string][]*monitorpb.Series{},
		subs:   map[chan *monitorpb.StoredBatch]struct{}{},
		rules:  map[string]*monitorpb.AlertRule{},
	}
	sopts = append(sopts, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := b.checkAuth(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}), grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := b.checkAuth(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}))
	b.srv = grpc.NewServer(sopts...)
	b.cluster.b = b
	monitorpb.RegisterMonitorServiceServer(b.srv, b)
	monitorpb.RegisterClusterServiceServer(b.srv, &b.cluster)
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
	for ch := range b.subs {
		close(ch)
	}
	b.subs = map[chan *monitorpb.StoredBatch]struct{}{}
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

// ListHostsCalls returns how many ListHosts RPCs reached this broker.
func (b *Broker) ListHostsCalls() int64 { return b.listHosts.Load() }

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
	b.listHosts.Add(1)
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

// subscriberBuffer is each stand-in subscription's queue; Publish blocks
// when a subscriber is this far behind (tests publish little).
const subscriberBuffer = 1024

// Subscribe implements monitorpb.MonitorServiceServer: every batch given to
// Publish, until the client leaves, Stop or KickSubscribers.
func (b *Broker) Subscribe(req *monitorpb.SubscribeRequest, stream monitorpb.MonitorService_SubscribeServer) error {
	if err := b.enter(stream.Context()); err != nil {
		return err
	}
	ch := make(chan *monitorpb.StoredBatch, subscriberBuffer)
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return status.Error(codes.Unavailable, "stand-in broker stopped")
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case batch, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "stand-in broker ended the stream")
			}
			if err := stream.Send(batch); err != nil {
				return err
			}
		}
	}
}

// Subscribers returns the number of open Subscribe streams.
func (b *Broker) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Publish sends batch to every open Subscribe stream.
func (b *Broker) Publish(batch *monitorpb.StoredBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		ch <- proto.Clone(batch).(*monitorpb.StoredBatch)
	}
}

// KickSubscribers ends every open Subscribe stream with Unavailable, as a
// broker restart would; clients may subscribe again at once.
func (b *Broker) KickSubscribers() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		close(ch)
	}
	b.subs = map[chan *monitorpb.StoredBatch]struct{}{}
}

// SetStatus sets what ClusterService.Status returns; nil (the default)
// makes it answer Unimplemented, like a broker without a control plane.
func (b *Broker) SetStatus(st *monitorpb.StatusResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.status = st
}

// Auth returns the authorization metadata of every call so far, both
// services and streams, in order ("" for a call without).
func (b *Broker) Auth() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.allAuth...)
}

// AuthOf returns the authorization metadata of the calls of one method
// (its full name, e.g. "/monitor.v1.ClusterService/Watch"), in order.
func (b *Broker) AuthOf(method string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for i, m := range b.methods {
		if m == method {
			out = append(out, b.allAuth[i])
		}
	}
	return out
}

// checkAuth records a call's method and authorization metadata and, with
// RequireSecret, refuses a call without the secret.
func (b *Broker) checkAuth(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	v := ""
	if a := md.Get("authorization"); len(a) > 0 {
		v = a[0]
	}
	b.mu.Lock()
	b.allAuth = append(b.allAuth, v)
	b.methods = append(b.methods, method)
	b.mu.Unlock()
	if b.secret != "" && v != "Bearer "+b.secret {
		return status.Error(codes.Unauthenticated, "stand-in broker: the cluster secret is required")
	}
	return nil
}

// ClusterAuth returns the authorization metadata of every ClusterService
// call so far, in order ("" for a call without).
func (b *Broker) ClusterAuth() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.auth...)
}

// clusterService is the stand-in's ClusterService.
type clusterService struct {
	monitorpb.UnimplementedClusterServiceServer
	b *Broker
}

// enter counts the call and records its authorization metadata.
func (c *clusterService) enter(ctx context.Context) error {
	if err := c.b.enter(ctx); err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	v := ""
	if a := md.Get("authorization"); len(a) > 0 {
		v = a[0]
	}
	c.b.mu.Lock()
	c.b.auth = append(c.b.auth, v)
	c.b.mu.Unlock()
	return nil
}

// Status implements monitorpb.ClusterServiceServer.
func (c *clusterService) Status(ctx context.Context, _ *monitorpb.StatusRequest) (*monitorpb.StatusResponse, error) {
	if err := c.enter(ctx); err != nil {
		return nil, err
	}
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	if c.b.status == nil {
		return nil, status.Error(codes.Unimplemented, "method Status not implemented")
	}
	return proto.Clone(c.b.status).(*monitorpb.StatusResponse), nil
}

// ListAlertRules implements monitorpb.ClusterServiceServer, sorted by id.
func (c *clusterService) ListAlertRules(ctx context.Context, _ *monitorpb.ListAlertRulesRequest) (*monitorpb.ListAlertRulesResponse, error) {
	if err := c.enter(ctx); err != nil {
		return nil, err
	}
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	resp := &monitorpb.ListAlertRulesResponse{}
	for _, r := range c.b.rules {
		resp.Rules = append(resp.Rules, proto.Clone(r).(*monitorpb.AlertRule))
	}
	sort.Slice(resp.Rules, func(i, j int) bool { return resp.Rules[i].GetId() < resp.Rules[j].GetId() })
	return resp, nil
}

// PutAlertRule implements monitorpb.ClusterServiceServer.
func (c *clusterService) PutAlertRule(ctx context.Context, r *monitorpb.AlertRule) (*monitorpb.AlertRule, error) {
	if err := c.enter(ctx); err != nil {
		return nil, err
	}
	if r.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "alert rule without id")
	}
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.b.rules[r.GetId()] = proto.Clone(r).(*monitorpb.AlertRule)
	return proto.Clone(r).(*monitorpb.AlertRule), nil
}

// RemoveAlertRule implements monitorpb.ClusterServiceServer.
func (c *clusterService) RemoveAlertRule(ctx context.Context, r *monitorpb.DeleteAlertRule) (*monitorpb.DeleteAlertRuleResponse, error) {
	if err := c.enter(ctx); err != nil {
		return nil, err
	}
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	_, ok := c.b.rules[r.GetId()]
	delete(c.b.rules, r.GetId())
	return &monitorpb.DeleteAlertRuleResponse{Existed: ok}, nil
}
