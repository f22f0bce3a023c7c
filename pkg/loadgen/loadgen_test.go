package loadgen

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeBroker speaks the broker's side of Ingest: it acks every batch,
// except that the first time a stream sends batch 3 it answers
// FlowControl{3} and ignores batches until 3 comes again (go-back-N).
type fakeBroker struct {
	monitorpb.UnimplementedMonitorServiceServer
	mu     sync.Mutex
	stored map[string]map[int64]int // host → timestamp → times stored
	first  []float64                // the first metric's values, in arrival order
	bad    []string
}

func (f *fakeBroker) Ingest(stream monitorpb.MonitorService_IngestServer) error {
	if _, err := stream.Recv(); err != nil { // Hello
		return err
	}
	var resendFrom, last uint64
	flowed := false
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		b := req.GetBatch()
		if resendFrom != 0 && b.GetSeq() != resendFrom {
			continue
		}
		resendFrom = 0
		if b.GetSeq() == 3 && !flowed {
			flowed, resendFrom = true, 3
			if err := stream.Send(&monitorpb.IngestResponse{Kind: &monitorpb.IngestResponse_FlowControl{FlowControl: &monitorpb.FlowControl{ResendFromSeq: 3, RetryAfterMs: 20, Reason: "test"}}}); err != nil {
				return err
			}
			continue
		}
		if b.GetSeq() != last+1 {
			f.mu.Lock()
			f.bad = append(f.bad, "batch out of order")
			f.mu.Unlock()
		}
		last = b.GetSeq()
		f.mu.Lock()
		for _, s := range b.GetSnapshots() {
			if f.stored[s.GetHostId()] == nil {
				f.stored[s.GetHostId()] = map[int64]int{}
			}
			f.stored[s.GetHostId()][s.GetTimestamp()]++
			if len(s.GetMetrics()) > 0 {
				f.first = append(f.first, s.GetMetrics()[0].GetValue())
			}
			if len(s.GetMetrics()) != 50 {
				f.bad = append(f.bad, "snapshot without 50 metrics")
			}
			for _, m := range s.GetMetrics() {
				if _, err := storage.SeriesKey(m.GetName(), m.GetLabels()); err != nil {
					f.bad = append(f.bad, err.Error())
				}
				if err := storage.ValidateUnit(m.GetUnit()); err != nil {
					f.bad = append(f.bad, err.Error())
				}
			}
		}
		f.mu.Unlock()
		if err := stream.Send(&monitorpb.IngestResponse{Kind: &monitorpb.IngestResponse_Ack{Ack: &monitorpb.Ack{AckedSeq: last}}}); err != nil {
			return err
		}
	}
}

func startFake(t *testing.T) (*fakeBroker, string) {
	t.Helper()
	f := &fakeBroker{stored: map[string]map[int64]int{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	monitorpb.RegisterMonitorServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f, lis.Addr().String()
}

func TestRunFollowsTheProtocol(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"interval", 10 * time.Millisecond},
		{"saturate", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, addr := startFake(t)
			var mu sync.Mutex
			acked := map[string]map[int64]bool{}
			g, err := New(Config{
				Brokers: []string{addr}, Hosts: 20, Conns: 3, Interval: tc.interval, Duration: 300 * time.Millisecond,
				OnAck: func(h string, ts []int64) {
					mu.Lock()
					defer mu.Unlock()
					if acked[h] == nil {
						acked[h] = map[int64]bool{}
					}
					for _, x := range ts {
						if acked[h][x] {
							t.Errorf("%s:%d acknowledged twice", h, x)
						}
						acked[h][x] = true
					}
				},
			}, quiet)
			if err != nil {
				t.Fatal(err)
			}
			res, err := g.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.Lost != 0 || res.Unsent != 0 || res.Errors != 0 || res.Acked == 0 || res.Acked != res.Generated {
				t.Fatalf("result %s: want every generated snapshot acknowledged", res)
			}
			if res.FlowControls != 20 || res.Resent == 0 {
				t.Fatalf("want one FlowControl per host and resends: %s", res)
			}
			if res.Samples != res.Acked*50 || res.AckP50MS <= 0 || res.AckP99MS < res.AckP50MS {
				t.Fatalf("result %s", res)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.bad) > 0 {
				t.Fatalf("broker saw: %v", f.bad[:min(5, len(f.bad))])
			}
			n := 0
			for h, ts := range acked {
				for x := range ts {
					if f.stored[h][x] == 0 {
						t.Fatalf("%s:%d acknowledged but never stored", h, x)
					}
					n++
				}
			}
			if uint64(n) != res.Acked || len(acked) != 20 {
				t.Fatalf("%d acks over %d hosts, result says %d", n, len(acked), res.Acked)
			}
		})
	}
}

