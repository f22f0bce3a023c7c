package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/pkg/queue"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// gatedStore holds writes that touch a gated host until its gate is
// opened, and fails writes of hosts listed in failing.
type gatedStore struct {
	storage.Store
	mu      sync.Mutex
	gates   map[string]chan struct{}
	failing map[string]error
}

func (g *gatedStore) WriteSnapshots(ctx context.Context, snaps []storage.Snapshot) error {
	for i := range snaps {
		g.mu.Lock()
		gate := g.gates[snaps[i].HostID]
		err := g.failing[snaps[i].HostID]
		g.mu.Unlock()
		if err != nil {
			return err
		}
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return g.Store.WriteSnapshots(ctx, snaps)
}

func (g *gatedStore) setFailing(host string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil {
		delete(g.failing, host)
	} else {
		g.failing[host] = err
	}
}

func newGated(t *testing.T, gated ...string) (*gatedStore, map[string]chan struct{}) {
	g := &gatedStore{Store: openEmbedded(t), gates: map[string]chan struct{}{}, failing: map[string]error{}}
	for _, h := range gated {
		g.gates[h] = make(chan struct{})
	}
	return g, g.gates
}

func recvResp(t *testing.T, st monitorpb.MonitorService_IngestClient) *monitorpb.IngestResponse {
	t.Helper()
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return r
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestAcksInSequenceWhileWritesOverlap: batch 2 is stored while batch 1's
// write still hangs; the broker must not ack 2 before 1.
func TestAcksInSequenceWhileWritesOverlap(t *testing.T) {
	now := time.Now()
	store, gates := newGated(t, "slow")
	o := opts(now)
	o.Queue = queue.Config{FlushSnapshots: 1, Workers: 2}
	svc, c := serve(t, store, o)
	st := hello(t, c)
	if err := st.Send(batch(1, snap("slow", now.Unix(), 1))); err != nil {
		t.Fatal(err)
	}
	poll(t, "batch 1 in its write", func() bool { return svc.Stats().Queue.InFlight == 1 })
	if err := st.Send(batch(2, snap("fast", now.Unix(), 2))); err != nil {
		t.Fatal(err)
	}
	poll(t, "batch 2 stored", func() bool { return svc.Stats().Queue.Flushed == 1 })
	close(gates["slow"])
	for want := uint64(1); want <= 2; want++ {
		if r := recvResp(t, st); r.GetAck().GetAckedSeq() != want || r.GetAck().GetStoredSnapshots() != 1 {
			t.Fatalf("response %d: %v, want the ack of batch %d", want, r, want)
		}
	}
}

// TestFullQueueBecomesFlowControl fills the write queue behind a hanging
// write: the broker answers FlowControl "queue full" for the refused batch
// after acking the earlier ones, keeps the stream open, and stores the
// resend.
func TestFullQueueBecomesFlowControl(t *testing.T) {
	now := time.Now()
	store, gates := newGated(t, "h")
	o := opts(now)
	o.Queue = queue.Config{Capacity: 1, FlushSnapshots: 1, Workers: 1}
	svc, c := serve(t, store, o)
	st := hello(t, c)
	send := func(seq uint64) {
		t.Helper()
		if err := st.Send(batch(seq, snap("h", now.Unix()-int64(10-seq), float64(seq)))); err != nil {
			t.Fatal(err)
		}
	}
	send(1) // taken by the worker, hangs
	poll(t, "batch 1 in its write", func() bool { return svc.Stats().Queue.InFlight == 1 })
	send(2) // waits in the queue: it is full now
	poll(t, "batch 2 queued", func() bool { return svc.Stats().Queue.Depth == 1 })
	send(3) // refused
	poll(t, "batch 3 refused", func() bool { return svc.Stats().QueueFull == 1 })
	send(4) // ignored: 3 was not stored
	poll(t, "batch 4 ignored", func() bool { return svc.Stats().IgnoredAfterFlow == 1 })
	close(gates["h"])
	for want := uint64(1); want <= 2; want++ {
		if r := recvResp(t, st); r.GetAck().GetAckedSeq() != want {
			t.Fatalf("want ack %d, got %v", want, r)
		}
	}
	fc := recvResp(t, st).GetFlowControl()
	if fc.GetResendFromSeq() != 3 || fc.GetRetryAfterMs() < 25 || fc.GetRetryAfterMs() > 75 || fc.GetReason() != "queue full" {
		t.Fatalf("want FlowControl{resend_from_seq: 3, reason: queue full}, got %v", fc)
	}
	for seq := uint64(3); seq <= 4; seq++ { // one at a time: the queue holds one
		send(seq)
		if r := recvResp(t, st); r.GetAck().GetAckedSeq() != seq {
			t.Fatalf("after the resend want ack %d, got %v", seq, r)
		}
	}
	got, err := store.Range(context.Background(), storage.RangeQuery{HostID: "h", From: now.Unix() - 10, To: now.Unix()})
	if err != nil || len(got) != 4 {
		t.Fatalf("%d snapshots stored (err %v), want 4", len(got), err)
	}
	s := svc.Stats()
	if s.QueueFull != 1 || s.FlowControlSent != 1 || s.WriteFailures != 0 || s.Queue.Refused[queue.ReasonFull] != 1 || s.BatchesAcked != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// TestFailedWriteDiscardsLaterBatches: batch 1 fails while batch 2 (another
// host) is stored; the broker answers FlowControl from 1 and does not ack
// 2, which the agent resends with 1.
func TestFailedWriteDiscardsLaterBatches(t *testing.T) {
	now := time.Now()
	store, _ := newGated(t)
	store.setFailing("a", errors.New("shard down"))
	o := opts(now)
	o.Queue = queue.Config{FlushSnapshots: 1, Workers: 2}
	svc, c := serve(t, store, o)
	st := hello(t, c)
	_ = st.Send(batch(1, snap("a", now.Unix(), 1)))
	_ = st.Send(batch(2, snap("b", now.Unix(), 2)))
	fc := recvResp(t, st).GetFlowControl()
	if fc.GetResendFromSeq() != 1 || !strings.Contains(fc.GetReason(), "shard down") {
		t.Fatalf("want FlowControl from 1 naming the error, got %v", fc)
	}
	store.setFailing("a", nil)
	_ = st.Send(batch(1, snap("a", now.Unix(), 1)))
	_ = st.Send(batch(2, snap("b", now.Unix(), 2)))
	for want := uint64(1); want <= 2; want++ {
		if r := recvResp(t, st); r.GetAck().GetAckedSeq() != want {
			t.Fatalf("want ack %d, got %v", want, r)
		}
	}
	if s := svc.Stats(); s.WriteFailures != 1 || s.FlowControlSent != 1 || s.BatchesAcked != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDrainWritesQueuedBatchesThenEnds: batches waiting in the queue when
// the broker drains are written at once, acknowledged, and only then does
// the stream end with Unavailable.
func TestDrainWritesQueuedBatchesThenEnds(t *testing.T) {
	now := time.Now()
	store := openEmbedded(t)
	o := opts(now)
	o.Queue = queue.Config{FlushSnapshots: 1000, FlushInterval: time.Hour}
	svc, c := serve(t, store, o)
	st := hello(t, c)
	for seq := uint64(1); seq <= 3; seq++ {
		if err := st.Send(batch(seq, snap("d", now.Unix()-int64(seq), 1))); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "3 batches queued", func() bool { return svc.Stats().Queue.Depth == 3 })
	svc.Drain()
	for want := uint64(1); want <= 3; want++ {
		if r := recvResp(t, st); r.GetAck().GetAckedSeq() != want {
			t.Fatalf("want ack %d, got %v", want, r)
		}
	}
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after the acks want Unavailable, got %v", err)
	}
	got, err := store.Range(context.Background(), storage.RangeQuery{HostID: "d", From: now.Unix() - 10, To: now.Unix()})
	if err != nil || len(got) != 3 {
		t.Fatalf("%d snapshots stored (err %v), want 3", len(got), err)
	}
}

// TestCloseSendAnswersWhatIsInFlight: an agent that closes its side right
// after sending still gets every ack before the stream ends cleanly.
func TestCloseSendAnswersWhatIsInFlight(t *testing.T) {
	now := time.Now()
	o := opts(now)
	o.Queue = queue.Config{FlushInterval: 20 * time.Millisecond}
	_, c := serve(t, openEmbedded(t), o)
	st := hello(t, c)
	for seq := uint64(1); seq <= 5; seq++ {
		_ = st.Send(batch(seq, snap("e", now.Unix()-int64(seq), 1)))
	}
	_ = st.CloseSend()
	var last uint64
	for {
		r, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = r.GetAck().GetAckedSeq()
	}
	if last != 5 {
		t.Fatalf("last ack %d before EOF, want 5", last)
	}
}

// TestBackendRefusalRejectsOnlyThatBatch: a batch the backend refuses as
// invalid is acknowledged with rejections (resending it would never
// help), and the stream goes on storing the next one.
func TestBackendRefusalRejectsOnlyThatBatch(t *testing.T) {
	now := time.Now()
	store, _ := newGated(t)
	store.setFailing("inv", fmt.Errorf("key too long: %w", storage.ErrInvalid))
	o := opts(now)
	o.Queue = queue.Config{FlushSnapshots: 1}
	svc, c := serve(t, store, o)
	st := hello(t, c)
	_ = st.Send(batch(1, snap("inv", now.Unix(), 1)))
	a := recvResp(t, st).GetAck()
	if a.GetAckedSeq() != 1 || a.GetStoredSnapshots() != 0 || len(a.GetRejections()) != 1 || !strings.Contains(a.GetRejections()[0].GetReason(), "key too long") {
		t.Fatalf("want batch 1 acknowledged as rejected, got %v", a)
	}
	_ = st.Send(batch(2, snap("ok", now.Unix(), 2)))
	if a := recvResp(t, st).GetAck(); a.GetAckedSeq() != 2 || a.GetStoredSnapshots() != 1 {
		t.Fatalf("want batch 2 stored, got %v", a)
	}
	if s := svc.Stats(); s.FlowControlSent != 0 || s.Rejections != 1 {
		t.Fatalf("stats %+v", s)
	}
}
