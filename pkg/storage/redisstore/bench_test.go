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

func BenchmarkWriteSnapshots(b *testing.B) {
	srv := redistest.Start(b)
	s := openStore(b, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer s.Close()
	ctx := context.Background()
	base := time.Now().Unix() - 2000
	batches := make([][]storage.Snapshot, 1000)
	for i := range batches {
		batches[i] = benchBatchAt(base + int64(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.WriteSnapshots(ctx, batches[i%len(batches)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "snapshots/s")
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
