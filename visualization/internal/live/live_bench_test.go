package live_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
	"github.com/monitorhq/monitor/visualization/internal/live"
)

// rawBatch is an encoded StoredBatch sent as it is (the stand-in broker
// below spends no CPU encoding it).
type rawBatch []byte

func (r rawBatch) Reset()                   {}
func (r rawBatch) String() string           { return "rawBatch" }
func (r rawBatch) ProtoMessage()            {}
func (r rawBatch) Marshal() ([]byte, error) { return r, nil }

// rawBroker streams the batches handed to its channel to one subscriber.
type rawBroker struct {
	monitorpb.UnimplementedMonitorServiceServer
	batches chan rawBatch
	subs    atomic.Int32
}

func (b *rawBroker) Subscribe(_ *monitorpb.SubscribeRequest, st monitorpb.MonitorService_SubscribeServer) error {
	b.subs.Add(1)
	defer b.subs.Add(-1)
	for {
		select {
		case <-st.Context().Done():
			return st.Context().Err()
		case m := <-b.batches:
			if err := st.SendMsg(m); err != nil {
				return err
			}
		}
	}
}

// batchTemplate encodes a StoredBatch of n snapshots of the agent's 50
// series (pkg/loadgen) as a broker sends it (label maps in key order) and
// returns where each snapshot's 5-byte timestamp varint is, to rewrite it.
func batchTemplate(tb testing.TB, n int, ts int64) ([]byte, []int) {
	tb.Helper()
	tpl, err := loadgen.NewTemplate(50)
	if err != nil {
		tb.Fatal(err)
	}
	var out []byte
	var at []int
	for i := range n {
		s := tpl.Snapshot(fmt.Sprintf("bench-%05d", i), ts, uint64(i))
		pb := &monitorpb.Snapshot{HostId: s.HostID, Timestamp: s.Timestamp, Tags: s.Tags}
		for _, smp := range s.Samples {
			name, labels, err := storage.ParseSeries(smp.Series)
			if err != nil {
				tb.Fatal(err)
			}
			pb.Metrics = append(pb.Metrics, &monitorpb.Metric{Name: name, Labels: labels, Value: smp.Value, Unit: smp.Unit})
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(pb)
		if err != nil {
			tb.Fatal(err)
		}
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(len(b)))
		// host_id (tag, length, bytes), then the timestamp's tag.
		at = append(at, len(out)+2+len(s.HostID)+1)
		out = append(out, b...)
	}
	return out, at
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFeed streams stored batches (50 snapshots of 50 metrics each,
// newer timestamps every batch) from a stand-in broker that sends
// pre-encoded bytes, through brokerclient and the feed, to an observer
// that counts. One iteration is one batch; it reports the process's CPU
// per snapshot (the stand-in's sends included) and allocations per
// snapshot. Profile with
//
//	go test -run '^$' -bench Feed -benchtime 2000x -cpuprofile /tmp/live.prof ./visualization/internal/live/
func BenchmarkFeed(b *testing.B) { benchFeed(b) }

// benchFeed runs BenchmarkFeed with more observers after the counting one.
func benchFeed(b *testing.B, more ...live.Observer) {
	const perBatch = 50
	br := &rawBroker{batches: make(chan rawBatch, 16)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	monitorpb.RegisterMonitorServiceServer(srv, br)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	c, err := brokerclient.New([]string{lis.Addr().String()}, 2*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var snaps, samples atomic.Uint64
	obs := live.ObserverFunc(func(_ string, _ map[string]string, _ int64, s []live.Sample) {
		snaps.Add(1)
		samples.Add(uint64(len(s)))
	})
	f, err := live.New(live.Options{Source: c, Observers: append([]live.Observer{obs}, more...)})
	if err != nil {
		b.Fatal(err)
	}
	f.SetBrokers([]string{lis.Addr().String()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	for deadline := time.Now().Add(5 * time.Second); br.subs.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the feed never subscribed")
		}
	}
	const ts0 = 1 << 30 // timestamps keep a 5-byte varint
	tpl, at := batchTemplate(b, perBatch, ts0)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	c0 := cpuNow()
	sent := uint64(0)
	ts := int64(ts0)
	for b.Loop() {
		m := slices.Clone(tpl)
		for _, i := range at {
			protowire.AppendVarint(m[i:i], uint64(ts))
		}
		ts++
		br.batches <- m
		sent += perBatch
	}
	for deadline := time.Now().Add(30 * time.Second); snaps.Load() < sent; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("observed %d of %d snapshots (%+v)", snaps.Load(), sent, f.Stats())
		}
	}
	cpu := cpuNow() - c0
	runtime.ReadMemStats(&ms1)
	if st := f.Stats(); st.Invalid > 0 || st.Late > 0 || samples.Load() != sent*50 {
		b.Fatalf("stats %+v, %d samples", st, samples.Load())
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(sent), "cpu-ns/snapshot")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(sent), "allocs/snapshot")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(sent), "B/snapshot")
}
