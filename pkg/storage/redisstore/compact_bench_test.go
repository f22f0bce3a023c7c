package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

//	go test -run XXX -bench 'Layout' -benchtime 1x ./pkg/storage/redisstore
//
// The two layouts side by side on the load generator's 50 series, as
// bench/compact.go measures them end to end: writes as a broker makes them
// (batches of 256 snapshots over 50 hosts, rollups on), and the 1 h range
// ending now (the open head plus the sealed chunk before it).

const layoutHosts = 50

// writeLayout writes layoutHosts hosts × n snapshots at 5 s from start in
// batches of 256 and returns the snapshots per second.
func writeLayout(tb testing.TB, s *Store, start int64, n int) float64 {
	tpl, err := loadgen.NewTemplate(50)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	var buf []storage.Snapshot
	seq := uint64(0)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		for k := 0; k < layoutHosts; k++ {
			buf = append(buf, tpl.Snapshot(fmt.Sprintf("cl-%03d", k), start+int64(i)*5, seq))
			seq++
			if len(buf) == 256 || (i == n-1 && k == layoutHosts-1) {
				if err := s.WriteSnapshots(ctx, buf); err != nil {
					tb.Fatal(err)
				}
				buf = buf[:0]
			}
		}
	}
	return float64(n*layoutHosts) / time.Since(t0).Seconds()
}

func BenchmarkLayoutWrite(b *testing.B) {
	for _, layout := range []Layout{LayoutSeed, LayoutCompact} {
		b.Run(string(layout), func(b *testing.B) {
			srv := redistest.Start(b)
			s := openStore(b, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, Layout: layout})
			defer s.Close()
			n := 2 * 720
			start := time.Now().Unix() - int64(n)*5
			b.ResetTimer()
			var rate float64
			for i := 0; i < b.N; i++ {
				rate = writeLayout(b, s, start-int64(i)*int64(n)*5, n)
			}
			b.ReportMetric(rate, "snapshots/s")
		})
	}
}

func BenchmarkLayoutRange1h(b *testing.B) {
	for _, layout := range []Layout{LayoutSeed, LayoutCompact} {
		b.Run(string(layout), func(b *testing.B) {
			srv := redistest.Start(b)
			s := openStore(b, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, Layout: layout})
			defer s.Close()
			now := time.Now().Unix()
			writeLayout(b, s, now-2*720*5, 2*720)
			ctx := context.Background()
			storagetest.Latencies(b, func() error {
				got, err := s.Range(ctx, storage.RangeQuery{HostID: "cl-000", From: now - 3600, To: now})
				if err == nil && len(got) < 700 {
					err = fmt.Errorf("got %d snapshots", len(got))
				}
				return err
			})
		})
	}
}

// BenchmarkLayoutMemory reports what a sealed hour of layoutHosts hosts
// costs Redis (INFO used_memory, rollups off) per sample in each layout,
// and for the compact layout the encoded chunks alone (STRLEN), so the
// difference is Redis' own overhead per key.
func BenchmarkLayoutMemory(b *testing.B) {
	for _, layout := range []Layout{LayoutSeed, LayoutCompact} {
		b.Run(string(layout), func(b *testing.B) {
			srv := redistest.Start(b)
			raw := rawClient(b, srv.Addr)
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				if err := raw.FlushAll(ctx).Err(); err != nil {
					b.Fatal(err)
				}
				s := openStore(b, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, Layout: layout, NoRollups: true})
				before := usedMemoryOf(b, raw)
				start := windowOf(time.Now().Unix()) - 2*chunkSpan
				writeLayout(b, s, start, 720)
				var chunkBytes int64
				if layout == LayoutCompact {
					for k := 0; k < layoutHosts; k++ {
						host := fmt.Sprintf("cl-%03d", k)
						if _, err := s.Seal(ctx, host); err != nil {
							b.Fatal(err)
						}
						chunkBytes += raw.StrLen(ctx, s.cfg.KeyPrefix+"chunk:"+host+":"+fmt.Sprint(start)).Val()
					}
				}
				samples := float64(layoutHosts * 720 * 50)
				b.ReportMetric(float64(usedMemoryOf(b, raw)-before)/samples, "redis-bytes/sample")
				if chunkBytes > 0 {
					b.ReportMetric(float64(chunkBytes)/samples, "chunk-bytes/sample")
				}
				s.Close()
			}
		})
	}
}

func usedMemoryOf(tb testing.TB, c interface {
	Info(ctx context.Context, section ...string) *redis.StringCmd
}) int64 {
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no used_memory in INFO")
	return 0
}

// BenchmarkRollupMemory reports what the rollups cost Redis: an hour of
// layoutHosts hosts written with rollups on and off (compact layout,
// sealed), the difference per host and minute bucket (it includes the
// hour bucket and the seen bitmap, 1/60 each), and the encoded minute
// bucket alone (STRLEN, less the 8-byte version).
func BenchmarkRollupMemory(b *testing.B) {
	srv := redistest.Start(b)
	raw := rawClient(b, srv.Addr)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		used := map[bool]int64{}
		var bucket int64
		for _, rollups := range []bool{false, true} {
			if err := raw.FlushAll(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			s := openStore(b, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, Layout: LayoutCompact, NoRollups: !rollups, Retention: 24 * time.Hour})
			before := usedMemoryOf(b, raw)
			start := windowOf(time.Now().Unix()) - 2*chunkSpan
			writeLayout(b, s, start, 720)
			for k := 0; k < layoutHosts; k++ {
				if _, err := s.Seal(ctx, fmt.Sprintf("cl-%03d", k)); err != nil {
					b.Fatal(err)
				}
			}
			used[rollups] = usedMemoryOf(b, raw) - before
			if rollups {
				bucket = raw.StrLen(ctx, s.cfg.KeyPrefix+"rollup:1m:cl-000:"+fmt.Sprint(start+600)).Val() - rollupVersionSize
			}
			s.Close()
		}
		b.ReportMetric(float64(used[true]-used[false])/float64(layoutHosts*60), "redis-bytes/minute-bucket")
		b.ReportMetric(float64(bucket), "encoded-bytes/minute-bucket")
	}
}
