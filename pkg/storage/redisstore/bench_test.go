package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

// The benchmarks compare the store with a naive loop over the same layout
// against the same redis-server, so the ratio (not the absolute time, which
// is mostly Redis) is what to read:
//
//	go test -run XXX -bench . -benchmem ./pkg/storage/redisstore/

func benchSnapshot(host string, ts int64) storage.Snapshot {
	s := storage.Snapshot{HostID: host, Timestamp: ts, Tags: map[string]string{"env": "prod", "dc": "fra1"}}
	for i := 0; i < 50; i++ {
		series := fmt.Sprintf("bench.metric_%02d", i)
		if i%5 == 0 {
			series = fmt.Sprintf("net.rx_bytes_per_sec{iface=eth%d}", i)
		}
		s.Samples = append(s.Samples, storage.Sample{Series: series, Value: float64(i)*1234.5678 + float64(ts%100), Unit: "bytes/s"})
	}
	return s
}

const benchBatch = 10 // snapshots (hosts) per WriteSnapshots call

func benchBatchAt(ts int64) []storage.Snapshot {
	out := make([]storage.Snapshot, benchBatch)
	for h := range out {
		out[h] = benchSnapshot("bench-"+strconv.Itoa(h), ts)
	}
	return out
}

// BenchmarkWriteSnapshots writes batches of 10 hosts × one 50-metric
// snapshot, every batch at a new timestamp (a rewrite would let the rollup
// script stop at its seen bits), with rollups on and off. Besides the
// client's throughput it reports the Redis server's CPU time per snapshot
// (INFO used_cpu_user + used_cpu_sys), the cost rollups add to Redis.
func BenchmarkWriteSnapshots(b *testing.B) {
	for _, tc := range []struct {
		name      string
		noRollups bool
	}{{"rollups=on", false}, {"rollups=off", true}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := redistest.Start(b)
			s := openStore(b, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, NoRollups: tc.noRollups})
			defer s.Close()
			c := redis.NewClient(&redis.Options{Addr: srv.Addr})
			defer c.Close()
			ctx := context.Background()
			// Six days back leaves room for a million batches, one second
			// apart, inside the 7-day retention.
			base := time.Now().Unix() - 6*24*3600
			batch := benchBatchAt(base)
			cpu0 := serverCPU(b, c)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for h := range batch {
					batch[h].Timestamp = base + int64(i)
				}
				if err := s.WriteSnapshots(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "snapshots/s")
			b.ReportMetric((serverCPU(b, c)-cpu0).Seconds()*1e6/float64(b.N*benchBatch), "redis-cpu-µs/snapshot")
		})
	}
}

// serverCPU is the redis-server's CPU time so far.
func serverCPU(b *testing.B, c *redis.Client) time.Duration {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatalf("INFO cpu: %q: %v", line, err)
				}
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}

