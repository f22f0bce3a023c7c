package service

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// generated is what the generated code makes of snaps: the message the
// broker sent before batchEncoder, in its deterministic encoding.
func generated(t *testing.T, snaps []storage.Snapshot, dropped uint64) []byte {
	t.Helper()
	msg := &monitorpb.StoredBatch{Dropped: dropped}
	for i := range snaps {
		msg.Snapshots = append(msg.Snapshots, ToProto(&snaps[i]))
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBatchEncoderMatchesGeneratedCode(t *testing.T) {
	cases := []struct {
		name    string
		snaps   []storage.Snapshot
		dropped uint64
	}{
		{name: "empty"},
		{name: "gap marker only", dropped: 7},
		{name: "edge values", dropped: 1, snaps: []storage.Snapshot{{
			HostID: "web-1", Timestamp: 1700000000, Tags: map[string]string{"role": "web", "dc": "", "zone": "eu-1"},
			Samples: []storage.Sample{
				{Series: "cpu.usage_percent", Value: 0, Unit: "%"},        // zero: omitted
				{Series: "cpu.idle_percent", Value: math.Copysign(0, -1)}, // -0: written
				{Series: "disk.used_bytes{device=sda,mount=/}", Value: 1e300, Unit: "bytes"},
				{Series: "bad{", Value: 1}, // refused by ParseSeries: left out, as ToProto does
				{Series: "net.rx{interface=eth0}", Value: -3.5, Unit: ""},
			},
		}, {HostID: "", Timestamp: 0}}},
		{name: "long fields", snaps: []storage.Snapshot{{
			HostID: "h", Timestamp: math.MaxInt64, Tags: map[string]string{"big": string(bytes.Repeat([]byte("é"), 400))},
			Samples: []storage.Sample{{Series: "m{l=" + string(bytes.Repeat([]byte("v"), 200)) + "}", Value: 1, Unit: "u"}},
		}}},
	}
	enc := newBatchEncoder()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 2 { // the second from the cache
				got := enc.encode(tc.snaps, tc.dropped)
				if want := generated(t, tc.snaps, tc.dropped); !bytes.Equal(got, want) {
					t.Fatalf("round %d: encoded\n%x\nthe generated code\n%x", round, got, want)
				}
			}
		})
	}
}

func TestBatchEncoderRandomBatches(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	series := []string{"cpu.usage_percent", "load.1", "disk.used_bytes{mount=/}", "disk.io{device=nvme0n1,mount=/var}", "x{a=1,b=2,c=3}"}
	units := []string{"", "%", "bytes", "ops/s"}
	enc := newBatchEncoder()
	for i := range 200 {
		snaps := make([]storage.Snapshot, r.IntN(5))
		for j := range snaps {
			s := &snaps[j]
			s.HostID = fmt.Sprintf("host-%d", r.IntN(1000))
			s.Timestamp = r.Int64N(1 << 40)
			if r.IntN(2) == 0 {
				s.Tags = map[string]string{}
				for k := range r.IntN(4) {
					s.Tags[fmt.Sprintf("t%d", k)] = fmt.Sprint(r.IntN(10))
				}
			}
			for range r.IntN(60) {
				v := r.NormFloat64() * math.Pow(10, float64(r.IntN(20)-5))
				if r.IntN(10) == 0 {
					v = 0
				}
				s.Samples = append(s.Samples, storage.Sample{Series: series[r.IntN(len(series))], Value: v, Unit: units[r.IntN(len(units))]})
			}
		}
		dropped := uint64(0)
		if r.IntN(4) == 0 {
			dropped = r.Uint64N(1 << 20)
		}
		got := enc.encode(snaps, dropped)
		if want := generated(t, snaps, dropped); !bytes.Equal(got, want) {
			t.Fatalf("batch %d: encoded\n%x\nthe generated code\n%x", i, got, want)
		}
	}
}

// TestBatchEncoderCacheIsBounded: a stream of ever new series empties the
// cache instead of growing it, and encodes correctly after.
func TestBatchEncoderCacheIsBounded(t *testing.T) {
	enc := newBatchEncoder()
	snap := storage.Snapshot{HostID: "h", Timestamp: 1, Samples: make([]storage.Sample, 1)}
	for i := range maxEncodedSeries + 10 {
		snap.Samples[0] = storage.Sample{Series: fmt.Sprintf("m{i=%d}", i), Value: float64(i)}
		got := enc.encode([]storage.Snapshot{snap}, 0)
		if i%4999 == 0 || i >= maxEncodedSeries {
			if want := generated(t, []storage.Snapshot{snap}, 0); !bytes.Equal(got, want) {
				t.Fatalf("series %d: encoded %x, want %x", i, got, want)
			}
		}
	}
	if n := len(enc.series); n > maxEncodedSeries {
		t.Fatalf("cache holds %d series, the bound is %d", n, maxEncodedSeries)
	}
}

// BenchmarkSubscribeEncode is the broker's per-stream work for one batch of
// 50 snapshots of 50 metrics: batchEncoder.encode.
func BenchmarkSubscribeEncode(b *testing.B) {
	batch := benchBatch(b, 50, 1000)
	enc := newBatchEncoder()
	b.ReportAllocs()
	for b.Loop() {
		enc.encode(batch, 0)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/snapshot")
}

// BenchmarkSubscribeToProto is what the broker did per stream and batch
// before batchEncoder (ToProto and the generated code's Size and Marshal,
// as gRPC's codec calls them), for comparison.
func BenchmarkSubscribeToProto(b *testing.B) {
	batch := benchBatch(b, 50, 1000)
	b.ReportAllocs()
	for b.Loop() {
		msg := &monitorpb.StoredBatch{Snapshots: make([]*monitorpb.Snapshot, len(batch))}
		for i := range batch {
			msg.Snapshots[i] = ToProto(&batch[i])
		}
		_ = proto.Size(msg)
		if _, err := (proto.MarshalOptions{UseCachedSize: true}).Marshal(msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/snapshot")
}
