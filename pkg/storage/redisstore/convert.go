package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
)

// Moving a cluster between layouts, online. Reads see every layout's keys
// (compact.go), so the order is: (1) restart the brokers one by one with
// the new storage.layout — from then on they write the new layout, and
// every broker reads both; (2) run ConvertAll (cmd/convert-layout) with a
// Store of the new layout: each host's keys of the other layout are
// rewritten into the new one and deleted once copied. Every step is
// idempotent: a conversion stopped half-way is finished by running it
// again, and data written meanwhile in the new layout wins over the copy
// of the same timestamp. Rollups, host records and the hosts set are the
// same in both layouts and stay untouched.

// ConvertHost rewrites hostID's raw snapshots on the named shard into the
// store's layout, in place (whatever shard the ring assigns the host to:
// the conversion needs no ring), and deletes the other layout's keys once
// copied; it returns the snapshots converted.
func (s *Store) ConvertHost(ctx context.Context, shardName, hostID string) (int, error) {
	if err := storage.ValidateHostID(hostID); err != nil {
		return 0, fmt.Errorf("convert host: %w", err)
	}
	t, err := s.acquire()
	if err != nil {
		return 0, fmt.Errorf("convert host %s: %w", hostID, err)
	}
	defer s.release(t)
	sh := t.byName[shardName]
	if sh == nil {
		return 0, fmt.Errorf("convert host %s: shard %s is not in ring version %d or its previous ring", hostID, shardName, t.conf.Version)
	}
	var n int
	if s.cfg.Layout == LayoutCompact {
		n, err = s.seedToCompact(ctx, sh, hostID)
	} else {
		n, err = s.compactToSeed(ctx, sh, hostID)
	}
	if err != nil {
		return n, fmt.Errorf("convert host %s on redis shard %s to the %s layout: %w", hostID, sh.name, s.cfg.Layout, err)
	}
	return n, nil
}

// ConvertAll converts every host listed on every shard the store knows
// (both rings during a move); progress, if not nil, is called after each
// host. It returns the snapshots converted.
func (s *Store) ConvertAll(ctx context.Context, progress func(shard, host string, snapshots int)) (int, error) {
	t, err := s.acquire()
	if err != nil {
		return 0, fmt.Errorf("convert: %w", err)
	}
	var names []string
	for _, sh := range t.all() {
		names = append(names, sh.name)
	}
	s.release(t)
	total := 0
	for _, name := range names {
		hosts, err := s.HostsOn(ctx, name)
		if err != nil {
			return total, err
		}
		for _, h := range hosts {
			n, err := s.ConvertHost(ctx, name, h)
			total += n
			if err != nil {
				return total, err
			}
			if progress != nil {
				progress(name, h, n)
			}
		}
	}
	return total, nil
}

func (s *Store) seedToCompact(ctx context.Context, sh *shard, host string) (int, error) {
	members, err := sh.client.ZRangeWithScores(ctx, sh.keys.index(host), 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("read the seed index: %w", err)
	}
	converted := 0
	ttl := s.compactTTL() * 1000
	err = chunks(members, s.cfg.ReadChunk, func(members []redis.Z) error {
		keys := make([]string, len(members))
		for i, z := range members {
			keys[i] = z.Member.(string)
		}
		byWindow := map[int64][]interface{}{}
		newest := int64(math.MinInt64)
		arena := sampleArena{block: 2048}
		err := s.hgetallChunks(ctx, sh.client, keys, func(key string, kvs []redis.KeyValue) error {
			if len(kvs) == 0 {
				return nil
			}
			snap, err := decodeSnapshot(key, host, kvs, nil, &arena)
			if err != nil {
				return err
			}
			w := windowOf(snap.Timestamp)
			if byWindow[w] == nil {
				byWindow[w] = []interface{}{ttl, w}
			}
			var fields []interface{}
			rec := chunk.AppendSchemaRecord(nil, &snap, func(id chunk.SchemaID, sch []byte) {
				if f := schemaField(id); !slices.Contains(byWindow[w], interface{}(f)) && !slices.Contains(fields, interface{}(f)) {
					fields = append(fields, f, slices.Clone(sch))
				}
			})
			byWindow[w] = append(append(byWindow[w], strconv.FormatInt(snap.Timestamp, 10), rec), fields...)
			newest = max(newest, snap.Timestamp)
			converted++
			return nil
		})
		if err != nil {
			return err
		}
		for w, args := range byWindow {
			if err := headMerge.Run(ctx, sh.client, []string{sh.keys.head(host, w), sh.keys.headIndex(host)}, args...).Err(); err != nil {
				return fmt.Errorf("write head %d: %w", w, err)
			}
		}
		pipe := sh.client.TxPipeline()
		if newest != math.MinInt64 {
			pipe.ZAddArgs(ctx, sh.keys.lastData(), redis.ZAddArgs{GT: true, Members: []redis.Z{{Score: float64(newest), Member: host}}})
			pipe.Expire(ctx, sh.keys.lastData(), s.hostsTTL)
		}
		pipe.Unlink(ctx, keys...)
		ms := make([]interface{}, len(keys))
		for i, k := range keys {
			ms[i] = k
		}
		pipe.ZRem(ctx, sh.keys.index(host), ms...)
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("delete %d seed hashes: %w", len(keys), err)
		}
		return nil
	})
	if err != nil {
		return converted, err
	}
	return converted, s.sealClosed(ctx, sh, host)
}

