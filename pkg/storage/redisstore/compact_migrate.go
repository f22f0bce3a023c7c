package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/pkg/storage/chunk"
)

// MoveHost's part for the compact layout's keys (compact.go). The fence
// keeps the source's chunks still (sealCommit refuses a fenced host);
// heads keep taking writes from brokers still on the old ring, so a head
// is deleted on the source only if its version is still the one copied,
// and a later round copies what came meanwhile.

// chunkPut stores a chunk on the target if the target's is still the one
// read (its SHA-1, "" none), adding it to the chunk index.
//
//	KEYS  chunk, chunk index
//	ARGV  SHA-1 read, value, PTTL (ms), {w}
var chunkPut = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if (cur and redis.sha1hex(cur) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('PEXPIRE', KEYS[1], ARGV[3], 'NX')
redis.call('PEXPIRE', KEYS[1], ARGV[3], 'GT')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[3], 'GT')
return 1
`)

// headMerge copies head records into the target's head (HSETNX: a record
// the target has is the newer write), bumps its version (a seal on the
// target that read it before retries), and indexes the window.
//
//	KEYS  head, head index
//	ARGV  PTTL (ms), {w}, then field, value pairs
var headMerge = redis.NewScript(`
for i = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1], 'NX')
redis.call('PEXPIRE', KEYS[1], ARGV[1], 'GT')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[1], 'GT')
return 1
`)

// headDrop deletes a head and its index member if the head's version is
// still ARGV[1]. KEYS: head, head index; ARGV: version, {w}.
var headDrop = redis.NewScript(`
if (redis.call('HGET', KEYS[1], 'v') or '') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
`)

var compactMoveScripts = []*redis.Script{chunkPut, headMerge, headDrop, sealCommit}

// compactKeys is what a round found of the compact layout on the source.
type compactKeys struct {
	chunks, heads *redis.StringSliceCmd
	last          *redis.FloatCmd
}

func (m *mover) listCompact(ctx context.Context, pipe redis.Pipeliner) compactKeys {
	return compactKeys{
		chunks: pipe.ZRange(ctx, m.src.keys.chunkIndex(m.host), 0, -1),
		heads:  pipe.ZRange(ctx, m.src.keys.headIndex(m.host), 0, -1),
		last:   pipe.ZScore(ctx, m.src.keys.lastData(), m.host),
	}
}

func (k compactKeys) any() bool {
	_, err := k.last.Result()
	return len(k.chunks.Val()) > 0 || len(k.heads.Val()) > 0 || err == nil
}

// moveCompact moves the chunks, then the heads, then the lastdata member.
func (m *mover) moveCompact(ctx context.Context, k compactKeys) error {
	chunks, err := rollupStarts(k.chunks.Val())
	if err != nil {
		return err
	}
	heads, err := rollupStarts(k.heads.Val())
	if err != nil {
		return err
	}
	for _, w := range chunks {
		if err := m.moveChunk(ctx, w); err != nil {
			return err
		}
	}
	for _, w := range heads {
		if err := m.moveHead(ctx, w); err != nil {
			return err
		}
	}
	if last, err := k.last.Result(); err == nil {
		if err := m.dst.client.ZAddArgs(ctx, m.dst.keys.lastData(), redis.ZAddArgs{GT: true, Members: []redis.Z{{Score: last, Member: m.host}}}).Err(); err != nil {
			return fmt.Errorf("add the host to lastdata on %s: %w", m.dst.name, err)
		}
		pexpire := m.s.hostsTTL.Milliseconds()
		if err := m.dst.client.Do(ctx, "pexpire", m.dst.keys.lastData(), pexpire, "GT").Err(); err != nil {
			return fmt.Errorf("extend lastdata on %s: %w", m.dst.name, err)
		}
		if err := m.dst.client.Do(ctx, "pexpire", m.dst.keys.lastData(), pexpire, "NX").Err(); err != nil {
			return fmt.Errorf("extend lastdata on %s: %w", m.dst.name, err)
		}
		err := zremIfScoreScript.Run(ctx, m.src.client, []string{m.src.keys.lastData()}, m.host, strconv.FormatFloat(last, 'f', -1, 64)).Err()
		if err != nil {
			return fmt.Errorf("remove the host from lastdata on %s: %w", m.src.name, err)
		}
	}
	return nil
}

// moveChunk copies one sealed window, merged with the target's chunk of
// the same window if it has one (the target's snapshots win), then deletes
// it on the source.
func (m *mover) moveChunk(ctx context.Context, w int64) error {
	pipe := m.src.client.Pipeline()
	fence := m.fence(ctx, pipe)
	get := pipe.Get(ctx, m.src.keys.chunk(m.host, w))
	ttl := pttl(ctx, pipe, m.src.keys.chunk(m.host, w))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read chunk %d on %s: %w", w, m.src.name, err)
	}
	if err := m.checkFence(fence); err != nil {
		return err
	}
	raw, err := get.Bytes()
	if err == nil && ttl.Val() != -2 {
		keep := ttl.Val()
		if keep < 0 {
			keep = m.remaining(w+chunkSpan+ttlSeconds(m.s.cfg.Retention)) * 1000
		}
		for attempt := 1; ; attempt++ {
			if attempt > rollupAttempts {
				return fmt.Errorf("chunk %d on %s kept changing (%d attempts)", w, m.dst.name, rollupAttempts)
			}
			have, err := m.dst.client.Get(ctx, m.dst.keys.chunk(m.host, w)).Bytes()
			if err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("read chunk %d on %s: %w", w, m.dst.name, err)
			}
			val := raw
			if have != nil {
				dec := chunk.NewDecoder()
				a, err := dec.Decode(nil, raw, m.host, math.MinInt64, math.MaxInt64, nil)
				if err != nil {
					return fmt.Errorf("chunk %d on %s: %w", w, m.src.name, err)
				}
				b, err := dec.Decode(nil, have, m.host, math.MinInt64, math.MaxInt64, nil)
				if err != nil {
					return fmt.Errorf("chunk %d on %s: %w", w, m.dst.name, err)
				}
				if val, err = chunk.Encode(nil, chunk.Merge(a, b)); err != nil {
					return fmt.Errorf("merge chunk %d: %w", w, err)
				}
			}
			n, err := chunkPut.Run(ctx, m.dst.client, []string{m.dst.keys.chunk(m.host, w), m.dst.keys.chunkIndex(m.host)},
				digest(have), val, keep, w).Int()
			if err != nil {
				return fmt.Errorf("store chunk %d on %s: %w", w, m.dst.name, err)
			}
			if n == 1 {
				m.copied++
				break
			}
		}
	}
	tx := m.src.client.TxPipeline()
	tx.Unlink(ctx, m.src.keys.chunk(m.host, w))
	tx.ZRem(ctx, m.src.keys.chunkIndex(m.host), w)
	if _, err := tx.Exec(ctx); err != nil {
		return fmt.Errorf("delete chunk %d on %s: %w", w, m.src.name, err)
	}
	return nil
}

// moveHead copies one head's records into the target's head of the window
// and deletes the source's if no write changed it meanwhile.
func (m *mover) moveHead(ctx context.Context, w int64) error {
	key := m.src.keys.head(m.host, w)
	pipe := m.src.client.Pipeline()
	all := pipe.HGetAll(ctx, key)
	ttl := pttl(ctx, pipe, key)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("read head %d on %s: %w", w, m.src.name, err)
	}
	fields := all.Val()
	version := fields[headVersion]
	if len(fields) > 0 && ttl.Val() != -2 {
		keep := ttl.Val()
		if keep < 0 {
			keep = m.s.compactTTL() * 1000
		}
		args := []interface{}{keep, w}
		for f, v := range fields {
			if f != headVersion {
				args = append(args, f, v)
			}
		}
		if err := headMerge.Run(ctx, m.dst.client, []string{m.dst.keys.head(m.host, w), m.dst.keys.headIndex(m.host)}, args...).Err(); err != nil {
			return fmt.Errorf("copy head %d to %s: %w", w, m.dst.name, err)
		}
		m.copied++
	}
	if err := headDrop.Run(ctx, m.src.client, []string{key, m.src.keys.headIndex(m.host)}, version, w).Err(); err != nil {
		return fmt.Errorf("delete head %d on %s: %w", w, m.src.name, err)
	}
	return nil
}
