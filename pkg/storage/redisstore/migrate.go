package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Moving hosts between shards (the broker's migrator drives it: HostsOn on
// the old owners, MoveHost per host whose owner changed), and the reads
// that consult both owners meanwhile. The package doc has the rules; this
// file the mechanics.
//
// Two keys exist only during a move (host-tagged like the rest):
//
//	{prefix}moving:{hostId}  STRING on the source, PX moveFenceTTL: the
//	    fence. While it is up the source's rollup commit refuses the host
//	    (-1, ErrHostMoving to a broker still on the old ring; the agent
//	    resends), so the buckets and seen bits MoveHost merges cannot
//	    change under it. Its value is the token of the MoveHost holding
//	    it; a second MoveHost of the host is refused.
//	{prefix}moved:{hostId}   HASH on the target, TTL moveLedgerTTL: the
//	    ledger. Field {res}:{start} = the digest of the source bucket
//	    merged into the target's, written by the same script as the merge:
//	    a MoveHost resumed after a crash does not merge it twice, and a
//	    read that sees the source bucket and the ledger entry knows the
//	    target already counts it.

// ErrHostMoving is returned by a write whose host's rollups are being moved
// away from the shard it wrote to: the writer still uses the old ring. The
// snapshot is not acknowledged; sent again (to a broker on the new ring) it
// is stored and counted on the new owner.
var ErrHostMoving = errors.New("host is moving to another redis shard")

const (
	// moveFenceTTL bounds how long a crashed MoveHost blocks the source's
	// rollup commits for its host; MoveHost renews it with every chunk.
	moveFenceTTL = 30 * time.Second
	// moveLedgerTTL is how long a ledger outlives its last merge; MoveHost
	// removes entries as it deletes the source buckets, so only a move
	// abandoned half-way leaves one, and it must outlive the resume.
	moveLedgerTTL = 7 * 24 * time.Hour
	// moveRounds bounds how often MoveHost looks again at a source that
	// keeps receiving writes for the host.
	moveRounds = 8
	// moveDigestSize is the length of a ledger digest (SHA-256, truncated).
	moveDigestSize = 16
)

func (k keyspace) fence(hostID string) string {
	return string(k.appendHost(append([]byte(k.prefix), "moving:"...), hostID))
}

func (k keyspace) ledger(hostID string) string {
	return string(k.appendHost(append([]byte(k.prefix), "moved:"...), hostID))
}

func ledgerField(res storage.Resolution, start int64) string {
	return resName(res) + ":" + strconv.FormatInt(start, 10)
}

func bucketDigest(raw []byte) string {
	d := sha256.Sum256(raw)
	return string(d[:moveDigestSize])
}

// fenceScript takes or renews the fence: 1 when held by ARGV[1], 0 when
// another MoveHost holds it.
var fenceScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// unfenceScript drops the fence if ARGV[1] holds it.
var unfenceScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// bucketMergeScript stores a merged rollup bucket on the target if the
// target's bucket still has the version read (the rollup commit's check)
// and the ledger does not already hold the source bucket's digest.
//
//	KEYS  the bucket, the ledger, the resolution's index
//	ARGV  version read ("" none), value, ledger field, digest,
//	      source PTTL (ms), bucket start, ledger TTL (ms)
//
// It returns 1 when stored, 0 on a conflict, 2 when merged before.
var bucketMergeScript = redis.NewScript(`
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[4] then return 2 end
if redis.call('GETRANGE', KEYS[1], 0, 7) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('PEXPIRE', KEYS[1], ARGV[5], 'NX')
redis.call('PEXPIRE', KEYS[1], ARGV[5], 'GT')
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[5], 'NX')
redis.call('PEXPIRE', KEYS[3], ARGV[5], 'GT')
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 1
`)

// seenMergeScript ORs a seen bitmap into the target's (KEYS[1]) through a
// temporary key (KEYS[2]), keeping the later expiry. ARGV: the bitmap, its
// PTTL (ms).
var seenMergeScript = redis.NewScript(`
local ttl = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', 60000)
redis.call('BITOP', 'OR', KEYS[1], KEYS[1], KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('PEXPIRE', KEYS[1], math.max(ttl, tonumber(ARGV[2])))
return 1
`)

// hostMergeScript merges a host record into the target's: the target's
// fields win, except first_seen (the earlier) and last_heartbeat (the
// later). ARGV: PTTL (ms), then field, value pairs.
var hostMergeScript = redis.NewScript(`
for i = 2, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  local n = tonumber(v)
  if (f == 'first_seen' or f == 'last_heartbeat') and n then
    local cur = tonumber(redis.call('HGET', KEYS[1], f))
    if not cur or (f == 'first_seen' and n < cur) or (f == 'last_heartbeat' and n > cur) then
      redis.call('HSET', KEYS[1], f, v)
    end
  else
    redis.call('HSETNX', KEYS[1], f, v)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1], 'NX')
redis.call('PEXPIRE', KEYS[1], ARGV[1], 'GT')
return 1
`)

// delIfSameScript deletes KEYS[1] if its DUMP is still ARGV[1]: a host
// record that changed after it was copied is copied again next round.
var delIfSameScript = redis.NewScript(`
if redis.call('DUMP', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// zremIfScoreScript removes member ARGV[1] from KEYS[1] if its score is
// not above ARGV[2] (the score copied).
var zremIfScoreScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
`)

var moveScripts = append([]*redis.Script{fenceScript, unfenceScript, bucketMergeScript, seenMergeScript, hostMergeScript, delIfSameScript, zremIfScoreScript}, compactMoveScripts...)

// HostsOn lists, sorted, the ids of the hosts whose keys live on the named
// shard (of the current or the previous ring): the members of its hosts
// set. Every write, registration and heartbeat adds its host there, and a
// member stays as long as any key of its host may (the longest of the
// retention, HostTTL and the rollup retentions), so the set is complete
// without KEYS or SCAN.
func (s *Store) HostsOn(ctx context.Context, shardName string) ([]string, error) {
	t, err := s.acquire()
	if err != nil {
		return nil, fmt.Errorf("hosts on shard %s: %w", shardName, err)
	}
	defer s.release(t)
	sh := t.byName[shardName]
	if sh == nil {
		return nil, fmt.Errorf("hosts on shard %s: not a shard of ring version %d or its previous ring", shardName, t.conf.Version)
	}
	pipe := sh.client.Pipeline()
	pipe.ZRemRangeByScore(ctx, sh.keys.hosts(), "-inf", "("+strconv.FormatInt(s.hostsCutoff(), 10))
	ids := pipe.ZRange(ctx, sh.keys.hosts(), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("hosts on redis shard %s: read the hosts set: %w", shardName, err)
	}
	out := ids.Val()[:0]
	for _, id := range ids.Val() {
		if storage.ValidateHostID(id) == nil {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

// MoveHost moves every key of hostID from shard from to shard to (both of
// the current or the previous ring; to must be the host's owner on the
// current ring, where writes go meanwhile), merging with what to already
// holds, then deletes what it copied from from. It looks at from again
// until nothing of the host is left (a broker still on the old ring may
// have written meanwhile), at most moveRounds times.
//
// It is idempotent and resumable: run again after a crash half-way it
// loses nothing and counts nothing twice. Two MoveHost calls for one host
// may not overlap: the second fails while the first holds the host's fence.
// It returns the number of keys it wrote to to.
func (s *Store) MoveHost(ctx context.Context, hostID, from, to string) (int, error) {
	if err := storage.ValidateHostID(hostID); err != nil {
		return 0, fmt.Errorf("move host: %w", err)
	}
	t, err := s.acquire()
	if err != nil {
		return 0, fmt.Errorf("move host %s: %w", hostID, err)
	}
	defer s.release(t)
	src, dst := t.byName[from], t.byName[to]
	switch {
	case src == nil:
		return 0, fmt.Errorf("move host %s: shard %s is not in ring version %d or its previous ring", hostID, from, t.conf.Version)
	case dst == nil:
		return 0, fmt.Errorf("move host %s: shard %s is not in ring version %d or its previous ring", hostID, to, t.conf.Version)
	case src == dst:
		return 0, fmt.Errorf("move host %s: from and to are both shard %s", hostID, from)
	case t.owner(hostID) != dst:
		return 0, fmt.Errorf("move host %s to shard %s: its owner on ring version %d is %s", hostID, to, t.conf.Version, t.owner(hostID).name)
	}
	m := &mover{s: s, src: src, dst: dst, host: hostID, token: s.commitToken()}
	keys, err := m.run(ctx)
	if err != nil {
		return keys, fmt.Errorf("move host %s from redis shard %s to %s: %w", hostID, from, to, err)
	}
	return keys, nil
}

// mover is one MoveHost call.
type mover struct {
	s        *Store
	src, dst *shard
	host     string
	token    string // the fence's value
	copied   int
}

func (m *mover) run(ctx context.Context) (int, error) {
	for _, sh := range []*shard{m.src, m.dst} {
		if err := loadMoveScripts(ctx, sh); err != nil {
			return 0, err
		}
	}
	// A fence left on the target by an earlier move away from it would
	// refuse the writes that now go there.
	if err := m.dst.client.Del(ctx, m.dst.keys.fence(m.host)).Err(); err != nil {
		return 0, fmt.Errorf("clear the fence on %s: %w", m.dst.name, err)
	}
	for round := 1; ; round++ {
		if round > moveRounds {
			return m.copied, fmt.Errorf("shard %s still received keys of host %s after %d rounds", m.src.name, m.host, moveRounds)
		}
		found, err := m.round(ctx)
		if err != nil {
			return m.copied, err
		}
		if !found {
			break
		}
	}
	pipe := m.dst.client.Pipeline()
	pipe.Del(ctx, m.dst.keys.ledger(m.host))
	if _, err := pipe.Exec(ctx); err != nil {
		return m.copied, fmt.Errorf("drop the ledger on %s: %w", m.dst.name, err)
	}
	if err := unfenceScript.Run(ctx, m.src.client, []string{m.src.keys.fence(m.host)}, m.token).Err(); err != nil {
		return m.copied, fmt.Errorf("drop the fence on %s: %w", m.src.name, err)
	}
	return m.copied, nil
}

// loadMoveScripts loads the scripts a shard lacks (one SCRIPT EXISTS when
// it has them all): they run in pipelines, where EVALSHA cannot fall back
// to EVAL.
func loadMoveScripts(ctx context.Context, sh *shard) error {
	hashes := make([]string, len(moveScripts))
	for i, sc := range moveScripts {
		hashes[i] = sc.Hash()
	}
	have, err := sh.client.ScriptExists(ctx, hashes...).Result()
	if err != nil {
		return fmt.Errorf("check the move scripts on shard %s: %w", sh.name, err)
	}
	for i, sc := range moveScripts {
		if i < len(have) && have[i] {
			continue
		}
		if err := sc.Load(ctx, sh.client).Err(); err != nil {
			return fmt.Errorf("load the move scripts on shard %s: %w", sh.name, err)
		}
	}
	return nil
}

// fence queues the taking or renewal of the fence on the source.
func (m *mover) fence(ctx context.Context, pipe redis.Pipeliner) *redis.Cmd {
	return fenceScript.EvalSha(ctx, pipe, []string{m.src.keys.fence(m.host)}, m.token, moveFenceTTL.Milliseconds())
}

func (m *mover) checkFence(cmd *redis.Cmd) error {
	n, err := cmd.Int()
	if err != nil {
		return fmt.Errorf("take the fence on %s: %w", m.src.name, err)
	}
	if n != 1 {
		return fmt.Errorf("host %s is being moved by another MoveHost (its fence on %s is held)", m.host, m.src.name)
	}
	return nil
}

// round copies what the source holds of the host, deletes it there, and
// reports whether it found anything.
func (m *mover) round(ctx context.Context) (bool, error) {
	src := m.src
	pipe := src.client.Pipeline()
	fence := m.fence(ctx, pipe)
	index := pipe.ZRangeWithScores(ctx, src.keys.index(m.host), 0, -1)
	indexTTL := pttl(ctx, pipe, src.keys.index(m.host))
	var rollIdx [2]*redis.ZSliceCmd
	for i, res := range storage.RollupResolutions() {
		rollIdx[i] = pipe.ZRangeWithScores(ctx, src.keys.rollupIndex(res, m.host), 0, -1)
	}
	hostExists := pipe.Exists(ctx, src.keys.host(m.host))
	member := pipe.ZScore(ctx, src.keys.hosts(), m.host)
	compact := m.listCompact(ctx, pipe)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("list the host's keys on %s: %w", src.name, err)
	}
	if err := m.checkFence(fence); err != nil {
		return false, err
	}
	for _, c := range []redis.Cmder{index, indexTTL, rollIdx[0], rollIdx[1], hostExists} {
		if err := c.Err(); err != nil {
			return false, fmt.Errorf("list the host's keys on %s: %w", src.name, err)
		}
	}
	_, memberErr := member.Result()
	if memberErr != nil && !errors.Is(memberErr, redis.Nil) {
		return false, fmt.Errorf("list the host's keys on %s: %w", src.name, memberErr)
	}
	hasMember := memberErr == nil
	if len(index.Val()) == 0 && len(rollIdx[0].Val()) == 0 && len(rollIdx[1].Val()) == 0 && hostExists.Val() == 0 && !hasMember && !compact.any() {
		return false, nil
	}

	// Seen bitmaps first: a broker on the new ring then skips what the
	// buckets bring along. One per hour that has a snapshot or an hour
	// bucket and may still take data.
	oldest := m.s.now().Add(-m.s.cfg.Retention - 2*time.Hour).Unix()
	var hours []int64
	for _, z := range index.Val() {
		hours = append(hours, storage.Hour.BucketStart(int64(z.Score)))
	}
	for _, list := range []*redis.StringSliceCmd{compact.chunks, compact.heads} {
		ws, err := rollupStarts(list.Val())
		if err != nil {
			return false, err
		}
		for _, w := range ws {
			for h := storage.Hour.BucketStart(w); h < w+chunkSpan; h += int64(storage.Hour) {
				hours = append(hours, h)
			}
		}
	}
	for _, z := range rollIdx[1].Val() {
		if int64(z.Score) >= oldest {
			hours = append(hours, int64(z.Score))
		}
	}
	slices.Sort(hours)
	hours = slices.Compact(hours)
	seenCopied, err := m.copySeen(ctx, hours)
	if err != nil {
		return false, err
	}
	for i, res := range storage.RollupResolutions() {
		if err := m.moveBuckets(ctx, res, rollIdx[i].Val()); err != nil {
			return false, err
		}
	}
	if err := m.moveSnapshots(ctx, index.Val(), indexTTL.Val()); err != nil {
		return false, err
	}
	if err := m.moveCompact(ctx, compact); err != nil {
		return false, err
	}
	if hostExists.Val() == 1 {
		if err := m.moveRecord(ctx); err != nil {
			return false, err
		}
	}
	if hasMember {
		if err := m.moveMember(ctx); err != nil {
			return false, err
		}
	}
	if len(seenCopied) > 0 {
		if err := src.client.Unlink(ctx, seenCopied...).Err(); err != nil {
			return false, fmt.Errorf("delete %d seen bitmaps on %s: %w", len(seenCopied), src.name, err)
		}
	}
	return true, nil
}

// pexpireLater gives key a TTL of ms unless it has a longer one.
func pexpireLater(ctx context.Context, pipe redis.Pipeliner, key string, ms int64) {
	pipe.Do(ctx, "pexpire", key, ms, "NX")
	pipe.Do(ctx, "pexpire", key, ms, "GT")
}

func pttl(ctx context.Context, pipe redis.Pipeliner, key string) *redis.IntCmd {
	cmd := redis.NewIntCmd(ctx, "pttl", key)
	_ = pipe.Process(ctx, cmd)
	return cmd
}

// chunks calls fn with consecutive slices of at most ReadChunk items.
func chunks[T any](items []T, size int, fn func([]T) error) error {
	for first := 0; first < len(items); first += size {
		if err := fn(items[first:min(first+size, len(items))]); err != nil {
			return err
		}
	}
	return nil
}

// remaining is the PTTL (ms, at least 1 s) of a key expiring at Unix
// second at.
func (m *mover) remaining(at int64) int64 {
	return max(at*1000-m.s.now().UnixMilli(), 1000)
}

// copySeen ORs the source's seen bitmaps of hours into the target's and
// returns the source keys copied (deleted at the end of the round, after
// the buckets they vouch for).
func (m *mover) copySeen(ctx context.Context, hours []int64) ([]string, error) {
	var done []string
	err := chunks(hours, m.s.cfg.ReadChunk, func(hours []int64) error {
		pipe := m.src.client.Pipeline()
		fence := m.fence(ctx, pipe)
		gets := make([]*redis.StringCmd, len(hours))
		ttls := make([]*redis.IntCmd, len(hours))
		for i, h := range hours {
			gets[i] = pipe.Get(ctx, m.src.keys.seen(m.host, h))
			ttls[i] = pttl(ctx, pipe, m.src.keys.seen(m.host, h))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read %d seen bitmaps on %s: %w", len(hours), m.src.name, err)
		}
		if err := m.checkFence(fence); err != nil {
			return err
		}
		pipe = m.dst.client.Pipeline()
		var srcKeys []string
		for i, h := range hours {
			bits, err := gets[i].Bytes()
			if errors.Is(err, redis.Nil) || ttls[i].Val() == -2 {
				continue
			}
			ttl := ttls[i].Val()
			if ttl == -1 { // not written by us: the expiry we would give it
				ttl = m.remaining(h + int64(storage.Hour) + int64(m.s.cfg.Retention/time.Second))
			}
			seenMergeScript.EvalSha(ctx, pipe, []string{m.dst.keys.seen(m.host, h), m.dst.keys.rollupTmp(m.host, m.token, i)},
				bits, ttl)
			srcKeys = append(srcKeys, m.src.keys.seen(m.host, h))
		}
		if len(srcKeys) == 0 {
			return nil
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("merge %d seen bitmaps into %s: %w", len(srcKeys), m.dst.name, err)
		}
		m.copied += len(srcKeys)
		done = append(done, srcKeys...)
		return nil
	})
	return done, err
}

// moveBuckets merges the source's buckets of res (its index members) into
// the target's, then deletes them on the source.
func (m *mover) moveBuckets(ctx context.Context, res storage.Resolution, members []redis.Z) error {
	ledger := m.dst.keys.ledger(m.host)
	return chunks(members, m.s.cfg.ReadChunk, func(members []redis.Z) error {
		pipe := m.src.client.Pipeline()
		fence := m.fence(ctx, pipe)
		gets := make([]*redis.StringCmd, len(members))
		ttls := make([]*redis.IntCmd, len(members))
		for i, z := range members {
			key := m.src.keys.rollup(res, m.host, int64(z.Score))
			gets[i] = pipe.Get(ctx, key)
			ttls[i] = pttl(ctx, pipe, key)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read %d %s buckets on %s: %w", len(members), res, m.src.name, err)
		}
		if err := m.checkFence(fence); err != nil {
			return err
		}
		type item struct {
			start  int64
			raw    []byte
			ttl    int64
			digest string
		}
		var todo []item
		for i, z := range members {
			raw, err := gets[i].Bytes()
			if errors.Is(err, redis.Nil) || ttls[i].Val() == -2 {
				continue // expired: only its index member goes
			}
			start := int64(z.Score)
			ttl := ttls[i].Val()
			if ttl == -1 { // not written by us: the expiry we would give it
				ttl = m.remaining(start + int64(m.s.cfg.Rollups.Of(res)/time.Second))
			}
			todo = append(todo, item{start: start, raw: raw, ttl: ttl, digest: bucketDigest(raw)})
		}
		var strs map[string]string
		var srcAggs, dstAggs []storage.SeriesAggregate
		for attempt := 1; len(todo) > 0; attempt++ {
			if attempt > rollupAttempts {
				return fmt.Errorf("the %s buckets on %s kept changing under concurrent writers (%d attempts)", res, m.dst.name, rollupAttempts)
			}
			pipe := m.dst.client.Pipeline()
			cur := make([]*redis.StringCmd, len(todo))
			for i, it := range todo {
				cur[i] = pipe.Get(ctx, m.dst.keys.rollup(res, m.host, it.start))
			}
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("read %d %s buckets on %s: %w", len(todo), res, m.dst.name, err)
			}
			pipe = m.dst.client.Pipeline()
			commits := make([]*redis.Cmd, len(todo))
			for i, it := range todo {
				key := m.dst.keys.rollup(res, m.host, it.start)
				have, err := cur[i].Bytes()
				if err != nil && !errors.Is(err, redis.Nil) {
					return fmt.Errorf("read %s on %s: %w", key, m.dst.name, err)
				}
				val := it.raw
				if len(have) > 0 {
					// Both hold the bucket: merge, the target's newer
					// version next.
					if srcAggs, err = decodeBucket(srcAggs, m.src.keys.rollup(res, m.host, it.start), it.raw, it.start, strs); err != nil {
						return err
					}
					if dstAggs, err = decodeBucket(dstAggs, key, have, it.start, strs); err != nil {
						return err
					}
					add := make(map[string]*storage.Aggregate, len(dstAggs))
					for j := range dstAggs {
						add[dstAggs[j].Series] = &dstAggs[j].Aggregate
					}
					version := binary.LittleEndian.Uint64(have)
					val = binary.LittleEndian.AppendUint64(make([]byte, 0, len(have)+len(it.raw)), version+1)
					val = storage.AppendRollupBucket(val, it.start, storage.MergeRollupBucket(srcAggs, add))
				}
				commits[i] = bucketMergeScript.EvalSha(ctx, pipe,
					[]string{key, ledger, m.dst.keys.rollupIndex(res, m.host)},
					have[:min(len(have), rollupVersionSize)], val, ledgerField(res, it.start), it.digest,
					it.ttl, it.start, moveLedgerTTL.Milliseconds())
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("merge %d %s buckets into %s: %w", len(todo), res, m.dst.name, err)
			}
			var retry []item
			for i, c := range commits {
				switch c.Val() {
				case int64(0):
					retry = append(retry, todo[i])
				case int64(1):
					m.copied++
				}
			}
			todo = retry
		}
		// Everything read is on the target now (or expired): delete it
		// here. The fence kept the source buckets as they were read. One
		// transaction: an index member never outlives its bucket's delete.
		pipe = m.src.client.TxPipeline()
		keys := make([]string, len(members))
		starts := make([]interface{}, len(members))
		fields := make([]string, len(members))
		for i, z := range members {
			keys[i] = m.src.keys.rollup(res, m.host, int64(z.Score))
			starts[i] = z.Member
			fields[i] = ledgerField(res, int64(z.Score))
		}
		pipe.Unlink(ctx, keys...)
		pipe.ZRem(ctx, m.src.keys.rollupIndex(res, m.host), starts...)
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("delete %d %s buckets on %s: %w", len(members), res, m.src.name, err)
		}
		if err := m.dst.client.HDel(ctx, ledger, fields...).Err(); err != nil {
			return fmt.Errorf("trim the ledger on %s: %w", m.dst.name, err)
		}
		return nil
	})
}

// moveSnapshots copies the snapshot hashes (DUMP/RESTORE; a hash the
// target already has is the target's, a rewrite of the same snapshot) and
// their index members, then deletes them on the source.
func (m *mover) moveSnapshots(ctx context.Context, members []redis.Z, indexTTL int64) error {
	dstIndex := m.dst.keys.index(m.host)
	return chunks(members, m.s.cfg.ReadChunk, func(members []redis.Z) error {
		pipe := m.src.client.Pipeline()
		fence := m.fence(ctx, pipe)
		dumps := make([]*redis.StringCmd, len(members))
		ttls := make([]*redis.IntCmd, len(members))
		for i, z := range members {
			key := z.Member.(string)
			dumps[i] = pipe.Dump(ctx, key)
			ttls[i] = pttl(ctx, pipe, key)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("dump %d snapshots on %s: %w", len(members), m.src.name, err)
		}
		if err := m.checkFence(fence); err != nil {
			return err
		}
		pipe = m.dst.client.Pipeline()
		var zs []redis.Z
		var arena []byte
		for i, z := range members {
			payload, err := dumps[i].Result()
			if errors.Is(err, redis.Nil) || ttls[i].Val() == -2 {
				continue // expired before its index member
			}
			ts := int64(z.Score)
			start := len(arena)
			arena = m.dst.keys.metrics(arena, m.host, ts)
			key := string(arena[start:])
			ttl := max(ttls[i].Val(), 0) // -1: none, RESTORE's 0
			_ = pipe.Process(ctx, redis.NewStatusCmd(ctx, "restore", key, ttl, payload))
			zs = append(zs, redis.Z{Score: z.Score, Member: key})
		}
		if len(zs) > 0 {
			pipe.ZAdd(ctx, dstIndex, zs...)
			if indexTTL > 0 {
				pexpireLater(ctx, pipe, dstIndex, indexTTL)
			}
			cmds, _ := pipe.Exec(ctx) // BUSYKEY is expected: every reply is checked
			for _, c := range cmds {
				err := c.Err()
				if err == nil {
					if c.Name() == "restore" {
						m.copied++
					}
					continue
				}
				if c.Name() == "restore" && redis.HasErrorPrefix(err, "BUSYKEY") {
					continue // the target's copy is the newer
				}
				return fmt.Errorf("copy %d snapshots to %s: %s: %w", len(zs), m.dst.name, c.Name(), err)
			}
		}
		pipe = m.src.client.TxPipeline()
		keys := make([]string, len(members))
		ms := make([]interface{}, len(members))
		for i, z := range members {
			keys[i] = z.Member.(string)
			ms[i] = z.Member
		}
		pipe.Unlink(ctx, keys...)
		pipe.ZRem(ctx, m.src.keys.index(m.host), ms...)
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("delete %d snapshots on %s: %w", len(members), m.src.name, err)
		}
		return nil
	})
}