// BenchmarkWriteSnapshotsNaive writes the same layout the obvious way:
// json.Marshal per field, HSET from a map, one plain pipeline.
func BenchmarkWriteSnapshotsNaive(b *testing.B) {
	srv := redistest.Start(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := context.Background()
	base := time.Now().Unix() - 2000
	batches := make([][]storage.Snapshot, 1000)
	for i := range batches {
		batches[i] = benchBatchAt(base + int64(i))
	}
	type value struct {
		Value float64 `json:"value"`
		Unit  string  `json:"unit"`
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pipe := c.Pipeline()
		for _, sn := range batches[i%len(batches)] {
			key := fmt.Sprintf("monitor:metrics:%s:%d", sn.HostID, sn.Timestamp)
			fields := map[string]interface{}{"host_id": sn.HostID, "timestamp": sn.Timestamp}
			for k, v := range sn.Tags {
				fields["tag:"+k] = v
			}
			for _, smp := range sn.Samples {
				j, err := json.Marshal(value{smp.Value, smp.Unit})
				if err != nil {
					b.Fatal(err)
				}
				fields["metric:"+smp.Series] = string(j)
			}
			idx := "monitor:index:metrics:" + sn.HostID
			pipe.Del(ctx, key)
			pipe.HSet(ctx, key, fields)
			pipe.Expire(ctx, key, storage.DefaultRetention)
			pipe.ZAdd(ctx, idx, redis.Z{Score: float64(sn.Timestamp), Member: key})
			pipe.Expire(ctx, idx, storage.DefaultRetention)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "snapshots/s")
}

// setupRange writes 720 snapshots of 50 metrics (1 h at 5 s) for one host.
func setupRange(b *testing.B) (addr string, from, to int64) {
	srv := redistest.Start(b)
	s := openStore(b, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer s.Close()
	ctx := context.Background()
	to = time.Now().Unix()
	from = to - 719*5
	var batch []storage.Snapshot
	for ts := from; ts <= to; ts += 5 {
		batch = append(batch, benchSnapshot("range-host", ts))
		if len(batch) == 60 {
			if err := s.WriteSnapshots(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return srv.Addr, from, to
}

func BenchmarkRange720(b *testing.B) {
	addr, from, to := setupRange(b)
	s := openStore(b, Config{Shards: []ShardConfig{{Addr: addr}}})
	defer s.Close()
	ctx := context.Background()
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

// BenchmarkRange720Naive reads the same data the obvious way: ZRANGEBYSCORE,
// one pipeline of HGETALL into maps, encoding/json per field.
func BenchmarkRange720Naive(b *testing.B) {
	addr, from, to := setupRange(b)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	type value struct {
		Value float64 `json:"value"`
		Unit  string  `json:"unit"`
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		//lint:ignore SA1019 the naive baseline uses the seed's ZRANGEBYSCORE
		keys, err := c.ZRangeByScore(ctx, "monitor:index:metrics:range-host", &redis.ZRangeBy{
			Min: strconv.FormatInt(from, 10), Max: strconv.FormatInt(to, 10)}).Result()
		if err != nil {
			b.Fatal(err)
		}
		pipe := c.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(keys))
		for j, k := range keys {
			cmds[j] = pipe.HGetAll(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		out := make([]storage.Snapshot, 0, len(keys))
		for _, cmd := range cmds {
			fields := cmd.Val()
			sn := storage.Snapshot{HostID: fields["host_id"], Tags: map[string]string{}}
			sn.Timestamp, _ = strconv.ParseInt(fields["timestamp"], 10, 64)
			for f, v := range fields {
				switch {
				case strings.HasPrefix(f, "metric:"):
					var val value
					if err := json.Unmarshal([]byte(v), &val); err != nil {
						b.Fatal(err)
					}
					sn.Samples = append(sn.Samples, storage.Sample{Series: f[7:], Value: val.Value, Unit: val.Unit})
				case strings.HasPrefix(f, "tag:"):
					sn.Tags[f[4:]] = v
				}
			}
			out = append(out, sn)
		}
		if len(out) != 720 || len(out[0].Samples) != 50 {
			b.Fatalf("got %d snapshots", len(out))
		}
	}
}

// setupWeek writes 7 days of one host at one snapshot per minute (50
// metrics): 10080 minute buckets and 168 hour buckets, which read as fast
// as full ones (a bucket's size does not depend on its count).
func setupWeek(b *testing.B) (addr string, to int64) {
	srv := redistest.Start(b)
	s := openStore(b, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer s.Close()
	ctx := context.Background()
	to = time.Now().Unix()
	var batch []storage.Snapshot
	for ts := to - 7*24*3600 + 60; ts <= to; ts += 60 {
		batch = append(batch, benchSnapshot("week-host", ts))
		if len(batch) == 500 {
			if err := s.WriteSnapshots(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := s.WriteSnapshots(ctx, batch); err != nil {
		b.Fatal(err)
	}
	return srv.Addr, to
}

// BenchmarkRangeLatency is the query side of a chart: 1 h raw (720
// snapshots), 24 h at 1 minute (1440 buckets), 7 d at 1 hour (168
// buckets), one host, 50 series.
func BenchmarkRangeLatency(b *testing.B) {
	b.Run("1h-raw", func(b *testing.B) {
		addr, from, to := setupRange(b)
		s := openStore(b, Config{Shards: []ShardConfig{{Addr: addr}}})
		defer s.Close()
		storagetest.Latencies(b, func() error {
			got, err := s.Range(context.Background(), storage.RangeQuery{HostID: "range-host", From: from, To: to})
			if err == nil && len(got) != 720 {
				err = fmt.Errorf("got %d snapshots", len(got))
			}
			return err
		})
	})
	addr, to := setupWeek(b)
	s := openStore(b, Config{Shards: []ShardConfig{{Addr: addr}}})
	defer s.Close()
	for _, tc := range []struct {
		name    string
		res     storage.Resolution
		span    int64
		buckets int
	}{{"24h-1m", storage.Minute, 24 * 3600, 1441}, {"7d-1h", storage.Hour, 7 * 24 * 3600, 169}} {
		b.Run(tc.name, func(b *testing.B) {
			storagetest.Latencies(b, func() error {
				got, err := s.RangeRollup(context.Background(), storage.RollupQuery{HostID: "week-host", Resolution: tc.res, From: to - tc.span, To: to})
				if err == nil && (len(got) != 50 || len(got[0].Points) < tc.buckets-1) {
					err = fmt.Errorf("got %d series", len(got))
				}
				return err
			})
		})
	}
}
