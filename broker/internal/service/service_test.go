package service

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/broker/internal/ingest"
	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/embedded"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func opts(now time.Time) Options {
	return Options{
		Limits:       ingest.Limits{MaxBatchSnapshots: 100, MaxSamplesPerSnapshot: 100, MaxFutureSkew: time.Minute, MaxAge: 7 * 24 * time.Hour},
		WriteTimeout: 2 * time.Second, RetryAfter: 50 * time.Millisecond,
		HeartbeatInterval: 10 * time.Second, OfflineAfter: 30 * time.Second,
		MaxRange: 7 * 24 * time.Hour, QueryTimeout: 5 * time.Second,
		Now: func() time.Time { return now },
	}
}

// serve starts the service on a real gRPC server on loopback.
func serve(t *testing.T, store storage.Store, o Options) (*Service, monitorpb.MonitorServiceClient) {
	t.Helper()
	svc := New(store, o, quiet)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	monitorpb.RegisterMonitorServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		svc.Drain()
		srv.Stop()
	})
	return svc, monitorpb.NewMonitorServiceClient(conn)
}

func openEmbedded(t *testing.T) storage.Store { return openEmbeddedTB(t) }

func openEmbeddedTB(t testing.TB) storage.Store {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{Retention: 7 * 24 * time.Hour, SweepInterval: time.Hour}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func snap(host string, ts int64, vals ...float64) *monitorpb.Snapshot {
	s := &monitorpb.Snapshot{HostId: host, Timestamp: ts}
	for i, v := range vals {
		name := []string{"cpu.usage_percent", "mem.used_percent", "load.1"}[i]
		s.Metrics = append(s.Metrics, &monitorpb.Metric{Name: name, Value: v, Unit: "%"})
	}
	return s
}

func batch(seq uint64, snaps ...*monitorpb.Snapshot) *monitorpb.IngestRequest {
	return &monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: &monitorpb.Batch{Seq: seq, Snapshots: snaps}}}
}

func hello(t *testing.T, c monitorpb.MonitorServiceClient) monitorpb.MonitorService_IngestClient {
	t.Helper()
	st, err := c.Ingest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: "t"}}}); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestIngestAcksStoresAndRejects(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	store := openEmbedded(t)
	svc, c := serve(t, store, opts(now))
	sub, err := c.Subscribe(context.Background(), &monitorpb.SubscribeRequest{HostIds: []string{"web-1"}})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, svc, 1)
	st := hello(t, c)
	bad := snap("web-1", now.Unix(), 5)
	bad.Metrics = append(bad.Metrics, &monitorpb.Metric{Name: "bad name", Value: 1})
	for seq, s := range []*monitorpb.Snapshot{snap("web-1", now.Unix()-10, 1, 2), bad, snap("web:2", now.Unix(), 1)} {
		if err := st.Send(batch(uint64(seq+1), s)); err != nil {
			t.Fatal(err)
		}
	}
	var acks []*monitorpb.Ack
	for len(acks) < 3 {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, resp.GetAck())
	}
	if acks[0].GetAckedSeq() != 1 || acks[0].GetStoredSamples() != 2 || len(acks[0].GetRejections()) != 0 {
		t.Fatalf("ack 1: %v", acks[0])
	}
	if acks[1].GetAckedSeq() != 2 || acks[1].GetStoredSamples() != 1 || len(acks[1].GetRejections()) != 1 || acks[1].GetRejections()[0].GetMetric() != "bad name" {
		t.Fatalf("ack 2 must keep the good sample and name the bad one: %v", acks[1])
	}
	if acks[2].GetAckedSeq() != 3 || acks[2].GetStoredSnapshots() != 0 || !strings.Contains(acks[2].GetRejections()[0].GetReason(), "host id") {
		t.Fatalf("ack 3: %v", acks[2])
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("after CloseSend the broker must end the stream cleanly, got %v", err)
	}
	got, err := store.Range(context.Background(), storage.RangeQuery{HostID: "web-1", From: now.Unix() - 60, To: now.Unix()})
	if err != nil || len(got) != 2 {
		t.Fatalf("stored %d snapshots (err %v), want 2", len(got), err)
	}
	// The two stored snapshots, in order, in one message or two (the
	// stream coalesces deliveries queued at once).
	var metrics []int
	for len(metrics) < 2 {
		msg, err := sub.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetDropped() != 0 {
			t.Fatalf("subscriber got %v: a gap marker", msg)
		}
		for _, s := range msg.GetSnapshots() {
			metrics = append(metrics, len(s.GetMetrics()))
		}
	}
	if !slices.Equal(metrics, []int{2, 1}) {
		t.Fatalf("subscriber got snapshots of %v metrics, want [2 1]", metrics)
	}
	if s := svc.Stats(); s.BatchesAcked != 3 || s.SnapshotsStored != 2 || s.SamplesStored != 3 || s.Rejections != 2 {
		t.Fatalf("stats: %+v", s)
	}
}

