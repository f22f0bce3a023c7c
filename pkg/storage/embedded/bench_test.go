package embedded

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

//	go test -run XXX -bench . -benchmem ./pkg/storage/embedded/
//
// Writes are dominated by bbolt's fsync per transaction; the figure to
// watch is allocations and the per-snapshot cost as the batch grows.

func benchSnapshot(host string, ts int64) storage.Snapshot {
	s := storage.Snapshot{HostID: host, Timestamp: ts, Tags: map[string]string{"env": "prod", "dc": "fra1"}}
	for i := 0; i < 50; i++ {
		series := fmt.Sprintf("bench.metric_%02d", i)
		if i%5 == 0 {
			series = fmt.Sprintf("net.rx_bytes_per_sec{iface=eth%d}", i)
		}
		v := float64(i)*1234.5678 + float64(ts%100)
		if i%2 == 0 {
			v = float64(i * 1000) // counters: integral
		}
		s.Samples = append(s.Samples, storage.Sample{Series: series, Value: v, Unit: "bytes/s"})
	}
	return s
}

func BenchmarkWriteSnapshots(b *testing.B) {
	for _, batch := range []int{1, 10, 100} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			s := openT(b, b.TempDir(), Options{})
			defer s.Close()
			ctx := context.Background()
			base := time.Now().Unix() - 100_000
			snaps := make([]storage.Snapshot, batch)
			for h := range snaps {
				snaps[h] = benchSnapshot("bench-"+strconv.Itoa(h), base)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for h := range snaps {
					snaps[h].Timestamp = base + int64(i)
				}
				if err := s.WriteSnapshots(ctx, snaps); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "snapshots/s")
		})
	}
}

func BenchmarkEncodeSnapshot(b *testing.B) {
	s := benchSnapshot("h", 1)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = appendSnapshot(buf[:0], &s, sampleOrder(s.Samples, nil))
	}
	b.ReportMetric(float64(len(buf)), "bytes/snapshot")
}

// BenchmarkRange720 reads 1 h of one host at 5 s: 720 snapshots of 50
// metrics.
func BenchmarkRange720(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	defer s.Close()
	ctx := context.Background()
	to := time.Now().Unix()
	from := to - 719*5
	var batch []storage.Snapshot
	for ts := from; ts <= to; ts += 5 {
		batch = append(batch, benchSnapshot("range-host", ts))
	}
	if err := s.WriteSnapshots(ctx, batch); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := s.Range(ctx, storage.RangeQuery{HostID: "range-host", From: from, To: to})
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != 720 || len(got[0].Samples) != 50 {
			b.Fatalf("got %d snapshots", len(got))
		}
	}
}