// moveRecord merges the host record into the target's and deletes it on
// the source unless it changed meanwhile (then the next round copies it
// again).
func (m *mover) moveRecord(ctx context.Context) error {
	key := m.src.keys.host(m.host)
	pipe := m.src.client.Pipeline()
	fields := pipe.HGetAll(ctx, key)
	dump := pipe.Dump(ctx, key)
	ttl := pttl(ctx, pipe, key)
	if _, err := pipe.Exec(ctx); err != nil {
		if errors.Is(err, redis.Nil) {
			return nil // expired meanwhile
		}
		return fmt.Errorf("read the host record on %s: %w", m.src.name, err)
	}
	if len(fields.Val()) == 0 || ttl.Val() == -2 {
		return nil
	}
	args := []interface{}{max(ttl.Val(), 0)}
	names := make([]string, 0, len(fields.Val()))
	for f := range fields.Val() {
		names = append(names, f)
	}
	slices.Sort(names)
	for _, f := range names {
		args = append(args, f, fields.Val()[f])
	}
	if ttl.Val() < 0 {
		args[0] = m.s.cfg.HostTTL.Milliseconds()
	}
	if err := hostMergeScript.EvalSha(ctx, m.dst.client, []string{m.dst.keys.host(m.host)}, args...).Err(); err != nil {
		return fmt.Errorf("merge the host record into %s: %w", m.dst.name, err)
	}
	m.copied++
	if err := delIfSameScript.EvalSha(ctx, m.src.client, []string{key}, dump.Val()).Err(); err != nil {
		return fmt.Errorf("delete the host record on %s: %w", m.src.name, err)
	}
	return nil
}

