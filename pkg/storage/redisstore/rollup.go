package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/pkg/storage"
)

// The rollups of a write call are merged here, not in Redis: Redis' one
// thread is the scarce resource of a shard, brokers scale out. Per call:
//
//  1. one read pipeline: per host, GETBIT of each snapshot's seen bit and
//     GET of every minute and hour bucket the call touches;
//  2. the new buckets are merged in Go from the snapshots whose bit was
//     clear (the ones not counted before);
//  3. in the call's write pipeline, next to the raw writes, per host: a SET
//     of each new bucket to a temporary key (5 minutes TTL), then one
//     EVALSHA of rollupCommit, which renames them over the buckets only if
//     nothing changed since step 1 (every bucket still carries the version
//     read, every bit is still clear), and otherwise deletes them and
//     returns 0, and steps 1–3 run again for that host.
//
// The buckets travel as plain SET arguments, not script arguments: handing
// a 3 KB string to Lua costs Redis more than the SET and RENAME together.
//
// A bucket is a STRING: an 8-byte version, bumped by every commit, then
// storage.AppendRollupBucket's encoding. Every commit that sets a seen bit
// also rewrites the buckets of that snapshot, so the version check alone
// would catch a concurrent count; the script checks the bits too, for
// snapshots without samples.

// rollupCommit moves one host's merged rollup buckets into place if nothing
// changed since they were read. Every check comes before the first write.
// An index changes only when a bucket is new: most commits are a few
// checks, two RENAMEs and a SETBIT.
//
//	KEYS   per bucket (B of them): the bucket, its temporary key; the seen
//	       bitmaps (S); the minute and the hour index; the host's move
//	       fence (migrate.go)
//	ARGV   B, then per bucket: the version read (8 bytes, "" when it did
//	       not exist), expire-at (Unix s), the index to add it to (0 none:
//	       not new; 1 minute; 2 hour), bucket start;
//	       S, then per bitmap: expire-at, bit count N, N bits;
//	       per index (minute, hour): expire-at (0: untouched), cut-off
//	       (members with a lower score are removed)
//
// It returns 1 when stored, 0 on a conflict, -1 when the host is moving
// away from this shard (its fence is up: MoveHost is copying its rollups,
// which must not change under it).
var rollupCommit = redis.NewScript(`
local B = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then
  for i = 1, B do redis.call('DEL', KEYS[2 * i]) end
  return -1
end
local p = 2
local ok = true
for i = 1, B do
  if redis.call('GETRANGE', KEYS[2 * i - 1], 0, 7) ~= ARGV[p] then ok = false; break end
  p = p + 4
end
p = 2 + 4 * B
local S = tonumber(ARGV[p])
p = p + 1
local q = p
for j = 1, S do
  local n = tonumber(ARGV[q + 1])
  for k = 1, n do
    if ok and redis.call('GETBIT', KEYS[2 * B + j], ARGV[q + 1 + k]) == 1 then ok = false end
  end
  q = q + 2 + n
end
if not ok then
  for i = 1, B do redis.call('DEL', KEYS[2 * i]) end
  return 0
end
local idx = {KEYS[2 * B + S + 1], KEYS[2 * B + S + 2]}
local r = 2
for i = 1, B do
  redis.call('RENAME', KEYS[2 * i], KEYS[2 * i - 1])
  redis.call('EXPIREAT', KEYS[2 * i - 1], ARGV[r + 1])
  local x = tonumber(ARGV[r + 2])
  if x > 0 then redis.call('ZADD', idx[x], ARGV[r + 3], ARGV[r + 3]) end
  r = r + 4
end
for j = 1, S do
  local n = tonumber(ARGV[p + 1])
  for k = 1, n do redis.call('SETBIT', KEYS[2 * B + j], ARGV[p + 1 + k], 1) end
  redis.call('EXPIREAT', KEYS[2 * B + j], ARGV[p])
  p = p + 2 + n
end
for i = 1, 2 do
  local exp = ARGV[q + 2 * i - 2]
  if exp ~= '0' then
    redis.call('ZREMRANGEBYSCORE', idx[i], '-inf', ARGV[q + 2 * i - 1])
    redis.call('EXPIREAT', idx[i], exp, 'NX')
    redis.call('EXPIREAT', idx[i], exp, 'GT')
  end
end
return 1
`)

