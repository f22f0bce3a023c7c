// Package redisstore is the Redis storage backend: storage.Store over one or
// more Redis shards with the seed's exact key layout (DESIGN.md §6), written
// with go-redis v9 pipelines.
//
// # Key layout
//
// {prefix} is Config.KeyPrefix, "monitor:" by default. {hostId} is a host
// id checked by storage.ValidateHostID (no ':' and no braces), {ts} a
// snapshot's Unix timestamp in seconds, in decimal.
//
//	{prefix}metrics:{hostId}:{ts}   HASH, TTL Retention (7 days)
//	    host_id          the host id
//	    timestamp        {ts}
//	    metric:{series}  JSON {"value":75.5,"unit":"%"}; series is the
//	                     canonical key name{k=v,...}; the value is formatted
//	                     as encoding/json formats a float64
//	    tag:{name}       the tag's value
//	{prefix}index:metrics:{hostId}  ZSET, TTL Retention
//	    member = the full hash key above, score = {ts}
//
// Host state (not in the seed; the broker's host registry):
//
//	{prefix}host:{hostId}   HASH, TTL HostTTL, refreshed by every
//	                        registration, heartbeat and data write
//	    id, hostname, os, platform, kernel, arch, agent_version
//	    cpu_count, memory_bytes, boot_time     decimal integers
//	    labels           JSON object of the host's labels ({} when none)
//	    first_seen       Unix seconds of the first registration (HSETNX)
//	    last_registered  Unix seconds of the latest registration
//	    last_heartbeat   Unix seconds of the latest heartbeat (absent: none)
//	{prefix}hosts           ZSET, TTL the longest of HostTTL, Retention and
//	                        the rollup retentions, refreshed on activity
//	    member = host id, score = Unix seconds of its latest activity
//	    (registration, heartbeat, or newest snapshot timestamp), written
//	    with ZADD GT so it never moves back. Hosts lists members active
//	    within Retention; members older than that TTL (no key of their host
//	    can be left) are removed by Hosts and HostsOn. It is the shard's
//	    index of hosts: HostsOn reads it to find the hosts to move.
//
// Rollups (the seed's window aggregates; {res} is 1m or 1h, {start} a
// bucket start in Unix seconds, a multiple of 60 or 3600):
//
//	{prefix}rollup:{res}:{hostId}:{start}   STRING, EXPIREAT start + the
//	                        resolution's retention (30 d / 1 y)
//	    8-byte little-endian version (bumped by every write), then
//	    storage.AppendRollupBucket's encoding: per series, sorted, the
//	    series, unit, min, max, sum, last, count, offset of last's timestamp
//	{prefix}index:rollup:{res}:{hostId}    ZSET, expires with its newest
//	                        bucket; members older than the retention are
//	                        trimmed when a bucket is added
//	    member = score = {start}
//	{prefix}rollup:seen:{hostId}:{start}   STRING, a bitmap of the hour
//	                        starting at {start}: bit ts-{start} is set once
//	                        the snapshot at ts is counted. EXPIREAT start +
//	                        1 h + Retention: past that no timestamp of the
//	                        hour is accepted any more.
//	{prefix}rollup:tmp:{hostId}:{token}:{n} STRING, TTL 5 minutes: a
//	                        bucket on its way in, renamed over the bucket by
//	                        the same call (rollup.go)
//
// Moves (MoveHost, migrate.go; only while a host moves):
//
//	{prefix}moving:{hostId} STRING on the source shard, PX 30 s renewed by
//	                        the move: the fence. While it is up, the
//	                        source's rollup commit refuses the host
//	                        (ErrHostMoving), so what the move merges cannot
//	                        change under it.
//	{prefix}moved:{hostId}  HASH on the target shard, TTL 7 days, deleted
//	                        by the move when done: the ledger. Field
//	                        {res}:{start} = a digest of the source bucket
//	                        already merged into the target's.
//
// In a shard that is a Redis Cluster (ShardConfig.Cluster) every host id in
// a key is wrapped in braces, a Redis Cluster hash tag: the cluster hashes
// only the part between the braces to pick a key's slot, so all of one
// host's keys share a slot, a node, and one script (the rollup commit) can
// touch them. Host web-1's snapshot at 1755100754 is
// monitor:metrics:{web-1}:1755100754 there, monitor:metrics:web-1:1755100754
// elsewhere; its index is monitor:index:metrics:{web-1} (members are the
// tagged hash keys), its record monitor:host:{web-1}, and the rollup keys
// alike. The braces are the only difference from the seed's layout (host
// ids can never contain braces: storage.ValidateHostID). {prefix}hosts is
// one key in a slot of its own.
//
// # The compact layout
//
// With Config.Layout = LayoutCompact the raw snapshots are kept instead as
// compressed chunks per host and hour ({prefix}chunk:{hostId}:{w}) and a
// head of records for the open hour ({prefix}head:{hostId}:{w}), about
// 2 bytes per sample instead of 78; compact.go documents the keys, the
// sealing, and how reads in either layout see both (convert.go moves a
// running cluster from one to the other).
//
// # Writes and reads
//
// WriteSnapshots sends one MULTI/EXEC pipeline per shard (shards written
// concurrently; a cluster shard gets a plain pipeline, see writePipeline).
// Per snapshot: DEL the hash (a rewrite of the same host and timestamp
// replaces it exactly), HSET every field, EXPIRE, ZADD to the index. Per
// host: EXPIRE the index, ZREMRANGEBYSCORE index members older than
// Retention, ZADD GT the hosts set with the newest timestamp, EXPIRE the
// host hash, and the host's rollup commit. The rollups are merged in the
// broker, not in Redis (rollup.go): a read pipeline before the write gets
// the seen bits and the buckets the call touches; the commit, one EVALSHA
// per host in the write pipeline, stores the merged buckets only if
// nothing changed in between, and counts a snapshot only if its seen bit
// was clear, so a resent snapshot is never counted twice. Range is
// ZRANGEBYSCORE on the index, then HGETALL in pipelines of ReadChunk keys;
// index members whose hash has expired are skipped. RangeRollup reads its
// index, then GETs the buckets in pipelines of ReadChunk keys. Latest is
// ZREVRANGEBYSCORE ... LIMIT 0 1, then HGETALL. Nothing on the data path
// uses KEYS or SCAN.
//
// Reads never return snapshots older than Retention (by timestamp), nor
// rollup buckets older than their resolution's retention (by bucket
// start), even while their keys have not expired yet; samples come back
// sorted by series.
//
// # Shards and replicas
//
// With several shards a host's keys all live on the shard that the
// consistent-hash ring (pkg/hash, VirtualNodes per shard) picks for the host
// id; ring members are the shards' names (ShardConfig.Name, by default the
// address, with "/db" appended when the database is not 0). Each shard has
// its own hosts ZSET; Hosts merges them.
//
// # Ring changes
//
// New starts at Topology{Version: 0, Shards: Config.Shards}. SetTopology
// swaps in another ring at run time (the broker applies the control
// plane's ring changes): an atomic pointer holds the current topology
// (version, shards, ring, and the previous ring while hosts move), every
// call pins the one it started with, and a shard that is in neither ring
// any more is closed when the last call using it ends. Writes
// (WriteSnapshots, RegisterHost, Heartbeat) go to the owner on the current
// ring from the next call on.
//
// While Topology.Previous is set, a host whose owner on the previous ring
// (its old owner) differs from its current owner may be anywhere between
// the two; reads of it consult both, on the primaries (replicas of two
// shards may lag each other), the old owner first, so a key moved in
// between is found on the new one:
//
//   - Range: the union, by timestamp, the new owner's copy when both hold
//     one; Latest: the newer of the two.
//   - RangeRollup: buckets of the same start are merged (min, max, sum,
//     count; last by the later timestamp) unless the new owner's ledger
//     shows that its bucket already counts the old owner's (a move merged
//     it and has not deleted it yet). Each new-owner bucket is read in one
//     transaction with its ledger entry.
//   - Heartbeat: the new owner, then the old one when the new one does not
//     know the host; known if either does.
//   - Hosts: the previous ring's shards first, then the current ring's.
//   - RegisterHost writes the new owner and returns the earlier first_seen
//     and the newer last data of both.
//
// A write that counts a snapshot in the new owner's rollups also reads the
// snapshot's seen bit on the old owner: a snapshot counted there before
// the change and sent again after it is not counted twice.
//
// MoveHost(host, from, to) — run by the broker's migrator on the Raft
// leader, for each host that HostsOn(from) lists and whose owner changed —
// moves one host's keys, live: it raises the fence on from (so from's
// buckets and seen bits hold still), then per kind of key, in chunks of
// ReadChunk keys, copies to to and deletes on from what it copied, in a
// transaction with the index members:
//
//   - seen bitmaps: OR-ed into to's (a Lua script, BITOP OR), deleted on
//     from at the end of the round, after the buckets they vouch for;
//   - rollup buckets: copied when to has none, else merged with to's
//     (storage.MergeRollupBucket) and stored only if to's version is still
//     the one read, the rollup commit's check (a concurrent commit is never
//     overwritten: the merge is redone), with the ledger entry in the same
//     script: a move resumed after a crash does not merge a bucket twice;
//   - snapshot hashes: DUMP/RESTORE with the remaining TTL; a hash to
//     already has is to's (the same snapshot written again); index
//     members rewritten to to's key names (braces on a cluster shard);
//   - the host record: to's fields win, except first_seen (the earlier)
//     and last_heartbeat (the later); deleted on from only if unchanged;
//   - the hosts set member: ZADD GT on to; removed on from unless it moved
//     on meanwhile.
//
// Every key keeps its expiry (the later one where to has the key too). It
// then looks at from again: keys a broker still on the old ring wrote
// meanwhile are moved by another round (at most moveRounds, then an error
// naming the host). MoveHost is idempotent and resumable; two calls for
// one host may not overlap (the fence refuses the second). RESTORE is in
// Redis' @dangerous ACL category: a restricted user needs +restore.
//
// Writes always go to primaries, and so do Latest and Hosts (they must be
// fresh). With ReadFromReplicas, Range and RangeRollup go to the shard's
// replicas in turn (a Redis Cluster's replicas for a cluster shard); a
// replica may lag the primary by the replication delay. A failed replica
// read is retried on the primary.
//
// Connections speak RESP2 so that HGETALL replies arrive as flat arrays,
// which decode into a slice instead of a map.
//
// Concurrency: a Store is safe for concurrent use, SetTopology included
// (calls in flight finish on the topology they started with). MoveHost
// calls for different hosts may run concurrently.
package redisstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/monitorhq/monitor/pkg/hash"
	"github.com/monitorhq/monitor/pkg/storage"
)