func waitSubscribers(t *testing.T, svc *Service, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for svc.hub.Len() < n {
		if time.Now().After(deadline) {
			t.Fatalf("subscriber not registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWriteFailureBecomesFlowControl stops the real Redis under a stream:
// the broker must not ack, must ask for a resend, must ignore what the agent
// sent meanwhile, and must store everything once Redis is back.
func TestWriteFailureBecomesFlowControl(t *testing.T) {
	rs := redistest.Start(t)
	store, err := redisstore.New(context.Background(), redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: rs.Addr}}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Unix(time.Now().Unix(), 0)
	o := opts(now)
	o.WriteTimeout = 300 * time.Millisecond
	svc, c := serve(t, store, o)
	st := hello(t, c)
	if err := st.Send(batch(1, snap("h1", now.Unix()-3, 1))); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetAck().GetAckedSeq() != 1 {
		t.Fatalf("first ack: %v %v", r, err)
	}
	rs.Stop()
	_ = st.Send(batch(2, snap("h1", now.Unix()-2, 2)))
	_ = st.Send(batch(3, snap("h1", now.Unix()-1, 3)))
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	fc := r.GetFlowControl()
	if fc == nil || fc.GetResendFromSeq() != 2 || fc.GetRetryAfterMs() < 25 || fc.GetRetryAfterMs() > 75 || fc.GetReason() == "" { // retry_after 50ms ±50 % jitter
		t.Fatalf("want FlowControl{resend_from_seq: 2}, got %v", r)
	}
	rs.Restart(t)
	// Resend from 2 as told; batch 3 sent before the FlowControl was ignored.
	_ = st.Send(batch(2, snap("h1", now.Unix()-2, 2)))
	_ = st.Send(batch(3, snap("h1", now.Unix()-1, 3)))
	for want := uint64(2); want <= 3; want++ {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetAck().GetAckedSeq() != want {
			t.Fatalf("want ack %d, got %v", want, r)
		}
	}
	snaps, err := store.Range(context.Background(), storage.RangeQuery{HostID: "h1", From: now.Unix() - 2, To: now.Unix()})
	if err != nil || len(snaps) != 2 {
		t.Fatalf("after recovery %d snapshots stored (err %v), want 2", len(snaps), err)
	}
	if s := svc.Stats(); s.FlowControlSent != 1 || s.IgnoredAfterFlow != 1 {
		t.Fatalf("stats: %+v", s)
	}
}

func TestDrainEndsIngestWithUnavailable(t *testing.T) {
	svc, c := serve(t, openEmbedded(t), opts(time.Now()))
	st := hello(t, c)
	if err := st.Send(batch(1, snap("h", time.Now().Unix(), 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	svc.Drain()
	_, err := st.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("want Unavailable after drain, got %v", err)
	}
	// A stream opened after the drain is refused before it says Hello (so
	// the Hello itself may already meet the closed stream).
	late, err := c.Ingest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("new stream after drain: %v", err)
	}
}

func TestIngestProtocolErrors(t *testing.T) {
	_, c := serve(t, openEmbedded(t), opts(time.Now()))
	st, _ := c.Ingest(context.Background())
	_ = st.Send(batch(1))
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "Hello") {
		t.Fatalf("batch before hello: %v", err)
	}
	st = hello(t, c)
	_ = st.Send(batch(0))
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("seq 0: %v", err)
	}
}

func TestRegistryAndQueries(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	store := openEmbedded(t)
	_, c := serve(t, store, opts(now))
	ctx := context.Background()
	if _, err := c.Register(ctx, &monitorpb.RegisterRequest{Host: &monitorpb.HostInfo{HostId: "db-1", Hostname: "db-1.example", CpuCount: 8, Labels: map[string]string{"role": "db"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, &monitorpb.RegisterRequest{Host: &monitorpb.HostInfo{HostId: "bad:id"}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad host id: %v", err)
	}
	hosts, err := c.ListHosts(ctx, &monitorpb.ListHostsRequest{})
	if err != nil || len(hosts.GetHosts()) != 1 || !hosts.GetHosts()[0].GetOnline() {
		t.Fatalf("a host that just registered must be online before its first heartbeat: %v %v", hosts, err)
	}
	if r, err := c.Heartbeat(ctx, &monitorpb.HeartbeatRequest{HostId: "db-1"}); err != nil || !r.GetRegistered() {
		t.Fatalf("heartbeat: %v %v", r, err)
	}
	if r, err := c.Heartbeat(ctx, &monitorpb.HeartbeatRequest{HostId: "ghost"}); err != nil || r.GetRegistered() {
		t.Fatalf("heartbeat of unknown host must say not registered: %v %v", r, err)
	}
	var snaps []storage.Snapshot
	for i := int64(0); i < 12; i++ {
		snaps = append(snaps, storage.Snapshot{HostID: "db-1", Timestamp: now.Unix() - 110 + i*10, Samples: []storage.Sample{
			{Series: "cpu.usage_percent", Value: float64(i), Unit: "%"},
			{Series: "net.rx_bytes_per_sec{interface=eth0}", Value: 100, Unit: "bytes/s"},
		}})
	}
	if err := store.WriteSnapshots(ctx, snaps); err != nil {
		t.Fatal(err)
	}
	hosts, err = c.ListHosts(ctx, &monitorpb.ListHostsRequest{})
	if err != nil || len(hosts.GetHosts()) != 1 {
		t.Fatalf("hosts: %v %v", hosts, err)
	}
	h := hosts.GetHosts()[0]
	if !h.GetOnline() || h.GetLastData() != now.Unix() || h.GetInfo().GetCpuCount() != 8 || h.GetInfo().GetLabels()["role"] != "db" {
		t.Fatalf("host status: %v", h)
	}
	latest, err := c.Latest(ctx, &monitorpb.LatestRequest{HostId: "db-1"})
	if err != nil || latest.GetSnapshot().GetTimestamp() != now.Unix() || len(latest.GetSnapshot().GetMetrics()) != 2 {
		t.Fatalf("latest: %v %v", latest, err)
	}
	if m := latest.GetSnapshot().GetMetrics()[1]; m.GetName() != "net.rx_bytes_per_sec" || m.GetLabels()["interface"] != "eth0" {
		t.Fatalf("labels not split back out of the series key: %v", m)
	}
	if r, err := c.Latest(ctx, &monitorpb.LatestRequest{HostId: "nobody"}); err != nil || r.GetSnapshot() != nil {
		t.Fatalf("latest of unknown host: %v %v", r, err)
	}
	// Raw range, then a 60 s step averaging each bucket.
	q := &monitorpb.QueryRangeRequest{HostId: "db-1", Names: []string{"cpu.usage_percent"}, From: now.Unix() - 110, To: now.Unix()}
	r, err := c.QueryRange(ctx, q)
	if err != nil || len(r.GetSeries()) != 1 || len(r.GetSeries()[0].GetPoints()) != 12 || r.GetSnapshotsRead() != 12 ||
		r.GetResolution() != monitorpb.Resolution_RESOLUTION_RAW {
		t.Fatalf("raw range: %v %v", r, err)
	}
	// A 60 s step reads the minute rollups.
	q.Step = 60
	r, err = c.QueryRange(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetResolution() != monitorpb.Resolution_RESOLUTION_1M || r.GetStep() != 60 || r.GetBucketsRead() != 3 {
		t.Fatalf("step 60: resolution %v step %d buckets %d", r.GetResolution(), r.GetStep(), r.GetBucketsRead())
	}
	// now is minute-aligned: buckets hold samples 0-4, 5-10 and 11.
	want := [][2]float64{{float64(now.Unix() - 120), 2}, {float64(now.Unix() - 60), 7.5}, {float64(now.Unix()), 11}}
	pts := r.GetSeries()[0].GetPoints()
	if len(pts) != len(want) {
		t.Fatalf("step 60: %v", pts)
	}
	for i, p := range pts {
		if float64(p.GetTimestamp()) != want[i][0] || p.GetValue() != want[i][1] {
			t.Fatalf("bucket %d = (%d, %v), want %v", i, p.GetTimestamp(), p.GetValue(), want[i])
		}
	}
	for _, bad := range []*monitorpb.QueryRangeRequest{
		{HostId: "db-1", From: 10, To: 5},
		{HostId: "db-1", From: 0, To: 5},
		{HostId: "db-1", From: 1, To: 1 + 8*24*3600},
		{HostId: "db-1", From: 1, To: 2, Step: -1},
		{HostId: "db:1", From: 1, To: 2},
	} {
		if _, err := c.QueryRange(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("query %v: want InvalidArgument, got %v", bad, err)
		}
	}
}