// rollupTmpTTL bounds how long a temporary bucket outlives a commit that
// never ran (a cluster pipeline that failed half-way).
const rollupTmpTTL = 5 * time.Minute

// rollupVersionSize is the version prefix of a stored bucket.
const rollupVersionSize = 8

// rollupAttempts bounds how often one call re-reads a host's buckets after
// a conflict with a concurrent writer of the same host.
const rollupAttempts = 8

// resName is the resolution's part of a key.
func resName(res storage.Resolution) string {
	if res == storage.Hour {
		return "1h"
	}
	return "1m"
}

func (k keyspace) rollup(res storage.Resolution, hostID string, start int64) string {
	b := append([]byte(k.prefix), "rollup:"...)
	b = append(b, resName(res)...)
	b = append(b, ':')
	b = k.appendHost(b, hostID)
	b = append(b, ':')
	return string(strconv.AppendInt(b, start, 10))
}

func (k keyspace) rollupIndex(res storage.Resolution, hostID string) string {
	b := append([]byte(k.prefix), "index:rollup:"...)
	b = append(b, resName(res)...)
	b = append(b, ':')
	return string(k.appendHost(b, hostID))
}

// rollupTmp is a temporary bucket of one commit; token is unique per
// commit.
func (k keyspace) rollupTmp(hostID, token string, n int) string {
	b := append([]byte(k.prefix), "rollup:tmp:"...)
	b = k.appendHost(b, hostID)
	b = append(b, ':')
	b = append(b, token...)
	b = append(b, ':')
	return string(strconv.AppendInt(b, int64(n), 10))
}

func (k keyspace) seen(hostID string, hourStart int64) string {
	b := append([]byte(k.prefix), "rollup:seen:"...)
	b = k.appendHost(b, hostID)
	b = append(b, ':')
	return string(strconv.AppendInt(b, hourStart, 10))
}

// rollupWork is one host's rollups in a write call.
type rollupWork struct {
	host  string
	snaps []*storage.Snapshot // the last snapshot per timestamp, within the retention
	// Filled by read:
	bits    []*redis.IntCmd    // per snapshot, its seen bit
	buckets []rollupBucketRead // every bucket the snapshots touch
	// Filled by readPrev while the host may be moving here: per snapshot,
	// its seen bit on the host's previous owner (nil: not moving).
	prevBits []*redis.IntCmd
	// Filled by queue:
	commit *redis.Cmd
}

type rollupBucketRead struct {
	res   storage.Resolution
	start int64
	key   string
	get   *redis.StringCmd
}

// newRollupWork keeps the snapshots the rollups count: the last of each
// timestamp in call order (the one stored), none older than cutoff.
func newRollupWork(host string, snaps []*storage.Snapshot, cutoff int64) *rollupWork {
	byTS := make(map[int64]int, len(snaps))
	w := &rollupWork{host: host}
	for _, sn := range snaps {
		if sn.Timestamp < cutoff {
			continue
		}
		if j, ok := byTS[sn.Timestamp]; ok {
			w.snaps[j] = sn
			continue
		}
		byTS[sn.Timestamp] = len(w.snaps)
		w.snaps = append(w.snaps, sn)
	}
	if len(w.snaps) == 0 {
		return nil
	}
	return w
}