// Config configures a Store. Zero fields take the defaults noted.
type Config struct {
	Shards    []ShardConfig
	KeyPrefix string // default "monitor:"
	// Retention is the TTL of metric hashes and indexes, and the age past
	// which reads ignore data; default 7 days.
	Retention time.Duration
	// HostTTL is the TTL of host state keys (the broker's DefaultTTL);
	// default Retention.
	HostTTL time.Duration
	// Rollups is how long each rollup resolution is kept; default 30 days
	// of minutes and a year of hours.
	Rollups storage.RollupRetention
	// NoRollups turns rollups off: nothing is aggregated at write time and
	// RangeRollup returns storage.ErrNoRollups.
	NoRollups bool
	// ReadFromReplicas sends history reads (Range, RangeRollup) to the
	// shards' replicas.
	ReadFromReplicas bool
	// VirtualNodes per shard on the hash ring; default 50.
	VirtualNodes int
	// ReadChunk is how many HGETALLs one read pipeline carries; default 256.
	ReadChunk int
	// Now is the clock that retention cut-offs are computed from; default
	// time.Now. Tests move it; key TTLs in Redis follow Redis' own clock.
	Now func() time.Time
	// Layout is how raw snapshots are kept: LayoutSeed (default, the
	// seed's HASH per snapshot) or LayoutCompact (compressed chunks per
	// host and hour, compact.go). Reads see both in either layout.
	Layout Layout
}

