package faults

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/loadgen"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// TestSlowSubscriberIsBoundedOthersUnaffected opens two Subscribe streams
// on a broker under ingest load: one never reads (its gRPC window is the
// minimum, so the broker's send blocks at once), one reads everything. The
// slow one's queue fills and the broker drops for it alone, counting the
// drops (memory stays bounded by the queue); the reading one receives every
// stored snapshot with no gap marker, and ingest loses nothing.
func TestSlowSubscriberIsBoundedOthersUnaffected(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	b := startBroker(t, rs.Addr, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	slowConn, err := grpc.NewClient(b.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	if _, err := monitorpb.NewMonitorServiceClient(slowConn).Subscribe(ctx, &monitorpb.SubscribeRequest{}); err != nil {
		t.Fatal(err)
	}
	fastConn, err := grpc.NewClient(b.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer fastConn.Close()
	fast, err := monitorpb.NewMonitorServiceClient(fastConn).Subscribe(ctx, &monitorpb.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got, gaps atomic.Uint64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			m, err := fast.Recv()
			if err != nil {
				return
			}
			got.Add(uint64(len(m.GetSnapshots())))
			gaps.Add(m.GetDropped())
		}
	}()

	// About 1,000 batches/s, which the reading subscriber keeps up with.
	hosts, interval := 50, 50*time.Millisecond
	if long() {
		hosts, interval = 300, 300*time.Millisecond
	}
	l := startLoad(t, loadgen.Config{Brokers: []string{b.GRPCAddr()}, Hosts: hosts, Interval: interval,
		Conns: 2, Metrics: 20, Prefix: "sub"})
	var heap0 runtime.MemStats
	eventually(t, 120*time.Second, func() error {
		if d := b.Stats().SubscriberDrops; d < 2000 {
			return fmt.Errorf("%d drops for the slow subscriber so far", d)
		}
		return nil
	})
	runtime.GC()
	runtime.ReadMemStats(&heap0)
	dropsAt := b.Stats().SubscriberDrops
	l.progress(t, 40, 120*time.Second, "ingest with a stuck subscriber")
	var heap1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap1)
	res, err := l.finish()
	if err != nil {
		t.Fatal(err)
	}
	st := b.Stats()
	eventually(t, 30*time.Second, func() error {
		if got.Load() != st.SnapshotsStored {
			return fmt.Errorf("the reading subscriber has %d of %d stored snapshots", got.Load(), st.SnapshotsStored)
		}
		return nil
	})
	cancel()
	<-readDone
	figure(t, "slowsub_ingest_streams", hosts, "streams")
	figure(t, "slowsub_stored_snapshots", st.SnapshotsStored, "snapshots")
	figure(t, "slowsub_drops", st.SubscriberDrops, "batches")
	figure(t, "slowsub_heap_growth_while_dropping_kb", (int64(heap1.HeapInuse)-int64(heap0.HeapInuse))/1024, "KiB")
	figure(t, "slowsub_fast_received", got.Load(), "snapshots")
	figure(t, "slowsub_fast_gaps", gaps.Load(), "batches")
	figure(t, "slowsub_ingest_lost", res.Lost, "snapshots")
	if gaps.Load() != 0 || res.Lost != 0 || res.Rejected != 0 {
		t.Fatalf("others affected: reading subscriber saw %d dropped batches; loadgen lost %d rejected %d", gaps.Load(), res.Lost, res.Rejected)
	}
	if st.SubscriberDrops <= dropsAt {
		t.Fatalf("the stuck subscriber stopped being dropped for (%d then %d): is its queue unbounded?", dropsAt, st.SubscriberDrops)
	}
}