// read queues step 1 on pipe.
func (w *rollupWork) read(ctx context.Context, pipe redis.Pipeliner, ks keyspace) {
	w.bits = w.bits[:0]
	w.buckets = w.buckets[:0]
	seenBucket := map[[2]int64]bool{}
	for _, sn := range w.snaps {
		hour := storage.Hour.BucketStart(sn.Timestamp)
		w.bits = append(w.bits, pipe.GetBit(ctx, ks.seen(w.host, hour), sn.Timestamp-hour))
		for _, res := range storage.RollupResolutions() {
			start := res.BucketStart(sn.Timestamp)
			if k := [2]int64{int64(res), start}; !seenBucket[k] {
				seenBucket[k] = true
				key := ks.rollup(res, w.host, start)
				w.buckets = append(w.buckets, rollupBucketRead{res: res, start: start, key: key, get: pipe.Get(ctx, key)})
			}
		}
	}
}

// readPrev queues the snapshots' seen bits on the host's previous owner
// (keyspace ks): a snapshot counted there before the ring changed is in the
// buckets MoveHost brings over, and must not be counted here again.
func (w *rollupWork) readPrev(ctx context.Context, pipe redis.Pipeliner, ks keyspace) {
	w.prevBits = w.prevBits[:0]
	for _, sn := range w.snaps {
		hour := storage.Hour.BucketStart(sn.Timestamp)
		w.prevBits = append(w.prevBits, pipe.GetBit(ctx, ks.seen(w.host, hour), sn.Timestamp-hour))
	}
}

// countedBefore reports whether snapshot i's seen bit is set here or on the
// previous owner.
func (w *rollupWork) countedBefore(i int) (bool, error) {
	bit, err := w.bits[i].Result()
	if err != nil {
		return false, fmt.Errorf("read the seen bit of %s@%d: %w", w.host, w.snaps[i].Timestamp, err)
	}
	if bit == 1 {
		return true, nil
	}
	if w.prevBits != nil {
		if b, err := w.prevBits[i].Result(); err == nil && b == 1 {
			return true, nil
		}
	}
	return false, nil
}

