package embedded

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/monitorhq/monitor/pkg/loadgen"
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
	if err := s.sweep(); err != nil { // seal the past hours, as the sweeper would
		b.Fatal(err)
	}
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

// BenchmarkDiskBytes writes six hours of one host at 5 s (the load
// generator's 50 series, independent draws), seals them, and reports the
// bytes the raw data takes in the file's pages (bbolt's in-use bytes of
// the records and chunks buckets), per sample; rollups off.
func BenchmarkDiskBytes(b *testing.B) {
	tpl, err := loadgen.NewTemplate(50)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		// The clock stands at the start while writing (nothing is sealed),
		// then moves to now for the sweep.
		start := windowOf(time.Now().Unix()) - 6*chunkSpan
		clock := &storagetest.Clock{}
		clock.Advance(time.Until(time.Unix(start, 0)))
		s := openT(b, b.TempDir(), Options{NoRollups: true, SweepInterval: time.Hour, Retention: 24 * time.Hour, Now: clock.Now})
		ctx := context.Background()
		var batch []storage.Snapshot
		n := 0
		for ts := start; ts < start+6*chunkSpan; ts += 5 {
			batch = append(batch, tpl.Snapshot("disk-host", ts, uint64(ts)))
			n++
			if len(batch) == 100 {
				if err := s.WriteSnapshots(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		inUse := func() int {
			total := 0
			_ = s.db.View(func(tx *bolt.Tx) error {
				for _, name := range [][]byte{bucketSnapshots, bucketChunks} {
					st := tx.Bucket(name).Stats()
					total += st.LeafInuse + st.BranchInuse
				}
				return nil
			})
			return total
		}
		records := inUse()
		clock.Advance(time.Since(clock.Now()))
		if err := s.sweep(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(records)/float64(n*50), "record-bytes/sample")
		b.ReportMetric(float64(inUse())/float64(n*50), "sealed-bytes/sample")
		s.Close()
	}
}

// BenchmarkRecordedCompression reports the chunk encoding's bytes per
// sample on data a real agent recorded: the embedded directory of a
// `monitor standalone` run (its -data DIR/embedded), given as
// MONITOR_RECORDED_DIR (a copy: the running broker holds the file's lock).
// Each host's snapshots are encoded as one chunk per hour; the second
// figure is the same data with every value rounded to 0.01, what an
// agent rounding its ratios and rates would send.
//
//	monitor standalone -data /tmp/rec -interval 1s   # a few minutes, then stop it
//	MONITOR_RECORDED_DIR=/tmp/rec/embedded go test -run XXX -bench Recorded ./pkg/storage/embedded
func BenchmarkRecordedCompression(b *testing.B) {
	dir := os.Getenv("MONITOR_RECORDED_DIR")
	if dir == "" {
		b.Skip("MONITOR_RECORDED_DIR is not set")
	}
	s := openT(b, dir, Options{SweepInterval: time.Hour, Retention: 365 * 24 * time.Hour})
	defer s.Close()
	ctx := context.Background()
	hosts, err := s.Hosts(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var snaps [][]storage.Snapshot
	samples := 0
	for _, h := range hosts {
		got, err := s.Range(ctx, storage.RangeQuery{HostID: h.ID, From: 0, To: math.MaxInt64})
		if err != nil {
			b.Fatal(err)
		}
		for len(got) > 0 { // one chunk per hour
			n := 1
			for n < len(got) && windowOf(got[n].Timestamp) == windowOf(got[0].Timestamp) {
				n++
			}
			snaps = append(snaps, got[:n])
			for _, sn := range got[:n] {
				samples += len(sn.Samples)
			}
			got = got[n:]
		}
	}
	if samples == 0 {
		b.Fatalf("no samples in %s", dir)
	}
	size := func(round bool) int {
		total := 0
		for _, hour := range snaps {
			if round {
				hour = slices.Clone(hour)
				for i := range hour {
					hour[i].Samples = slices.Clone(hour[i].Samples)
					for j := range hour[i].Samples {
						if v := hour[i].Samples[j].Value; math.Abs(v) < 1e15 {
							hour[i].Samples[j].Value = math.Round(v*100) / 100
						}
					}
				}
			}
			enc, err := chunk.Encode(nil, hour)
			if err != nil {
				b.Fatal(err)
			}
			total += len(enc)
		}
		return total
	}
	var exact, rounded int
	for i := 0; i < b.N; i++ {
		exact, rounded = size(false), size(true)
	}
	b.ReportMetric(float64(samples), "samples")
	b.ReportMetric(float64(exact)/float64(samples), "bytes/sample")
	b.ReportMetric(float64(rounded)/float64(samples), "rounded-bytes/sample")
}