// moveMember moves the host's member of the hosts set (ZADD GT on the
// target; removed on the source unless it moved on meanwhile).
func (m *mover) moveMember(ctx context.Context) error {
	pipe := m.src.client.Pipeline()
	score := pipe.ZScore(ctx, m.src.keys.hosts(), m.host)
	ttl := pttl(ctx, pipe, m.src.keys.hosts())
	if _, err := pipe.Exec(ctx); err != nil {
		if errors.Is(err, redis.Nil) {
			return nil
		}
		return fmt.Errorf("read the hosts set on %s: %w", m.src.name, err)
	}
	keep := ttl.Val()
	if keep < 0 {
		keep = m.s.hostsTTL.Milliseconds()
	}
	pipe = m.dst.client.Pipeline()
	pipe.ZAddArgs(ctx, m.dst.keys.hosts(), redis.ZAddArgs{GT: true, Members: []redis.Z{{Score: score.Val(), Member: m.host}}})
	pexpireLater(ctx, pipe, m.dst.keys.hosts(), keep)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("add the host to the hosts set on %s: %w", m.dst.name, err)
	}
	err := zremIfScoreScript.EvalSha(ctx, m.src.client, []string{m.src.keys.hosts()}, m.host,
		strconv.FormatFloat(score.Val(), 'f', -1, 64)).Err()
	if err != nil {
		return fmt.Errorf("remove the host from the hosts set on %s: %w", m.src.name, err)
	}
	return nil
}