// queue does step 2 and queues step 3 on pipe; it queues nothing when no
// snapshot is new. read's pipeline must have run.
func (w *rollupWork) queue(ctx context.Context, pipe redis.Pipeliner, ks keyspace, cfg *Config, now int64, token string) error {
	w.commit = nil
	type acc struct {
		res   storage.Resolution
		start int64
		aggs  map[string]*storage.Aggregate
	}
	byBucket := map[[2]int64]*acc{}
	seenBits := map[int64][]int64{} // hour start -> new bits
	var hours []int64
	for i, sn := range w.snaps {
		counted, err := w.countedBefore(i)
		if err != nil {
			return err
		}
		if counted {
			continue
		}
		hour := storage.Hour.BucketStart(sn.Timestamp)
		if _, ok := seenBits[hour]; !ok {
			hours = append(hours, hour)
		}
		seenBits[hour] = append(seenBits[hour], sn.Timestamp-hour)
		samples := storage.LastSamples(sn.Samples)
		for _, res := range storage.RollupResolutions() {
			start := res.BucketStart(sn.Timestamp)
			k := [2]int64{int64(res), start}
			a := byBucket[k]
			if a == nil {
				a = &acc{res: res, start: start, aggs: make(map[string]*storage.Aggregate, len(sn.Samples))}
				byBucket[k] = a
			}
			for _, smp := range samples {
				g := a.aggs[smp.Series]
				if g == nil {
					g = &storage.Aggregate{}
					a.aggs[smp.Series] = g
				}
				g.Add(sn.Timestamp, smp.Value, smp.Unit)
			}
		}
	}
	if len(hours) == 0 {
		return nil
	}
	minuteTTL := int64(cfg.Rollups.Minute / time.Second)
	hourTTL := int64(cfg.Rollups.Hour / time.Second)
	retention := int64(cfg.Retention / time.Second)
	var keys []string
	args := []interface{}{0}
	var newest [2]int64 // newest new bucket per index (0: none)
	for _, b := range w.buckets {
		a := byBucket[[2]int64{int64(b.res), b.start}]
		if a == nil || len(a.aggs) == 0 {
			continue
		}
		raw, err := b.get.Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read %s: %w", b.key, err)
		}
		var version uint64
		var old []storage.SeriesAggregate
		if len(raw) > 0 {
			if len(raw) < rollupVersionSize {
				return fmt.Errorf("rollup bucket %s: %w: %d bytes", b.key, storage.ErrCorruptRollup, len(raw))
			}
			version = binary.LittleEndian.Uint64(raw)
			if old, err = storage.DecodeRollupBucket(nil, raw[rollupVersionSize:], b.start, nil); err != nil {
				return fmt.Errorf("rollup bucket %s: %w", b.key, err)
			}
		}
		val := binary.LittleEndian.AppendUint64(make([]byte, 0, len(raw)+64*len(a.aggs)), version+1)
		val = storage.AppendRollupBucket(val, b.start, storage.MergeRollupBucket(old, a.aggs))
		ttl, idx := minuteTTL, 1
		if b.res == storage.Hour {
			ttl, idx = hourTTL, 2
		}
		addTo := 0
		if len(raw) == 0 {
			addTo = idx
			newest[idx-1] = max(newest[idx-1], b.start)
		}
		tmp := ks.rollupTmp(w.host, token, len(keys)/2)
		pipe.Set(ctx, tmp, val, rollupTmpTTL)
		keys = append(keys, b.key, tmp)
		args = append(args, raw[:min(len(raw), rollupVersionSize)], b.start+ttl, addTo, b.start)
	}
	args[0] = len(keys) / 2
	args = append(args, len(hours))
	for _, h := range hours {
		keys = append(keys, ks.seen(w.host, h))
		// A bitmap lives while its hour still accepts data.
		args = append(args, h+int64(storage.Hour)+retention, len(seenBits[h]))
		for _, bit := range seenBits[h] {
			args = append(args, bit)
		}
	}
	keys = append(keys, ks.rollupIndex(storage.Minute, w.host), ks.rollupIndex(storage.Hour, w.host))
	// An index lives as long as its newest bucket; it changes only when a
	// bucket is new.
	for i, ttl := range []int64{minuteTTL, hourTTL} {
		expire := int64(0)
		if newest[i] != 0 {
			expire = newest[i] + ttl
		}
		args = append(args, expire, "("+strconv.FormatInt(now-ttl, 10))
	}
	keys = append(keys, ks.fence(w.host))
	w.commit = pipe.EvalSha(ctx, rollupCommit.Hash(), keys, args...)
	return nil
}

// readRollups runs step 1 for works on sh, and, for the hosts that may be
// moving to sh, reads their seen bits on their previous owners. A previous
// owner that cannot be read costs a warning, not the write: its bits are
// then taken as clear (a snapshot counted there and sent again during the
// move may be counted twice).
func (s *Store) readRollups(ctx context.Context, t *topology, sh *shard, works []*rollupWork) error {
	pipe := sh.client.Pipeline()
	for _, w := range works {
		w.read(ctx, pipe, sh.keys)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read rollups: %w", err)
	}
	if t.prev == nil {
		return nil
	}
	var byPrev map[*shard][]*rollupWork
	for _, w := range works {
		w.prevBits = nil
		if p := t.prevOwner(w.host, sh); p != nil {
			if byPrev == nil {
				byPrev = map[*shard][]*rollupWork{}
			}
			byPrev[p] = append(byPrev[p], w)
		}
	}
	for p, ws := range byPrev {
		pipe := p.client.Pipeline()
		for _, w := range ws {
			w.readPrev(ctx, pipe, p.keys)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			s.logger.Warn("reading seen bits on the previous owner failed; counting as new", "shard", p.name, "hosts", len(ws), "err", err)
			for _, w := range ws {
				w.prevBits = nil
			}
		}
	}
	return nil
}

