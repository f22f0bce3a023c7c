package service

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// benchBatch is one stored batch as the write queue hands it to the hub:
// n snapshots of 50 metrics (the agent's series, pkg/loadgen), distinct
// hosts.
func benchBatch(tb testing.TB, n int, ts int64) []storage.Snapshot {
	tb.Helper()
	tpl, err := loadgen.NewTemplate(50)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]storage.Snapshot, n)
	for i := range out {
		out[i] = tpl.Snapshot(fmt.Sprintf("bench-%05d", i), ts, uint64(i))
	}
	return out
}

// countingMsg reads a StoredBatch on the client side without decoding it
// (only the snapshots are counted), so the benchmark below measures the
// broker's side of the stream.
type countingMsg struct{ snapshots, dropped uint64 }

func (m *countingMsg) Reset()         { *m = countingMsg{} }
func (m *countingMsg) String() string { return "countingMsg" }
func (m *countingMsg) ProtoMessage()  {}
func (m *countingMsg) Unmarshal(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 2 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m.dropped += v
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num == 1 {
			m.snapshots++
		}
		b = b[n:]
	}
	return nil
}

// BenchmarkSubscribeStream publishes stored batches (of 1 snapshot, as the
// hub gets them from agents sending one snapshot per batch, and of 50) of
// the agent's 50 metrics to the hub of a service on a real gRPC server,
// read by one Subscribe client on loopback that only counts what arrives.
// One iteration is one batch; it reports the process's CPU per snapshot
// (the client's reads included) and allocations per snapshot. Profile with
//
//	go test -run '^$' -bench SubscribeStream/batch=50 -benchtime 2000x -cpuprofile /tmp/sub.prof ./broker/internal/service/
func BenchmarkSubscribeStream(b *testing.B) {
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) { benchSubscribeStream(b, n) })
	}
}

func benchSubscribeStream(b *testing.B, perBatch int) {
	o := opts(time.Unix(2000, 0))
	o.SubscriberBuffer = 64
	svc, addr := serveService(b, discardStore{Store: openEmbeddedTB(b)}, o)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := conn.NewStream(ctx, &monitorpb.MonitorService_ServiceDesc.Streams[1], monitorpb.MonitorService_Subscribe_FullMethodName)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.SendMsg(&monitorpb.SubscribeRequest{}); err != nil {
		b.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); svc.hub.Len() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("subscriber not registered")
		}
	}
	var got, dropped atomic.Uint64
	// Stay within the subscriber's queue (a drop would be a gap, not a
	// measurement): at most 16 batches in flight.
	inflight := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() {
		for {
			var m countingMsg
			if err := st.RecvMsg(&m); err != nil {
				done <- err
				return
			}
			got.Add(m.snapshots)
			dropped.Add(m.dropped)
			for range m.snapshots / uint64(perBatch) { // one per delivery coalesced
				<-inflight
			}
		}
	}()
	batch := benchBatch(b, perBatch, 1000)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	c0 := cpuNow()
	sent := uint64(0)
	for b.Loop() {
		inflight <- struct{}{}
		svc.hub.Publish(batch)
		sent += uint64(perBatch)
	}
	for deadline := time.Now().Add(30 * time.Second); got.Load()+dropped.Load()*uint64(perBatch) < sent; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d snapshots", got.Load(), sent)
		}
	}
	cpu := cpuNow() - c0
	runtime.ReadMemStats(&ms1)
	if d := dropped.Load(); d > 0 {
		b.Fatalf("the hub dropped %d batches", d)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(sent), "cpu-ns/snapshot")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(sent), "allocs/snapshot")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(sent), "B/snapshot")
	cancel()
	<-done
}

// serveService starts the service on a real gRPC server on loopback.
func serveService(tb testing.TB, store storage.Store, o Options) (*Service, string) {
	tb.Helper()
	svc := New(store, o, quiet)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer()
	monitorpb.RegisterMonitorServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(func() {
		svc.Drain()
		srv.Stop()
	})
	return svc, lis.Addr().String()
}