func TestReconnectsAfterBrokerRestart(t *testing.T) {
	f := &fakeBroker{stored: map[string]map[int64]int{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	srv := grpc.NewServer()
	monitorpb.RegisterMonitorServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()

	g, err := New(Config{Brokers: []string{addr}, Hosts: 5, Interval: 10 * time.Millisecond, Drain: 5 * time.Second}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() {
		res, _ := g.Run(ctx)
		done <- res
	}()
	waitFor(t, func() bool { return g.Stats().Acked >= 20 })
	srv.Stop() // every stream breaks
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv = grpc.NewServer()
	monitorpb.RegisterMonitorServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	waitFor(t, func() bool { return g.Stats().Reconnects >= 5 })
	before := g.Stats().Acked
	waitFor(t, func() bool { return g.Stats().Acked >= before+20 })
	cancel()
	res := <-done
	if res.Lost != 0 || res.Acked != res.Generated {
		t.Fatalf("after reconnecting everything must be acknowledged: %s", res)
	}
}

func TestTemplateSnapshotsAreValid(t *testing.T) {
	tpl, err := NewTemplate(50)
	if err != nil {
		t.Fatal(err)
	}
	s := tpl.Snapshot("web-1", 1_800_000_000, 7)
	if err := storage.ValidateSnapshot(&s); err != nil {
		t.Fatal(err)
	}
	if len(s.Samples) != 50 {
		t.Fatalf("%d samples", len(s.Samples))
	}
	seen := map[string]bool{}
	for _, smp := range s.Samples {
		if seen[smp.Series] {
			t.Fatalf("series %s twice", smp.Series)
		}
		seen[smp.Series] = true
	}
	if !seen["disk.used_percent{mount=/var}"] || !seen["net.rx_bytes_per_sec{interface=eth0}"] || !seen["cpu.core_usage_percent{cpu=cpu9}"] {
		t.Fatalf("catalogue lacks the agent's series: %v", seen)
	}
}

func TestValuesStayInRange(t *testing.T) {
	r := rng(42)
	for _, d := range catalog(80) {
		v := d.initial(&r)
		for i := 0; i < 10000; i++ {
			v = d.next(v, &r)
			if v < d.lo || v > d.hi {
				t.Fatalf("%s wandered to %v outside [%v, %v]", d.name, v, d.lo, d.hi)
			}
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	h.init()
	for i := 1; i <= 1000; i++ {
		h.observe(int64(i) * int64(time.Millisecond))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}} {
		got := h.quantile(c.q)
		if got < c.want*93/100 || got > c.want*107/100 {
			t.Fatalf("q%.2f = %v, want about %v", c.q, got, c.want)
		}
	}
	if h.max() != time.Second {
		t.Fatalf("max %v", h.max())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 15s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWireMatchesProto decodes the hand-encoded batch with the generated
// code and finds exactly the catalogue's metrics.
func TestWireMatchesProto(t *testing.T) {
	defs := catalog(50)
	tags := map[string]string{"env": "loadgen", "b": "2"}
	e := newEncoder(defs, tags)
	vals := make([]float64, len(defs))
	for i := range vals {
		vals[i] = float64(i) * 1.5
	}
	snap := e.snapshot(nil, "web-7", 1_800_000_123, vals)
	raw := batchRequest(42, [][]byte{snap, snap})
	var req monitorpb.IngestRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		t.Fatal(err)
	}
	b := req.GetBatch()
	if b.GetSeq() != 42 || len(b.GetSnapshots()) != 2 {
		t.Fatalf("batch %v", b)
	}
	s := b.GetSnapshots()[1]
	if s.GetHostId() != "web-7" || s.GetTimestamp() != 1_800_000_123 || len(s.GetTags()) != 2 || s.GetTags()["env"] != "loadgen" || len(s.GetMetrics()) != 50 {
		t.Fatalf("snapshot %v", s)
	}
	for i, m := range s.GetMetrics() {
		d := defs[i]
		if m.GetName() != d.name || m.GetValue() != vals[i] || m.GetUnit() != d.unit || m.GetPriority() != d.priority || len(m.GetLabels()) != len(d.labels) {
			t.Fatalf("metric %d: %v, want %+v", i, m, d)
		}
		for k, v := range d.labels {
			if m.GetLabels()[k] != v {
				t.Fatalf("metric %d label %s: %v", i, k, m.GetLabels())
			}
		}
	}
	// The same message through the generated marshaler decodes the same.
	want, err := proto.Marshal(&req)
	if err != nil {
		t.Fatal(err)
	}
	var again monitorpb.IngestRequest
	if err := proto.Unmarshal(want, &again); err != nil || !proto.Equal(&again, &req) {
		t.Fatalf("round trip differs: %v", err)
	}
}

func BenchmarkEncodeSnapshot(b *testing.B) {
	defs := catalog(50)
	e := newEncoder(defs, map[string]string{"env": "loadgen"})
	vals := make([]float64, len(defs))
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = e.snapshot(buf[:0], "web-1", 1_800_000_000, vals)
	}
	b.SetBytes(int64(len(buf)))
}

// With Stamp the first metric carries the send time in Unix milliseconds.
func TestStampCarriesSendTime(t *testing.T) {
	f, addr := startFake(t)
	before := float64(time.Now().UnixMicro()) / 1000
	g, err := New(Config{Brokers: []string{addr}, Hosts: 3, Interval: 20 * time.Millisecond, Duration: 200 * time.Millisecond, Stamp: true}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	res, err := g.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	after := float64(time.Now().UnixMicro()) / 1000
	f.mu.Lock()
	defer f.mu.Unlock()
	if res.Acked == 0 || len(f.first) == 0 {
		t.Fatalf("nothing stored: %s", res)
	}
	for _, v := range f.first {
		if v < before || v > after {
			t.Fatalf("stamp %.3f outside the run [%.3f, %.3f]", v, before, after)
		}
	}
}
