package service

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/monitorhq/monitor/broker/internal/ingest"
	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/queue"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// discardStore stores nothing: the benchmark below measures the broker's
// own ingest path (gRPC decoding, Convert, the write queue, the hub, acks)
// without a backend's cost.
type discardStore struct{ storage.Store }

func (discardStore) WriteSnapshots(context.Context, []storage.Snapshot) error { return nil }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIngestPath saturates the service on a real gRPC server with
// pkg/loadgen (100 hosts × 50 metrics, the agent's series) for 3 s per
// iteration, onto a store that discards. It reports snapshots/s and the
// whole process's CPU per snapshot (loadgen included); profile it with
//
//	go test -run '^$' -bench IngestPath -benchtime 1x -cpuprofile /tmp/ingest.prof ./broker/internal/service/
func BenchmarkIngestPath(b *testing.B) {
	o := Options{
		Limits:       ingest.Limits{MaxBatchSnapshots: 1000, MaxSamplesPerSnapshot: 1000, MaxFutureSkew: time.Minute, MaxAge: 7 * 24 * time.Hour},
		WriteTimeout: 5 * time.Second, RetryAfter: 50 * time.Millisecond, MaxInflightBatches: 16,
		HeartbeatInterval: 10 * time.Second, OfflineAfter: 30 * time.Second, MaxRange: 7 * 24 * time.Hour, QueryTimeout: 5 * time.Second,
		Queue: queue.Config{FlushSnapshots: 256, Workers: 2},
	}
	addr := serveAddr(b, discardStore{Store: openEmbeddedTB(b)}, o)
	var acked uint64
	var cpu time.Duration
	var el time.Duration
	for b.Loop() {
		g, err := loadgen.New(loadgen.Config{Brokers: []string{addr}, Hosts: 100, Interval: 0, Duration: 3 * time.Second, Metrics: 50}, nil)
		if err != nil {
			b.Fatal(err)
		}
		c0, t0 := cpuNow(), time.Now()
		res, err := g.Run(context.Background())
		cpu += cpuNow() - c0
		el += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if res.Lost > 0 || res.Errors > 0 || res.Rejected > 0 {
			b.Fatalf("loadgen: %s", res)
		}
		acked += res.Acked
	}
	b.ReportMetric(float64(acked)/el.Seconds(), "snapshots/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(acked), "cpu-µs/snapshot")
}

// serveAddr starts the service on a real gRPC server on loopback and
// returns its address.
func serveAddr(tb testing.TB, store storage.Store, o Options) string {
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
	return lis.Addr().String()
}