// Defaults.
const (
	DefaultKeyPrefix = "monitor:"
	DefaultReadChunk = 256
)

func (c Config) withDefaults() Config {
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.Retention == 0 {
		c.Retention = storage.DefaultRetention
	}
	if c.HostTTL == 0 {
		c.HostTTL = c.Retention
	}
	c.Rollups = c.Rollups.WithDefaults()
	if c.VirtualNodes == 0 {
		c.VirtualNodes = hash.DefaultVirtualNodes
	}
	if c.ReadChunk == 0 {
		c.ReadChunk = DefaultReadChunk
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Layout == "" {
		c.Layout = LayoutSeed
	}
	return c
}

func (c Config) validate() error {
	if len(c.Shards) == 0 {
		return errors.New("no shards configured")
	}
	if err := validateRing(c.Shards); err != nil {
		return err
	}
	if c.Retention < time.Second {
		return fmt.Errorf("retention %v is shorter than 1s", c.Retention)
	}
	if c.HostTTL < time.Second {
		return fmt.Errorf("host TTL %v is shorter than 1s", c.HostTTL)
	}
	if err := c.Rollups.Validate(); err != nil {
		return err
	}
	if c.VirtualNodes < 1 {
		return fmt.Errorf("virtual nodes %d is not positive", c.VirtualNodes)
	}
	if c.ReadChunk < 1 {
		return fmt.Errorf("read chunk %d is not positive", c.ReadChunk)
	}
	if _, err := ParseLayout(string(c.Layout)); err != nil {
		return err
	}
	return nil
}

// Store is the Redis backend. Create it with New.
type Store struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
	// hostsTTL is how long a hosts set outlives its latest activity, and
	// how old a member may get before it is dropped: as long as any key
	// of the member's host may live, so that HostsOn finds every host
	// that still has data.
	hostsTTL time.Duration

	// topo is the current topology (nil once closed); mu serializes
	// SetTopology and Close.
	topo atomic.Pointer[topology]
	mu   sync.Mutex

	// tokenPrefix and commits name rollup commits' temporary keys.
	tokenPrefix string
	commits     atomic.Uint64

	// schemas caches the compact layout's record schemas for Latest
	// (compact.go); a schema never changes once written.
	schemas schemaCache

	closeOnce sync.Once
	closeErr  error
}

var _ storage.Store = (*Store)(nil)

// New connects to every shard, pings it and loads the rollup script; an
// unreachable shard is an error that names it (never its password). The
// store starts at Topology{Version: 0, Shards: cfg.Shards}.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("redis storage: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var token [6]byte
	if _, err := rand.Read(token[:]); err != nil {
		return nil, fmt.Errorf("redis storage: %w", err)
	}
	keep := max(cfg.HostTTL, cfg.Retention)
	if !cfg.NoRollups {
		keep = max(keep, cfg.Rollups.Minute, cfg.Rollups.Hour)
	}
	s := &Store{
		cfg:         cfg,
		logger:      logger,
		hostsTTL:    keep,
		now:         cfg.Now,
		tokenPrefix: hex.EncodeToString(token[:]) + "-",
	}
	t, err := s.buildTopology(ctx, Topology{Shards: cfg.Shards}, nil)
	if err != nil {
		return nil, fmt.Errorf("redis storage: %w", err)
	}
	s.topo.Store(t)
	logger.Info("redis storage connected", "shards", cfg.Shards, "key_prefix", cfg.KeyPrefix, "retention", cfg.Retention,
		"rollups", !cfg.NoRollups, "read_from_replicas", cfg.ReadFromReplicas, "layout", cfg.Layout)
	return s, nil
}

// Close closes every shard's connections; calls still running finish
// first on the shards they use. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		t := s.topo.Swap(nil)
		if t != nil && t.refs.Add(-1) == 0 {
			s.closeErr = t.drop()
		}
	})
	return s.closeErr
}

// Ping pings every shard's primary, of both rings during a move (a
// replica that is down only moves its reads to the primary).
func (s *Store) Ping(ctx context.Context) error {
	t, err := s.acquire()
	if err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	defer s.release(t)
	for _, sh := range t.all() {
		if err := sh.client.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("ping redis shard %s: %w", sh.name, err)
		}
	}
	return nil
}

// cutoff is the oldest timestamp reads still return.
func (s *Store) cutoff() int64 {
	return s.now().Add(-s.cfg.Retention).Unix()
}

// hostsCutoff is the oldest activity a hosts set member may have: older
// members have no key left.
func (s *Store) hostsCutoff() int64 {
	return s.now().Add(-s.hostsTTL).Unix()
}

// keyspace builds one shard's key names; tag wraps host ids in braces (a
// Redis Cluster hash tag).
type keyspace struct {
	prefix string
	tag    bool
}