// rollUp runs steps 1–3 for works whose first commit (queued with the raw
// writes) met a concurrent writer, until each is stored.
func (s *Store) rollUp(ctx context.Context, t *topology, sh *shard, works []*rollupWork) error {
	for attempt := 1; len(works) > 0; attempt++ {
		if attempt > rollupAttempts {
			return fmt.Errorf("rollups of host %s kept changing under concurrent writers (%d attempts)", works[0].host, rollupAttempts)
		}
		if err := s.readRollups(ctx, t, sh, works); err != nil {
			return err
		}
		pipe := sh.client.Pipeline()
		now := s.now().Unix()
		for _, w := range works {
			if err := w.queue(ctx, pipe, sh.keys, &s.cfg, now, s.commitToken()); err != nil {
				return err
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("store rollups: %w", err)
		}
		if w := fenced(works); w != nil {
			return fmt.Errorf("host %s: %w", w.host, ErrHostMoving)
		}
		works = conflicted(works)
	}
	return nil
}

// commitToken names one commit's temporary keys: unique across the
// brokers writing to a shard (a random prefix per Store) and over time.
func (s *Store) commitToken() string {
	return s.tokenPrefix + strconv.FormatUint(s.commits.Add(1), 36)
}

// fenced returns a work whose commit found the host moving away (nil: none).
func fenced(works []*rollupWork) *rollupWork {
	for _, w := range works {
		if w.commit != nil {
			if n, err := w.commit.Int(); err == nil && n < 0 {
				return w
			}
		}
	}
	return nil
}

// conflicted returns the works whose commit found a concurrent change.
func conflicted(works []*rollupWork) []*rollupWork {
	var out []*rollupWork
	for _, w := range works {
		if w.commit != nil {
			if n, err := w.commit.Int(); err == nil && n == 0 {
				out = append(out, w)
			}
		}
	}
	return out
}

// RangeRollup returns the host's buckets of q.Resolution overlapping
// q.From..q.To, grouped by series. With ReadFromReplicas it reads a
// replica.
func (s *Store) RangeRollup(ctx context.Context, q storage.RollupQuery) ([]storage.RollupSeries, error) {
	if err := storage.ValidateRollupQuery(&q); err != nil {
		return nil, fmt.Errorf("range rollup: %w", err)
	}
	if s.cfg.NoRollups {
		return nil, fmt.Errorf("range rollup %s: %w", q.HostID, storage.ErrNoRollups)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("range rollup %s: %w", q.HostID, err)
	}
	from := max(q.Resolution.BucketStart(q.From), s.now().Add(-s.cfg.Rollups.Of(q.Resolution)).Unix())
	if q.To < from {
		return nil, nil
	}
	t, err := s.acquire()
	if err != nil {
		return nil, fmt.Errorf("range rollup %s: %w", q.HostID, err)
	}
	defer s.release(t)
	sh := t.owner(q.HostID)
	if prev := t.prevOwner(q.HostID, sh); prev != nil {
		out, err := s.readRollupMoving(ctx, prev, sh, q, from)
		if err != nil {
			return nil, fmt.Errorf("range rollup %s %s on redis shards %s and %s: %w", q.HostID, q.Resolution, prev.name, sh.name, err)
		}
		return out, nil
	}
	var out []storage.RollupSeries
	err = s.history(ctx, sh, "rollup", func(c redis.UniversalClient) error {
		var err error
		out, err = s.readRollup(ctx, c, sh, q, from)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("range rollup %s %s on redis shard %s: %w", q.HostID, q.Resolution, sh.name, err)
	}
	return out, nil
}

// rollupStarts reads the bucket starts of a rollup index's members.
func rollupStarts(members []string) ([]int64, error) {
	starts := make([]int64, len(members))
	for i, m := range members {
		start, err := strconv.ParseInt(m, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("rollup index member %q is not a bucket start", m)
		}
		starts[i] = start
	}
	return starts, nil
}

func (s *Store) readRollupIndex(ctx context.Context, c redis.UniversalClient, sh *shard, q storage.RollupQuery, from int64) ([]int64, error) {
	members, err := c.ZRangeByScore(ctx, sh.keys.rollupIndex(q.Resolution, q.HostID), &redis.ZRangeBy{
		Min: strconv.FormatInt(from, 10), Max: strconv.FormatInt(q.To, 10),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	return rollupStarts(members)
}

// decodeBucket decodes a stored bucket (version, then the encoding) into
// buf[:0].
func decodeBucket(buf []storage.SeriesAggregate, key string, raw []byte, start int64, strs map[string]string) ([]storage.SeriesAggregate, error) {
	if len(raw) < rollupVersionSize {
		return buf, fmt.Errorf("rollup bucket %s: %w: %d bytes", key, storage.ErrCorruptRollup, len(raw))
	}
	buf, err := storage.DecodeRollupBucket(buf[:0], raw[rollupVersionSize:], start, strs)
	if err != nil {
		return buf, fmt.Errorf("rollup bucket %s: %w", key, err)
	}
	return buf, nil
}

// rollupCollector groups decoded buckets, added in start order, by series.
type rollupCollector struct {
	match    *storage.Matcher
	bySeries map[string]int
	out      []storage.RollupSeries
}

// add appends the bucket at start; left is how many buckets may follow,
// a capacity hint for a new series.
func (c *rollupCollector) add(start int64, aggs []storage.SeriesAggregate, left int) {
	for j := range aggs {
		a := &aggs[j]
		if c.match != nil && !c.match.Match(a.Series) {
			continue
		}
		k, ok := c.bySeries[a.Series]
		if !ok {
			k = len(c.out)
			c.bySeries[a.Series] = k
			c.out = append(c.out, storage.RollupSeries{Series: a.Series, Points: make([]storage.RollupPoint, 0, left)})
		}
		c.out[k].Points = append(c.out[k].Points, storage.RollupPoint{Start: start, Aggregate: a.Aggregate})
	}
}

func (c *rollupCollector) result() []storage.RollupSeries {
	slices.SortFunc(c.out, func(a, b storage.RollupSeries) int { return strings.Compare(a.Series, b.Series) })
	return c.out
}

func (s *Store) readRollup(ctx context.Context, c redis.UniversalClient, sh *shard, q storage.RollupQuery, from int64) ([]storage.RollupSeries, error) {
	starts, err := s.readRollupIndex(ctx, c, sh, q, from)
	if err != nil || len(starts) == 0 {
		return nil, err
	}
	keys := make([]string, len(starts))
	for i, start := range starts {
		keys[i] = sh.keys.rollup(q.Resolution, q.HostID, start)
	}
	col := rollupCollector{match: q.Match, bySeries: map[string]int{}}
	var buf []storage.SeriesAggregate
	strs := map[string]string{}
	cmds := make([]*redis.StringCmd, 0, min(len(keys), s.cfg.ReadChunk))
	for first := 0; first < len(keys); first += s.cfg.ReadChunk {
		chunk := keys[first:min(first+s.cfg.ReadChunk, len(keys))]
		pipe := c.Pipeline()
		cmds = cmds[:0]
		for _, k := range chunk {
			cmds = append(cmds, pipe.Get(ctx, k))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read %d rollup buckets: %w", len(chunk), err)
		}
		for i, cmd := range cmds {
			raw, err := cmd.Bytes() // a view of the reply, not a copy
			if errors.Is(err, redis.Nil) {
				continue // expired before its index entry
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", chunk[i], err)
			}
			start := starts[first+i]
			if buf, err = decodeBucket(buf, chunk[i], raw, start, strs); err != nil {
				return nil, err
			}
			col.add(start, buf, len(keys)-first-i)
		}
	}
	return col.result(), nil
}
