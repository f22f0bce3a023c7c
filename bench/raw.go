package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage"
)

// pool is a set of template snapshots with varied values; writers stamp a
// host and a timestamp on them.
type pool []storage.Snapshot

func newPool(tpl *loadgen.Template) pool {
	p := make(pool, 64)
	for i := range p {
		p[i] = tpl.Snapshot("x", 0, uint64(i+1))
	}
	return p
}

// batches runs workers goroutines for dur, each calling write with
// batches of size snapshots of its own hosts (hosts/workers of them, one
// second apart per host, starting at base), and returns snapshots written
// per second.
func batches(ctx context.Context, p pool, hosts, size, workers int, base int64, dur time.Duration, write func(ctx context.Context, snaps []storage.Snapshot) error) (float64, int64, error) {
	var written atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []string
			for h := w; h < hosts; h += workers {
				mine = append(mine, fmt.Sprintf("raw-%05d", h))
			}
			buf := make([]storage.Snapshot, size)
			next := 0
			for time.Now().Before(deadline) {
				for i := range buf {
					s := p[next%len(p)]
					s.HostID = mine[next%len(mine)]
					s.Timestamp = base + int64(next/len(mine))
					buf[i] = s
					next++
				}
				if err := write(ctx, buf); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				written.Add(int64(size))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	return float64(written.Load()) / el, written.Load(), firstErr
}

// rawWriter writes the seed's layout with plain go-redis pipelines: one
// MULTI/EXEC per batch holding, per snapshot, DEL + HSET (host_id,
// timestamp, tag:*, metric:*) + EXPIRE + ZADD index; per host, EXPIRE
// index + ZREMRANGEBYSCORE index + ZADD GT hosts + EXPIRE host; then
// EXPIRE hosts. That is exactly what pkg/storage/redisstore sends with
// rollups off (checked against redisstore.go's writeShardOnce); with
// rollups on the store adds a read pipeline and a script per host, which
// the figures compare with the store's own WriteSnapshots instead.
type rawWriter struct {
	rdb       *redis.Client
	retention time.Duration
}

func newRawWriter(addr string) *rawWriter {
	return &rawWriter{
		rdb: redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, PoolSize: 8,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}}),
		retention: storage.DefaultRetention,
	}
}

func (r *rawWriter) write(ctx context.Context, snaps []storage.Snapshot) error {
	const prefix = "monitor:"
	pipe := r.rdb.TxPipeline()
	newest := map[string]int64{}
	var order []string
	for i := range snaps {
		s := &snaps[i]
		ts := strconv.FormatInt(s.Timestamp, 10)
		key := prefix + "metrics:" + s.HostID + ":" + ts
		args := make([]any, 0, 6+2*len(s.Tags)+2*len(s.Samples))
		args = append(args, "hset", key, "host_id", s.HostID, "timestamp", ts)
		for k, v := range s.Tags {
			args = append(args, "tag:"+k, v)
		}
		for j := range s.Samples {
			smp := &s.Samples[j]
			args = append(args, "metric:"+smp.Series, jsonValue(smp.Value, smp.Unit))
		}
		pipe.Del(ctx, key)
		_ = pipe.Process(ctx, redis.NewIntCmd(ctx, args...))
		pipe.Expire(ctx, key, r.retention)
		pipe.ZAdd(ctx, prefix+"index:metrics:"+s.HostID, redis.Z{Score: float64(s.Timestamp), Member: key})
		if n, ok := newest[s.HostID]; !ok {
			order = append(order, s.HostID)
			newest[s.HostID] = s.Timestamp
		} else if s.Timestamp > n {
			newest[s.HostID] = s.Timestamp
		}
	}
	cut := "(" + strconv.FormatInt(time.Now().Add(-r.retention).Unix(), 10)
	for _, id := range order {
		idx := prefix + "index:metrics:" + id
		pipe.Expire(ctx, idx, r.retention)
		pipe.ZRemRangeByScore(ctx, idx, "-inf", cut)
		pipe.ZAddArgs(ctx, prefix+"hosts", redis.ZAddArgs{GT: true, Members: []redis.Z{{Score: float64(newest[id]), Member: id}}})
		pipe.Expire(ctx, prefix+"host:"+id, r.retention)
	}
	pipe.Expire(ctx, prefix+"hosts", r.retention)
	_, err := pipe.Exec(ctx)
	return err
}

// jsonValue is {"value":v,"unit":"u"} with v formatted as encoding/json
// formats a float64 (units here need no escaping).
func jsonValue(v float64, unit string) []byte {
	b := make([]byte, 0, 40)
	b = append(b, `{"value":`...)
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		b = strconv.AppendFloat(b, v, 'e', -1, 64)
	} else {
		b = strconv.AppendFloat(b, v, 'f', -1, 64)
	}
	b = append(b, `,"unit":"`...)
	b = append(b, unit...)
	return append(b, `"}`...)
}
