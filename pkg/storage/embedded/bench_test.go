package embedded

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
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
	for _, rollups := range []bool{true, false} {
		for _, batch := range []int{1, 10, 100} {
			b.Run(fmt.Sprintf("rollups=%v/batch=%d", rollups, batch), func(b *testing.B) {
				s := openT(b, b.TempDir(), Options{NoRollups: !rollups})
				defer s.Close()
				ctx := context.Background()
				// Every call at a new timestamp, all inside the retention.
				base := time.Now().Unix() - 6*24*3600
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
}

func BenchmarkEncodeSnapshot(b *testing.B) {
	s := benchSnapshot("h", 1)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = chunk.AppendRecord(buf[:0], &s)
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

// BenchmarkRangeLatency is the query side of a chart: 1 h raw (720
// snapshots at 5 s), 24 h at 1 minute (1440 buckets), 7 d at 1 hour (168
// buckets), one host, 50 series. The week is written at one snapshot per
// minute: a bucket reads as fast whatever its count.
func BenchmarkRangeLatency(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	defer s.Close()
	ctx := context.Background()
	to := time.Now().Unix()
	var batch []storage.Snapshot
	flush := func() {
		if err := s.WriteSnapshots(ctx, batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for ts := to - 719*5; ts <= to; ts += 5 {
		batch = append(batch, benchSnapshot("hour-host", ts))
	}
	flush()
	for ts := to - 7*24*3600 + 60; ts <= to; ts += 60 {
		if batch = append(batch, benchSnapshot("week-host", ts)); len(batch) == 1000 {
			flush()
		}
	}
	flush()
	b.Run("1h-raw", func(b *testing.B) {
		storagetest.Latencies(b, func() error {
			got, err := s.Range(ctx, storage.RangeQuery{HostID: "hour-host", From: to - 719*5, To: to})
			if err == nil && len(got) != 720 {
				err = fmt.Errorf("got %d snapshots", len(got))
			}
			return err
		})
	})
	for _, tc := range []struct {
		name string
		res  storage.Resolution
		span int64
	}{{"24h-1m", storage.Minute, 24 * 3600}, {"7d-1h", storage.Hour, 7 * 24 * 3600}} {
		b.Run(tc.name, func(b *testing.B) {
			storagetest.Latencies(b, func() error {
				got, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "week-host", Resolution: tc.res, From: to - tc.span, To: to})
				if err == nil && (len(got) != 50 || int64(len(got[0].Points)) < tc.span/int64(tc.res)) {
					err = fmt.Errorf("got %d series", len(got))
				}
				return err
			})
		})
	}
}