// rangeMoving reads a host that may be moving from prev to sh: the old
// owner first, then the new one (a snapshot moved in between is found on
// the new one), merged by timestamp, the new owner's copy first. Both on
// the primaries: replicas may lag each other.
func (s *Store) rangeMoving(ctx context.Context, prev, sh *shard, q storage.RangeQuery, from int64) ([]storage.Snapshot, error) {
	old, err := s.readRange(ctx, prev.client, prev, q, from)
	if err != nil {
		return nil, fmt.Errorf("on %s: %w", prev.name, err)
	}
	cur, err := s.readRange(ctx, sh.client, sh, q, from)
	if err != nil {
		return nil, fmt.Errorf("on %s: %w", sh.name, err)
	}
	if len(old) == 0 {
		return cur, nil
	}
	out := make([]storage.Snapshot, 0, len(old)+len(cur))
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		switch {
		case j == len(cur) || (i < len(old) && old[i].Timestamp < cur[j].Timestamp):
			out = append(out, old[i])
			i++
		case i == len(old) || cur[j].Timestamp < old[i].Timestamp:
			out = append(out, cur[j])
			j++
		default: // the same snapshot on both: the new owner's
			out = append(out, cur[j])
			i++
			j++
		}
	}
	return out, nil
}

// readRollupMoving reads the buckets of a host that may be moving from src
// to dst: the source first, then the target, each target bucket in one
// transaction with its ledger entry. A source bucket whose digest the
// ledger holds is in the target's already; any other source bucket is
// merged with the target's of the same start (storage.MergeRollupBucket,
// the target's last winning a tie). Both on the primaries.
func (s *Store) readRollupMoving(ctx context.Context, src, dst *shard, q storage.RollupQuery, from int64) ([]storage.RollupSeries, error) {
	srcStarts, err := s.readRollupIndex(ctx, src.client, src, q, from)
	if err != nil {
		return nil, fmt.Errorf("on %s: %w", src.name, err)
	}
	srcRaw := make(map[int64][]byte, len(srcStarts))
	err = chunks(srcStarts, s.cfg.ReadChunk, func(starts []int64) error {
		pipe := src.client.Pipeline()
		gets := make([]*redis.StringCmd, len(starts))
		for i, st := range starts {
			gets[i] = pipe.Get(ctx, src.keys.rollup(q.Resolution, q.HostID, st))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read %d rollup buckets on %s: %w", len(starts), src.name, err)
		}
		for i, g := range gets {
			if raw, err := g.Bytes(); err == nil {
				srcRaw[starts[i]] = raw
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	dstStarts, err := s.readRollupIndex(ctx, dst.client, dst, q, from)
	if err != nil {
		return nil, fmt.Errorf("on %s: %w", dst.name, err)
	}
	starts := append(slices.Clone(dstStarts), srcStarts...)
	slices.Sort(starts)
	starts = slices.Compact(starts)
	col := rollupCollector{match: q.Match, bySeries: map[string]int{}}
	strs := map[string]string{}
	var srcAggs, dstAggs []storage.SeriesAggregate
	ledger := dst.keys.ledger(q.HostID)
	done := 0
	err = chunks(starts, s.cfg.ReadChunk, func(chunk []int64) error {
		pipe := dst.client.TxPipeline()
		gets := make([]*redis.StringCmd, len(chunk))
		var fields []string
		for i, st := range chunk {
			gets[i] = pipe.Get(ctx, dst.keys.rollup(q.Resolution, q.HostID, st))
			if srcRaw[st] != nil {
				fields = append(fields, ledgerField(q.Resolution, st))
			}
		}
		var merged *redis.SliceCmd
		if len(fields) > 0 {
			merged = pipe.HMGet(ctx, ledger, fields...)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read %d rollup buckets on %s: %w", len(chunk), dst.name, err)
		}
		f := 0
		for i, st := range chunk {
			done++
			raw := srcRaw[st]
			if raw != nil {
				if d, ok := merged.Val()[f].(string); ok && d == bucketDigest(raw) {
					raw = nil // counted in the target's already
				}
				f++
			}
			have, err := gets[i].Bytes()
			if err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("read a rollup bucket on %s: %w", dst.name, err)
			}
			key := dst.keys.rollup(q.Resolution, q.HostID, st)
			switch {
			case raw != nil && len(have) > 0:
				if srcAggs, err = decodeBucket(srcAggs, src.keys.rollup(q.Resolution, q.HostID, st), raw, st, strs); err != nil {
					return err
				}
				if dstAggs, err = decodeBucket(dstAggs, key, have, st, strs); err != nil {
					return err
				}
				add := make(map[string]*storage.Aggregate, len(dstAggs))
				for j := range dstAggs {
					add[dstAggs[j].Series] = &dstAggs[j].Aggregate
				}
				col.add(st, storage.MergeRollupBucket(srcAggs, add), len(starts)-done)
			case raw != nil:
				if srcAggs, err = decodeBucket(srcAggs, src.keys.rollup(q.Resolution, q.HostID, st), raw, st, strs); err != nil {
					return err
				}
				col.add(st, srcAggs, len(starts)-done)
			case len(have) > 0:
				if dstAggs, err = decodeBucket(dstAggs, key, have, st, strs); err != nil {
					return err
				}
				col.add(st, dstAggs, len(starts)-done)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return col.result(), nil
}