// seedPut writes a seed hash from a temporary key unless the hash exists
// (a seed write made meanwhile is the newer). KEYS: tmp, hash, index;
// ARGV: ttl (s), ts.
var seedPut = redis.NewScript(`
if redis.call('RENAMENX', KEYS[1], KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) end
redis.call('EXPIRE', KEYS[2], ARGV[1], 'NX')
redis.call('ZADD', KEYS[3], ARGV[2], KEYS[2])
redis.call('EXPIRE', KEYS[3], ARGV[1])
return 1
`)

func (s *Store) compactToSeed(ctx context.Context, sh *shard, host string) (int, error) {
	pipe := sh.client.Pipeline()
	ci := pipe.ZRange(ctx, sh.keys.chunkIndex(host), 0, -1)
	hi := pipe.ZRange(ctx, sh.keys.headIndex(host), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("read the chunk indexes: %w", err)
	}
	chunkWs, err := rollupStarts(ci.Val())
	if err != nil {
		return 0, err
	}
	headWs, err := rollupStarts(hi.Val())
	if err != nil {
		return 0, err
	}
	windows := append(chunkWs, headWs...)
	converted := 0
	dec := chunk.NewDecoder()
	cutoff := s.cutoff()
	retention := ttlSeconds(s.cfg.Retention)
	for _, w := range windows {
		data, err := readWindows(ctx, sh.client, sh, host, []int64{w}, []int64{w})
		if err != nil {
			return converted, err
		}
		d := data[w]
		if d == nil {
			continue
		}
		snaps, err := decodeWindow(dec, sh, host, w, d, cutoff, math.MaxInt64, nil)
		if err != nil {
			return converted, err
		}
		pipe := sh.client.Pipeline()
		for i := range snaps {
			sn := &snaps[i]
			key := string(sh.keys.metrics(nil, host, sn.Timestamp))
			tmp := sh.keys.rollupTmp(host, s.commitToken(), 0)
			args := []interface{}{"hset", tmp, "host_id", host, "timestamp", sn.Timestamp}
			for k, v := range sn.Tags {
				args = append(args, "tag:"+k, v)
			}
			for _, smp := range sn.Samples {
				args = append(args, "metric:"+smp.Series, appendValue(nil, smp.Value, smp.Unit))
			}
			_ = pipe.Process(ctx, redis.NewIntCmd(ctx, args...))
			pipe.Expire(ctx, tmp, rollupTmpTTL)
			seedPut.EvalSha(ctx, pipe, []string{tmp, key, sh.keys.index(host)}, retention, sn.Timestamp)
		}
		if len(snaps) > 0 {
			if err := seedPut.Load(ctx, sh.client).Err(); err != nil {
				return converted, fmt.Errorf("load the conversion script: %w", err)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return converted, fmt.Errorf("write %d seed hashes of window %d: %w", len(snaps), w, err)
			}
		}
		converted += len(snaps)
		tx := sh.client.TxPipeline()
		tx.Unlink(ctx, sh.keys.chunk(host, w))
		tx.ZRem(ctx, sh.keys.chunkIndex(host), w)
		if _, err := tx.Exec(ctx); err != nil {
			return converted, fmt.Errorf("delete chunk %d: %w", w, err)
		}
		n, err := headDrop.Run(ctx, sh.client, []string{sh.keys.head(host, w), sh.keys.headIndex(host)}, d.version, w).Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			return converted, fmt.Errorf("delete head %d: %w", w, err)
		}
		if n == 0 && d.version != "" {
			return converted, fmt.Errorf("head %d took writes meanwhile: a broker still writes the compact layout; restart it with storage.layout: seed and convert again", w)
		}
	}
	return converted, nil
}
