package service

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// TestSubscribeCoalescesWhatIsQueued: while a reader does not read, the
// deliveries queue up in the hub; once it reads, they come in fewer, larger
// messages, every snapshot once and in order, none dropped, and no message
// beyond the coalescing bound.
func TestSubscribeCoalescesWhatIsQueued(t *testing.T) {
	o := opts(time.Unix(2000, 0))
	o.SubscriberBuffer = 4096
	svc, addr := serveService(t, discardStore{Store: openEmbedded(t)}, o)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := monitorpb.NewMonitorServiceClient(conn).Subscribe(ctx, &monitorpb.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, svc, 1)

	// 2,000 deliveries of one snapshot of 50 samples (≈ 2 KB encoded):
	// far more than the 64 KB window lets through unread.
	const n = 2000
	tpl := benchBatch(t, 1, 1000)[0]
	for i := range n {
		s := tpl
		s.Timestamp = int64(1000 + i)
		svc.hub.Publish([]storage.Snapshot{s})
	}
	msgs, got := 0, 0
	for got < n {
		m, err := sub.Recv()
		if err != nil {
			t.Fatalf("after %d snapshots: %v", got, err)
		}
		msgs++
		if m.GetDropped() != 0 {
			t.Fatalf("message %d: %d batches dropped", msgs, m.GetDropped())
		}
		if samples := len(m.GetSnapshots()) * len(tpl.Samples); samples > maxCoalescedSamples+len(tpl.Samples) {
			t.Fatalf("message %d holds %d samples, beyond the bound %d", msgs, samples, maxCoalescedSamples)
		}
		for _, s := range m.GetSnapshots() {
			if want := int64(1000 + got); s.GetTimestamp() != want || len(s.GetMetrics()) != len(tpl.Samples) {
				t.Fatalf("snapshot %d: timestamp %d with %d metrics, want %d with %d", got, s.GetTimestamp(), len(s.GetMetrics()), want, len(tpl.Samples))
			}
			got++
		}
	}
	if msgs > n/2 {
		t.Fatalf("%d snapshots came in %d messages: queued deliveries were not coalesced", n, msgs)
	}
	t.Logf("FIGURE %d queued deliveries came in %d messages", n, msgs)
}