func (k keyspace) appendHost(b []byte, hostID string) []byte {
	if k.tag {
		b = append(b, '{')
		b = append(b, hostID...)
		return append(b, '}')
	}
	return append(b, hostID...)
}

func (k keyspace) metrics(b []byte, hostID string, ts int64) []byte {
	b = append(b, k.prefix...)
	b = append(b, "metrics:"...)
	b = k.appendHost(b, hostID)
	b = append(b, ':')
	return strconv.AppendInt(b, ts, 10)
}

func (k keyspace) index(hostID string) string {
	return string(k.appendHost(append([]byte(k.prefix), "index:metrics:"...), hostID))
}

func (k keyspace) host(hostID string) string {
	return string(k.appendHost(append([]byte(k.prefix), "host:"...), hostID))
}

func (k keyspace) hosts() string { return k.prefix + "hosts" }

// WriteSnapshots validates every snapshot first (nothing is written if one
// is refused), then writes each shard's share in one MULTI/EXEC pipeline.
func (s *Store) WriteSnapshots(ctx context.Context, snaps []storage.Snapshot) error {
	if len(snaps) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write snapshots: %w", err)
	}
	for i := range snaps {
		if err := storage.ValidateSnapshot(&snaps[i]); err != nil {
			return fmt.Errorf("write snapshots: snapshot %d: %w", i, err)
		}
	}
	t, err := s.acquire()
	if err != nil {
		return fmt.Errorf("write snapshots: %w", err)
	}
	defer s.release(t)
	if len(t.cur) == 1 {
		return s.writeShard(ctx, t, t.cur[0], snaps, nil)
	}
	groups := make([][]int, len(t.cur))
	for i := range snaps {
		k := t.ring.LookupIndex(snaps[i].HostID)
		groups[k] = append(groups[k], i)
	}
	var g errgroup.Group
	for k, idx := range groups {
		if len(idx) == 0 {
			continue
		}
		g.Go(func() error { return s.writeShard(ctx, t, t.cur[k], snaps, idx) })
	}
	return g.Wait()
}

// writeShard writes snaps[i] for i in idx (all of snaps when idx is nil).
// When the shard has lost the rollup script (a restart empties Redis'
// script cache) it loads it and writes again: the raw writes are
// idempotent and the script did not run.
func (s *Store) writeShard(ctx context.Context, t *topology, sh *shard, snaps []storage.Snapshot, idx []int) error {
	err := s.writeShardOnce(ctx, t, sh, snaps, idx)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if lerr := rollupCommit.Load(ctx, sh.client).Err(); lerr != nil {
			return fmt.Errorf("reload the rollup script on redis shard %s: %w", sh.name, lerr)
		}
		err = s.writeShardOnce(ctx, t, sh, snaps, idx)
	}
	return err
}

func (s *Store) writeShardOnce(ctx context.Context, t *topology, sh *shard, snaps []storage.Snapshot, idx []int) error {
	n := len(idx)
	if idx == nil {
		n = len(snaps)
	}
	at := func(i int) *storage.Snapshot {
		if idx == nil {
			return &snaps[i]
		}
		return &snaps[idx[i]]
	}
	// One arena for every key, field and value of the call: the pipeline
	// holds []byte arguments until Exec, and slices of an arena that later
	// grows keep pointing at the old, unchanged backing array.
	size := 0
	for i := 0; i < n; i++ {
		sn := at(i)
		size += len(s.cfg.KeyPrefix) + len(sn.HostID) + 40
		for j := range sn.Samples {
			size += len(sn.Samples[j].Series) + len(sn.Samples[j].Unit) + 48
		}
	}
	arena := make([]byte, 0, size)
	take := func(start int) []byte { return arena[start:len(arena):len(arena)] }

	type hostWrite struct {
		newest int64
		snaps  []*storage.Snapshot // for the rollups, in call order
	}
	hosts := make(map[string]*hostWrite, 1)
	var order []string
	for i := 0; i < n; i++ {
		sn := at(i)
		h, ok := hosts[sn.HostID]
		if !ok {
			h = &hostWrite{newest: sn.Timestamp}
			hosts[sn.HostID] = h
			order = append(order, sn.HostID)
		}
		h.newest = max(h.newest, sn.Timestamp)
		h.snaps = append(h.snaps, sn)
	}
	cutoff := s.cutoff()

	// The rollups' reads (see rollup.go) go first, in a pipeline of their
	// own; their commits join the raw writes.
	var works []*rollupWork
	if !s.cfg.NoRollups {
		for _, id := range order {
			if w := newRollupWork(id, hosts[id].snaps, cutoff); w != nil {
				works = append(works, w)
			}
		}
	}
	if len(works) > 0 {
		if err := s.readRollups(ctx, t, sh, works); err != nil {
			return fmt.Errorf("write %d snapshots to redis shard %s: %w", n, sh.name, err)
		}
	}

	retention := s.cfg.Retention
	pipe := sh.writePipeline()
	compact := s.cfg.Layout == LayoutCompact
	var seals []*redis.StringSliceCmd
	if compact {
		now := s.now().Unix()
		seals = make([]*redis.StringSliceCmd, len(order))
		for k, id := range order {
			seals[k] = s.queueCompact(ctx, pipe, sh, id, hosts[id].snaps, cutoff, now)
		}
		pipe.Expire(ctx, sh.keys.lastData(), s.hostsTTL)
	}
	for i := 0; i < n && !compact; i++ {
		sn := at(i)
		start := len(arena)
		arena = sh.keys.metrics(arena, sn.HostID, sn.Timestamp)
		key := take(start)
		start = len(arena)
		arena = strconv.AppendInt(arena, sn.Timestamp, 10)
		ts := take(start)

		args := make([]interface{}, 0, 6+2*len(sn.Tags)+2*len(sn.Samples))
		args = append(args, "hset", key, "host_id", sn.HostID, "timestamp", ts)
		for k, v := range sn.Tags {
			args = append(args, "tag:"+k, v)
		}
		for j := range sn.Samples {
			smp := &sn.Samples[j]
			start = len(arena)
			arena = append(arena, "metric:"...)
			arena = append(arena, smp.Series...)
			field := take(start)
			start = len(arena)
			arena = appendValue(arena, smp.Value, smp.Unit)
			args = append(args, field, take(start))
		}
		pipe.Del(ctx, string(key))
		_ = pipe.Process(ctx, redis.NewIntCmd(ctx, args...))
		pipe.Expire(ctx, string(key), retention)
		_ = pipe.Process(ctx, redis.NewIntCmd(ctx, "zadd", sh.keys.index(sn.HostID), ts, key))
	}
	cut := "(" + strconv.FormatInt(cutoff, 10)
	for _, id := range order {
		h := hosts[id]
		if !compact {
			idxKey := sh.keys.index(id)
			pipe.Expire(ctx, idxKey, retention)
			pipe.ZRemRangeByScore(ctx, idxKey, "-inf", cut)
		}
		pipe.ZAddArgs(ctx, sh.keys.hosts(), redis.ZAddArgs{GT: true, Members: []redis.Z{{Score: float64(h.newest), Member: id}}})
		pipe.Expire(ctx, sh.keys.host(id), s.cfg.HostTTL)
	}
	pipe.Expire(ctx, sh.keys.hosts(), s.hostsTTL)
	now := s.now().Unix()
	for _, w := range works {
		if err := w.queue(ctx, pipe, sh.keys, &s.cfg, now, s.commitToken()); err != nil {
			return fmt.Errorf("write %d snapshots to redis shard %s: %w", n, sh.name, err)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("write %d snapshots to redis shard %s: %w", n, sh.name, err)
	}
	if w := fenced(works); w != nil {
		return fmt.Errorf("write %d snapshots to redis shard %s: host %s: %w", n, sh.name, w.host, ErrHostMoving)
	}
	if retry := conflicted(works); len(retry) > 0 {
		if err := s.rollUp(ctx, t, sh, retry); err != nil {
			return fmt.Errorf("write %d snapshots to redis shard %s: %w", n, sh.name, err)
		}
	}
	for k, cmd := range seals {
		s.sealAfterWrite(ctx, sh, order[k], cmd, hosts[order[k]].snaps)
	}
	return nil
}

// Range returns the host's snapshots with From <= timestamp <= To, never
// older than the retention. With ReadFromReplicas it reads a replica.
func (s *Store) Range(ctx context.Context, q storage.RangeQuery) ([]storage.Snapshot, error) {
	if err := storage.ValidateHostID(q.HostID); err != nil {
		return nil, fmt.Errorf("range: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("range %s: %w", q.HostID, err)
	}
	from := max(q.From, s.cutoff())
	if q.To < from {
		return nil, nil
	}
	t, err := s.acquire()
	if err != nil {
		return nil, fmt.Errorf("range %s: %w", q.HostID, err)
	}
	defer s.release(t)
	sh := t.owner(q.HostID)
	if prev := t.prevOwner(q.HostID, sh); prev != nil {
		out, err := s.rangeMoving(ctx, prev, sh, q, from)
		if err != nil {
			return nil, fmt.Errorf("range %s on redis shards %s and %s: %w", q.HostID, prev.name, sh.name, err)
		}
		return out, nil
	}
	var out []storage.Snapshot
	err = s.history(ctx, sh, "range", func(c redis.UniversalClient) error {
		var err error
		out, err = s.readRange(ctx, c, sh, q, from)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("range %s on redis shard %s: %w", q.HostID, sh.name, err)
	}
	return out, nil
}

// readRange reads the host's snapshots on one shard, whatever the layout
// they are in (compact.go).
func (s *Store) readRange(ctx context.Context, c redis.UniversalClient, sh *shard, q storage.RangeQuery, from int64) ([]storage.Snapshot, error) {
	return s.readRangeAll(ctx, c, sh, q, from)
}

// hgetallChunks reads every key with HGETALL, in pipelines of ReadChunk
// keys, and hands each reply to fn in key order.
func (s *Store) hgetallChunks(ctx context.Context, c redis.UniversalClient, keys []string, fn func(key string, kvs []redis.KeyValue) error) error {
	cmds := make([]*redis.KeyValueSliceCmd, 0, min(len(keys), s.cfg.ReadChunk))
	for start := 0; start < len(keys); start += s.cfg.ReadChunk {
		chunk := keys[start:min(start+s.cfg.ReadChunk, len(keys))]
		pipe := c.Pipeline()
		cmds = cmds[:0]
		for _, k := range chunk {
			cmd := redis.NewKeyValueSliceCmd(ctx, "hgetall", k)
			_ = pipe.Process(ctx, cmd)
			cmds = append(cmds, cmd)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("read %d hashes: %w", len(chunk), err)
		}
		for i, cmd := range cmds {
			if err := fn(chunk[i], cmd.Val()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Latest returns the host's newest snapshot within the retention.
func (s *Store) Latest(ctx context.Context, hostID string) (storage.Snapshot, bool, error) {
	if err := storage.ValidateHostID(hostID); err != nil {
		return storage.Snapshot{}, false, fmt.Errorf("latest: %w", err)
	}
	t, err := s.acquire()
	if err != nil {
		return storage.Snapshot{}, false, fmt.Errorf("latest %s: %w", hostID, err)
	}
	defer s.release(t)
	sh := t.owner(hostID)
	prev := t.prevOwner(hostID, sh)
	if prev == nil {
		return s.latestOn(ctx, sh, hostID)
	}
	// The old owner first: a snapshot moved meanwhile is on the new one.
	old, oldOK, err := s.latestOn(ctx, prev, hostID)
	if err != nil {
		return storage.Snapshot{}, false, err
	}
	snap, ok, err := s.latestOn(ctx, sh, hostID)
	if err != nil {
		return storage.Snapshot{}, false, err
	}
	if oldOK && (!ok || old.Timestamp > snap.Timestamp) {
		return old, true, nil
	}
	return snap, ok, nil
}

func (s *Store) latestOn(ctx context.Context, sh *shard, hostID string) (storage.Snapshot, bool, error) {
	if s.cfg.Layout == LayoutCompact {
		snap, ok, known, err := s.latestCompact(ctx, sh, hostID)
		if known || err != nil {
			return snap, ok, err
		}
	}
	keys, err := sh.client.ZRevRangeByScore(ctx, sh.keys.index(hostID), &redis.ZRangeBy{
		Min: strconv.FormatInt(s.cutoff(), 10), Max: "+inf", Count: 1,
	}).Result()
	if err != nil {
		return storage.Snapshot{}, false, fmt.Errorf("latest %s on redis shard %s: read index: %w", hostID, sh.name, err)
	}
	if len(keys) == 0 {
		if s.cfg.Layout == LayoutSeed {
			// Compact keys not converted yet (convert.go).
			snap, ok, _, err := s.latestCompact(ctx, sh, hostID)
			return snap, ok, err
		}
		return storage.Snapshot{}, false, nil
	}
	cmd := redis.NewKeyValueSliceCmd(ctx, "hgetall", keys[0])
	if err := sh.client.Process(ctx, cmd); err != nil {
		return storage.Snapshot{}, false, fmt.Errorf("latest %s on redis shard %s: read %s: %w", hostID, sh.name, keys[0], err)
	}
	if len(cmd.Val()) == 0 {
		return storage.Snapshot{}, false, nil
	}
	arena := sampleArena{}
	snap, err := decodeSnapshot(keys[0], hostID, cmd.Val(), nil, &arena)
	if err != nil {
		return storage.Snapshot{}, false, fmt.Errorf("latest %s on redis shard %s: %w", hostID, sh.name, err)
	}
	return snap, true, nil
}

// sampleArena hands out sample slices carved from shared blocks, so a
// range of 720 snapshots costs a few allocations for its samples instead of
// 720.
type sampleArena struct {
	buf   []storage.Sample
	block int
}

// reserve makes room for n more samples.
func (a *sampleArena) reserve(n int) {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]storage.Sample, 0, max(n, a.block))
	}
}

func bySeries(a, b storage.Sample) int { return strings.Compare(a.Series, b.Series) }

// decodeSnapshot turns one HGETALL reply into a snapshot, keeping only the
// samples m selects.
func decodeSnapshot(key, hostID string, kvs []redis.KeyValue, m *storage.Matcher, arena *sampleArena) (storage.Snapshot, error) {
	snap := storage.Snapshot{HostID: hostID}
	arena.reserve(len(kvs))
	start := len(arena.buf)
	haveTS := false
	for _, kv := range kvs {
		f := kv.Key
		switch {
		case strings.HasPrefix(f, "metric:"):
			series := f[len("metric:"):]
			if m != nil && !m.Match(series) {
				continue
			}
			v, unit, err := decodeValue(kv.Value)
			if err != nil {
				return storage.Snapshot{}, fmt.Errorf("decode %s field %q: %w", key, f, err)
			}
			arena.buf = append(arena.buf, storage.Sample{Series: series, Value: v, Unit: unit})
		case strings.HasPrefix(f, "tag:"):
			if snap.Tags == nil {
				snap.Tags = make(map[string]string, 4)
			}
			snap.Tags[f[len("tag:"):]] = kv.Value
		case f == "timestamp":
			ts, err := strconv.ParseInt(kv.Value, 10, 64)
			if err != nil {
				return storage.Snapshot{}, fmt.Errorf("decode %s: timestamp %q is not an integer", key, kv.Value)
			}
			snap.Timestamp, haveTS = ts, true
		}
	}
	if !haveTS {
		// Not written by us; the key ends in the timestamp.
		ts, err := strconv.ParseInt(key[strings.LastIndexByte(key, ':')+1:], 10, 64)
		if err != nil {
			return storage.Snapshot{}, fmt.Errorf("decode %s: no timestamp field and none in the key", key)
		}
		snap.Timestamp = ts
	}
	snap.Samples = arena.buf[start:len(arena.buf):len(arena.buf)]
	if !slices.IsSortedFunc(snap.Samples, bySeries) {
		slices.SortFunc(snap.Samples, bySeries)
	}
	return snap, nil
}

// Host hash fields.
const (
	fID             = "id"
	fHostname       = "hostname"
	fOS             = "os"
	fPlatform       = "platform"
	fKernel         = "kernel"
	fArch           = "arch"
	fCPUCount       = "cpu_count"
	fMemoryBytes    = "memory_bytes"
	fLabels         = "labels"
	fAgentVersion   = "agent_version"
	fBootTime       = "boot_time"
	fFirstSeen      = "first_seen"
	fLastRegistered = "last_registered"
	fLastHeartbeat  = "last_heartbeat"
)

// RegisterHost stores h's info, keeping first_seen, and returns the stored
// record with LastData.
func (s *Store) RegisterHost(ctx context.Context, h storage.Host, at time.Time) (storage.Host, error) {
	if err := storage.ValidateHostID(h.ID); err != nil {
		return storage.Host{}, fmt.Errorf("register host: %w", err)
	}
	labels := []byte("{}")
	if len(h.Labels) > 0 {
		var err error
		if labels, err = json.Marshal(h.Labels); err != nil {
			return storage.Host{}, fmt.Errorf("register host %s: encode labels: %w", h.ID, err)
		}
	}
	ts := at.Unix()
	t, err := s.acquire()
	if err != nil {
		return storage.Host{}, fmt.Errorf("register host %s: %w", h.ID, err)
	}
	defer s.release(t)
	sh := t.owner(h.ID)
	key := sh.keys.host(h.ID)
	pipe := sh.writePipeline()
	pipe.HSetNX(ctx, key, fFirstSeen, ts)
	pipe.HSet(ctx, key,
		fID, h.ID, fHostname, h.Hostname, fOS, h.OS, fPlatform, h.Platform, fKernel, h.Kernel,
		fArch, h.Arch, fCPUCount, h.CPUCount, fMemoryBytes, h.MemoryBytes, fLabels, labels,
		fAgentVersion, h.AgentVersion, fBootTime, h.BootTime, fLastRegistered, ts)
	pipe.Expire(ctx, key, s.cfg.HostTTL)
	pipe.ZAddArgs(ctx, sh.keys.hosts(), redis.ZAddArgs{GT: true, Members: []redis.Z{{Score: float64(ts), Member: h.ID}}})
	pipe.Expire(ctx, sh.keys.hosts(), s.hostsTTL)
	stored := pipe.HGetAll(ctx, key)
	last := s.lastData(ctx, pipe, sh, h.ID)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return storage.Host{}, fmt.Errorf("register host %s on redis shard %s: %w", h.ID, sh.name, err)
	}
	out, err := decodeHost(h.ID, stored.Val())
	if err != nil {
		return storage.Host{}, fmt.Errorf("register host %s on redis shard %s: %w", h.ID, sh.name, err)
	}
	out.LastData = last()
	if prev := t.prevOwner(h.ID, sh); prev != nil {
		// Moving here: the old owner may still hold the first
		// registration and the newest data (MoveHost merges them alike).
		pipe := prev.client.Pipeline()
		first := pipe.HGet(ctx, prev.keys.host(h.ID), fFirstSeen)
		last := s.lastData(ctx, pipe, prev, h.ID)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return storage.Host{}, fmt.Errorf("register host %s: read its record on redis shard %s: %w", h.ID, prev.name, err)
		}
		if v, err := first.Int64(); err == nil && v > 0 && v < out.FirstSeen {
			out.FirstSeen = v
		}
		out.LastData = max(out.LastData, last())
	}
	return out, nil
}

// lastData queues the reads of the host's newest data timestamp within the
// retention: the seed's index and its lastdata
// score (compact.go) too. The returned function reads the answer after Exec (0: none).
func (s *Store) lastData(ctx context.Context, pipe redis.Pipeliner, sh *shard, hostID string) func() int64 {
	cutoff := s.cutoff()
	seed := pipe.ZRevRangeByScoreWithScores(ctx, sh.keys.index(hostID), &redis.ZRangeBy{
		Min: strconv.FormatInt(cutoff, 10), Max: "+inf", Count: 1,
	})
	compact := pipe.ZScore(ctx, sh.keys.lastData(), hostID)
	return func() int64 {
		var last int64
		if z := seed.Val(); len(z) > 0 {
			last = int64(z[0].Score)
		}
		if v, err := compact.Result(); err == nil && int64(v) >= cutoff {
			last = max(last, int64(v))
		}
		return last
	}
}

// heartbeatScript records a heartbeat only for a registered host, so an
// unknown host never gets a half-made record. It touches the host's own key
// only (one slot in a Redis Cluster); the hosts set is updated after it.
var heartbeatScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_heartbeat', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
`)

// Heartbeat records a heartbeat of a registered host; known is false when
// the host has no registration (never, or expired after HostTTL). While
// the host moves, a heartbeat the new owner does not know goes to the old
// owner, where its record still is.
func (s *Store) Heartbeat(ctx context.Context, hostID string, at time.Time) (bool, error) {
	if err := storage.ValidateHostID(hostID); err != nil {
		return false, fmt.Errorf("heartbeat: %w", err)
	}
	t, err := s.acquire()
	if err != nil {
		return false, fmt.Errorf("heartbeat %s: %w", hostID, err)
	}
	defer s.release(t)
	sh := t.owner(hostID)
	known, err := s.heartbeatOn(ctx, sh, hostID, at)
	if known || err != nil {
		return known, err
	}
	prev := t.prevOwner(hostID, sh)
	if prev == nil {
		return false, nil
	}
	if known, err = s.heartbeatOn(ctx, prev, hostID, at); known || err != nil {
		return known, err
	}
	// MoveHost copies the record before deleting it: gone from the old
	// owner means it is on the new one now, if it was anywhere.
	return s.heartbeatOn(ctx, sh, hostID, at)
}

func (s *Store) heartbeatOn(ctx context.Context, sh *shard, hostID string, at time.Time) (bool, error) {
	n, err := heartbeatScript.Run(ctx, sh.client, []string{sh.keys.host(hostID)}, at.Unix(), ttlSeconds(s.cfg.HostTTL)).Int()
	if err != nil {
		return false, fmt.Errorf("heartbeat %s on redis shard %s: %w", hostID, sh.name, err)
	}
	if n != 1 {
		return false, nil
	}
	pipe := sh.client.Pipeline()
	pipe.ZAddArgs(ctx, sh.keys.hosts(), redis.ZAddArgs{GT: true, Members: []redis.Z{{Score: float64(at.Unix()), Member: hostID}}})
	pipe.Expire(ctx, sh.keys.hosts(), s.hostsTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("heartbeat %s on redis shard %s: update the hosts set: %w", hostID, sh.name, err)
	}
	return true, nil
}

func ttlSeconds(d time.Duration) int64 { return max(1, int64(math.Ceil(d.Seconds()))) }

// Hosts lists the hosts active within the retention on every shard,
// dropping members of the hosts sets that have no data left. During a move
// it reads the previous ring's shards first, then the current ring's: a
// host that moves in between is found on its new owner.
func (s *Store) Hosts(ctx context.Context) ([]storage.Host, error) {
	t, err := s.acquire()
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer s.release(t)
	var per [][]storage.Host
	if t.prev != nil {
		if per, err = s.hostsOf(ctx, t.prev); err != nil {
			return nil, err
		}
	}
	cur, err := s.hostsOf(ctx, t.cur)
	if err != nil {
		return nil, err
	}
	per = append(per, cur...)
	var out []storage.Host
	if len(per) == 1 {
		out = per[0]
	} else {
		// A host on two shards (mid-migration) is listed once, with its
		// registration and its newest data.
		byID := map[string]int{}
		for _, hs := range per {
			for _, h := range hs {
				j, ok := byID[h.ID]
				if !ok {
					byID[h.ID] = len(out)
					out = append(out, h)
					continue
				}
				prev := out[j]
				if h.LastRegistered > prev.LastRegistered {
					h.LastData = max(h.LastData, prev.LastData)
					out[j] = h
				} else {
					out[j].LastData = max(h.LastData, prev.LastData)
				}
				if prev.FirstSeen > 0 && (out[j].FirstSeen == 0 || prev.FirstSeen < out[j].FirstSeen) {
					out[j].FirstSeen = prev.FirstSeen
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b storage.Host) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// hostsOf reads the hosts of shards concurrently.
func (s *Store) hostsOf(ctx context.Context, shards []*shard) ([][]storage.Host, error) {
	per := make([][]storage.Host, len(shards))
	var g errgroup.Group
	for i, sh := range shards {
		g.Go(func() error {
			hs, err := s.shardHosts(ctx, sh)
			if err != nil {
				return fmt.Errorf("list hosts on redis shard %s: %w", sh.name, err)
			}
			per[i] = hs
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return per, nil
}

func (s *Store) shardHosts(ctx context.Context, sh *shard) ([]storage.Host, error) {
	cut := strconv.FormatInt(s.cutoff(), 10)
	pipe := sh.client.Pipeline()
	pipe.ZRemRangeByScore(ctx, sh.keys.hosts(), "-inf", "("+strconv.FormatInt(s.hostsCutoff(), 10))
	idsCmd := pipe.ZRangeByScore(ctx, sh.keys.hosts(), &redis.ZRangeBy{Min: cut, Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read hosts set: %w", err)
	}
	ids := idsCmd.Val()
	out := make([]storage.Host, 0, len(ids))
	infos := make([]*redis.MapStringStringCmd, 0, min(len(ids), s.cfg.ReadChunk))
	lasts := make([]func() int64, 0, cap(infos))
	for start := 0; start < len(ids); start += s.cfg.ReadChunk {
		chunk := ids[start:min(start+s.cfg.ReadChunk, len(ids))]
		pipe := sh.client.Pipeline()
		infos, lasts = infos[:0], lasts[:0]
		for _, id := range chunk {
			infos = append(infos, pipe.HGetAll(ctx, sh.keys.host(id)))
			lasts = append(lasts, s.lastData(ctx, pipe, sh, id))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read %d host records: %w", len(chunk), err)
		}
		for i, id := range chunk {
			if storage.ValidateHostID(id) != nil {
				continue // not written by us
			}
			var h storage.Host
			if fields := infos[i].Val(); len(fields) > 0 {
				var err error
				if h, err = decodeHost(id, fields); err != nil {
					return nil, err
				}
			}
			h.ID = id
			h.LastData = lasts[i]()
			if h.FirstSeen == 0 && h.LastRegistered == 0 && h.LastData == 0 {
				continue // neither registration nor data is left
			}
			out = append(out, h)
		}
	}
	return out, nil
}

func decodeHost(id string, f map[string]string) (storage.Host, error) {
	h := storage.Host{
		ID:           id,
		Hostname:     f[fHostname],
		OS:           f[fOS],
		Platform:     f[fPlatform],
		Kernel:       f[fKernel],
		Arch:         f[fArch],
		AgentVersion: f[fAgentVersion],
	}
	var errs []error
	num := func(field string) int64 {
		v, ok := f[field]
		if !ok || v == "" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s = %q is not an integer", field, v))
		}
		return n
	}
	h.CPUCount = uint32(num(fCPUCount))
	if v := f[fMemoryBytes]; v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s = %q is not an integer", fMemoryBytes, v))
		}
		h.MemoryBytes = n
	}
	h.BootTime = num(fBootTime)
	h.FirstSeen = num(fFirstSeen)
	h.LastRegistered = num(fLastRegistered)
	h.LastHeartbeat = num(fLastHeartbeat)
	if l := f[fLabels]; l != "" && l != "{}" {
		if err := json.Unmarshal([]byte(l), &h.Labels); err != nil {
			errs = append(errs, fmt.Errorf("field labels is not a JSON object: %w", err))
		}
	}
	if len(errs) > 0 {
		return storage.Host{}, fmt.Errorf("decode host record %s: %w", id, errors.Join(errs...))
	}
	return h, nil
}
