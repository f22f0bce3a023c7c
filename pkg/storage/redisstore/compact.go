package redisstore

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
)

// The compact layout (Config.Layout = LayoutCompact). Raw snapshots are
// kept per host and hour-aligned window ({w}, a multiple of chunkSpan) in
// one of two forms, the rollups, host records and hosts set being the
// seed's:
//
//	{prefix}chunk:{hostId}:{w}   STRING, EXPIREAT w + 1 h + Retention: the
//	    sealed window, pkg/storage/chunk's encoding (Gorilla timestamps,
//	    decimal-packed or XOR-ed values, about 2 bytes per sample)
//	{prefix}index:chunk:{hostId} ZSET member = score = {w}, TTL Retention
//	    + 1 h, refreshed by writes and seals
//	{prefix}head:{hostId}:{w}    HASH, TTL Retention + 1 h refreshed by
//	    every write to it: the open window, or late data for a sealed
//	    one. Field {ts} = the snapshot's record (chunk.AppendSchemaRecord:
//	    tags and values; version 1 records, chunk.AppendRecord, from
//	    before schemas and from ConvertHost are read too), field s:{id} =
//	    the schema (series and units) records refer to by id (hex),
//	    field v = a version every write bumps
//	{prefix}index:head:{hostId}  ZSET member = score = {w}, TTL as the
//	    chunk index
//	{prefix}lastdata             ZSET member = host id, score = its newest
//	    snapshot's timestamp (ZADD GT), TTL as the hosts set
//
// A write appends each snapshot's record to its window's head in the same
// MULTI/EXEC as the rollup commit: acknowledged means in Redis, so a
// broker that crashes loses nothing and any broker can go on with the
// host — the open chunk is rebuilt from the head, not kept in a broker.
// A write also asks which of the host's heads belong to windows that ended
// more than sealDelay ago (a ZRANGEBYSCORE in the same pipeline) and, when
// there are some it did not write to itself (sealAfterWrite), seals them:
// it reads the head and the window's chunk,
// merges them (the head's record wins a timestamp both hold: it is the
// newer write), encodes one chunk and stores it with sealCommit, which
// refuses if the head's version or the chunk changed meanwhile (the seal
// is then tried again) or the host is moving away (MoveHost's fence). A
// seal that fails costs a warning, not the write: the head stays readable
// and the next write tries again. A host that stops sending keeps its last
// head until Retention; Seal seals it earlier.
//
// Reads consult both forms, and the seed's keys too (one pipeline of
// three ZRANGEBYSCOREs, then one of GETs and HGETALLs): a cluster moving
// between layouts (ConvertHost) reads the same data in either layout.
// Where a timestamp is in several, the head wins over the chunk, and the
// compact forms over the seed's hash.

// Layout selects how a Store keeps raw snapshots.
type Layout string

// The layouts.
const (
	// LayoutSeed is the seed's exact layout: a HASH per snapshot.
	LayoutSeed Layout = "seed"
	// LayoutCompact keeps sealed, compressed chunks per host and hour.
	LayoutCompact Layout = "compact"
)

// ParseLayout parses "seed" or "compact" ("" is seed).
func ParseLayout(s string) (Layout, error) {
	switch Layout(s) {
	case "", LayoutSeed:
		return LayoutSeed, nil
	case LayoutCompact:
		return LayoutCompact, nil
	}
	return "", fmt.Errorf("storage layout %q is not one of seed, compact", s)
}

const (
	// chunkSpan is the window a chunk covers, in seconds (aligned to Unix
	// time like the hour rollups).
	chunkSpan = int64(3600)
	// sealDelay is how long after its window's end a head is sealed: late
	// snapshots of an agent that reconnects usually arrive by then.
	sealDelay = int64(120)
	// sealAttempts bounds the retries of a seal under concurrent writes.
	sealAttempts = 4
	// headVersion is the head field every write bumps.
	headVersion = "v"
)

func windowOf(ts int64) int64 { return storage.Resolution(chunkSpan).BucketStart(ts) }

func (k keyspace) chunk(hostID string, w int64) string {
	b := append([]byte(k.prefix), "chunk:"...)
	b = k.appendHost(b, hostID)
	b = append(b, ':')
	return string(strconv.AppendInt(b, w, 10))
}

func (k keyspace) chunkIndex(hostID string) string {
	return string(k.appendHost(append([]byte(k.prefix), "index:chunk:"...), hostID))
}

func (k keyspace) head(hostID string, w int64) string {
	b := append([]byte(k.prefix), "head:"...)
	b = k.appendHost(b, hostID)
	b = append(b, ':')
	return string(strconv.AppendInt(b, w, 10))
}

func (k keyspace) headIndex(hostID string) string {
	return string(k.appendHost(append([]byte(k.prefix), "index:head:"...), hostID))
}

func (k keyspace) lastData() string { return k.prefix + "lastdata" }

// compactTTL is the TTL of heads and of the window indexes.
func (s *Store) compactTTL() int64 { return ttlSeconds(s.cfg.Retention) + chunkSpan }

// queueCompact queues one host's snapshots (in call order) as head
// records, and the query for heads ready to seal; snaps[i] for i in idx.
func (s *Store) queueCompact(ctx context.Context, pipe redis.Pipeliner, sh *shard, host string, snaps []*storage.Snapshot, cutoff, now int64) *redis.StringSliceCmd {
	byWindow := map[int64][]interface{}{}
	type windowSchema struct {
		w  int64
		id chunk.SchemaID
	}
	schemas := map[windowSchema]bool{}
	var windows []int64
	newest := int64(math.MinInt64)
	for _, sn := range snaps {
		w := windowOf(sn.Timestamp)
		args, ok := byWindow[w]
		if !ok {
			windows = append(windows, w)
			args = []interface{}{"hset", sh.keys.head(host, w)}
		}
		var fields []interface{}
		rec := chunk.AppendSchemaRecord(nil, sn, func(id chunk.SchemaID, sch []byte) {
			// Each schema in the same HSET as its first record of the
			// call: HSET of an existing schema field writes the same
			// bytes again.
			if ws := (windowSchema{w, id}); !schemas[ws] {
				schemas[ws] = true
				fields = append(fields, schemaField(id), slices.Clone(sch))
			}
		})
		args = append(args, strconv.FormatInt(sn.Timestamp, 10), rec)
		byWindow[w] = append(args, fields...)
		newest = max(newest, sn.Timestamp)
	}
	ttl := s.compactTTL()
	idx := sh.keys.headIndex(host)
	for _, w := range windows {
		key := sh.keys.head(host, w)
		_ = pipe.Process(ctx, redis.NewIntCmd(ctx, byWindow[w]...))
		pipe.HIncrBy(ctx, key, headVersion, 1)
		pipe.Do(ctx, "expire", key, ttl)
		pipe.ZAdd(ctx, idx, redis.Z{Score: float64(w), Member: w})
	}
	cut := "(" + strconv.FormatInt(windowOf(cutoff)-chunkSpan, 10)
	pipe.Do(ctx, "expire", idx, ttl)
	pipe.ZRemRangeByScore(ctx, idx, "-inf", cut)
	pipe.ZRemRangeByScore(ctx, sh.keys.chunkIndex(host), "-inf", cut)
	pipe.ZAddArgs(ctx, sh.keys.lastData(), redis.ZAddArgs{GT: true, Members: []redis.Z{{Score: float64(newest), Member: host}}})
	return pipe.ZRangeByScore(ctx, idx, &redis.ZRangeBy{Min: "-inf", Max: "(" + strconv.FormatInt(now-chunkSpan-sealDelay+1, 10)})
}

// sealCommit stores a sealed window if nothing changed since it was read.
//
//	KEYS  head, chunk, head index, chunk index, the host's move fence
//	ARGV  head version read ("" none), SHA-1 of the chunk read ("" none),
//	      the new chunk ("" delete it: nothing left), its EXPIREAT, {w}
//
// It returns 1 when stored, 0 on a conflict, -1 when the host is moving
// away (the fence is up: MoveHost is copying its chunks).
var sealCommit = redis.NewScript(`
if redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
if (redis.call('HGET', KEYS[1], 'v') or '') ~= ARGV[1] then return 0 end
local cur = redis.call('GET', KEYS[2])
if (cur and redis.sha1hex(cur) or '') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[4], ARGV[5])
else
  redis.call('SET', KEYS[2], ARGV[3], 'EXAT', ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[5])
  redis.call('EXPIREAT', KEYS[4], ARGV[4], 'NX')
  redis.call('EXPIREAT', KEYS[4], ARGV[4], 'GT')
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[5])
return 1
`)

func digest(b []byte) string {
	if b == nil {
		return ""
	}
	d := sha1.Sum(b)
	return hex.EncodeToString(d[:])
}

// windowData is what one window holds on a shard.
type windowData struct {
	chunk   []byte // nil: none
	head    []redis.KeyValue
	version string // the head's, "" none
}

// readWindows reads the chunks and heads of windows ws.
func readWindows(ctx context.Context, c redis.UniversalClient, sh *shard, host string, chunks, heads []int64) (map[int64]*windowData, error) {
	out := make(map[int64]*windowData, len(chunks)+len(heads))
	get := func(w int64) *windowData {
		d := out[w]
		if d == nil {
			d = &windowData{}
			out[w] = d
		}
		return d
	}
	pipe := c.Pipeline()
	gets := make([]*redis.StringCmd, len(chunks))
	for i, w := range chunks {
		gets[i] = pipe.Get(ctx, sh.keys.chunk(host, w))
	}
	alls := make([]*redis.KeyValueSliceCmd, len(heads))
	for i, w := range heads {
		alls[i] = redis.NewKeyValueSliceCmd(ctx, "hgetall", sh.keys.head(host, w))
		_ = pipe.Process(ctx, alls[i])
	}
	if len(chunks)+len(heads) == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read %d chunks and %d heads: %w", len(chunks), len(heads), err)
	}
	for i, w := range chunks {
		b, err := gets[i].Bytes()
		if errors.Is(err, redis.Nil) {
			continue // expired before its index member
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", sh.keys.chunk(host, w), err)
		}
		get(w).chunk = b
	}
	for i, w := range heads {
		kvs := alls[i].Val()
		if len(kvs) == 0 {
			continue
		}
		d := get(w)
		d.head = kvs
		for _, kv := range kvs {
			if kv.Key == headVersion {
				d.version = kv.Value
			}
		}
	}
	return out, nil
}

// schemaPrefix starts a head's schema fields.
const schemaPrefix = "s:"

func schemaField(id chunk.SchemaID) string { return schemaPrefix + hex.EncodeToString(id[:]) }

// addSchemas gives dec the schemas among a head's fields.
func addSchemas(dec *chunk.Decoder, head []redis.KeyValue) error {
	for _, kv := range head {
		h, ok := strings.CutPrefix(kv.Key, schemaPrefix)
		if !ok {
			continue
		}
		var id chunk.SchemaID
		if n, err := hex.Decode(id[:], []byte(h)); err != nil || n != len(id) {
			return fmt.Errorf("schema field %q: not a schema id", kv.Key)
		}
		if err := dec.AddSchema(id, readOnlyBytes(kv.Value)); err != nil {
			return err
		}
	}
	return nil
}

// schemaCache keeps the schemas Latest needed, by id; it is emptied when
// it holds schemaCacheMax (a host sends one or a few schemas).
type schemaCache struct {
	mu sync.Mutex
	m  map[chunk.SchemaID][]byte
}

const schemaCacheMax = 4096

func (c *schemaCache) get(id chunk.SchemaID) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[id]
	return b, ok
}

func (c *schemaCache) put(id chunk.SchemaID, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= schemaCacheMax {
		c.m = map[chunk.SchemaID][]byte{}
	}
	c.m[id] = b
}

// decodeWindow returns the window's snapshots with from <= ts <= to, in
// time order, the head's over the chunk's.
func decodeWindow(dec *chunk.Decoder, sh *shard, host string, w int64, d *windowData, from, to int64, m *storage.Matcher) ([]storage.Snapshot, error) {
	var old []storage.Snapshot
	if d.chunk != nil {
		var err error
		if old, err = dec.Decode(nil, d.chunk, host, from, to, m); err != nil {
			return nil, fmt.Errorf("decode %s: %w", sh.keys.chunk(host, w), err)
		}
	}
	if len(d.head) == 0 {
		return old, nil
	}
	if err := addSchemas(dec, d.head); err != nil {
		return nil, fmt.Errorf("decode %s: %w", sh.keys.head(host, w), err)
	}
	recs := make([]storage.Snapshot, 0, len(d.head))
	for _, kv := range d.head {
		if kv.Key == headVersion {
			continue
		}
		ts, err := strconv.ParseInt(kv.Key, 10, 64)
		if err != nil {
			continue // not written by us
		}
		if ts < from || ts > to {
			continue
		}
		sn := storage.Snapshot{HostID: host, Timestamp: ts}
		if err := dec.DecodeRecord(readOnlyBytes(kv.Value), m, &sn); err != nil {
			return nil, fmt.Errorf("decode %s field %s: %w", sh.keys.head(host, w), kv.Key, err)
		}
		recs = append(recs, sn)
	}
	slices.SortFunc(recs, func(a, b storage.Snapshot) int { return int(a.Timestamp - b.Timestamp) })
	return chunk.Merge(old, recs), nil
}

// readOnlyBytes returns the bytes of s without copying them, for a
// decoder that only reads its input and copies what it keeps
// (chunk.Decoder.DecodeRecord, AddSchema): a head holds up to 720 records
// (2 KB each in version 1), and copying every one only to parse it
// doubled a range's allocations.
func readOnlyBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// readRangeAll reads the host's snapshots with from <= ts <= to from every
// form on the shard: chunks, heads and the seed's hashes.
func (s *Store) readRangeAll(ctx context.Context, c redis.UniversalClient, sh *shard, q storage.RangeQuery, from int64) ([]storage.Snapshot, error) {
	pipe := c.Pipeline()
	byScore := &redis.ZRangeBy{Min: strconv.FormatInt(windowOf(from), 10), Max: strconv.FormatInt(q.To, 10)}
	ci := pipe.ZRangeByScore(ctx, sh.keys.chunkIndex(q.HostID), byScore)
	hi := pipe.ZRangeByScore(ctx, sh.keys.headIndex(q.HostID), byScore)
	si := pipe.ZRangeByScore(ctx, sh.keys.index(q.HostID), &redis.ZRangeBy{Min: strconv.FormatInt(from, 10), Max: strconv.FormatInt(q.To, 10)})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read indexes: %w", err)
	}
	chunks, err := rollupStarts(ci.Val())
	if err != nil {
		return nil, err
	}
	heads, err := rollupStarts(hi.Val())
	if err != nil {
		return nil, err
	}
	var seed []storage.Snapshot
	if keys := si.Val(); len(keys) > 0 {
		arena := sampleArena{block: 2048}
		err = s.hgetallChunks(ctx, c, keys, func(key string, kvs []redis.KeyValue) error {
			if len(kvs) == 0 {
				return nil
			}
			snap, err := decodeSnapshot(key, q.HostID, kvs, q.Match, &arena)
			if err != nil {
				return err
			}
			seed = append(seed, snap)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(chunks)+len(heads) == 0 {
		return dropEmpty(seed, q.Match), nil
	}
	data, err := readWindows(ctx, c, sh, q.HostID, chunks, heads)
	if err != nil {
		return nil, err
	}
	windows := append(chunks, heads...)
	slices.Sort(windows)
	windows = slices.Compact(windows)
	dec := chunk.NewDecoder()
	var out []storage.Snapshot
	for _, w := range windows {
		d := data[w]
		if d == nil {
			continue
		}
		got, err := decodeWindow(dec, sh, q.HostID, w, d, from, q.To, q.Match)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return dropEmpty(chunk.Merge(seed, out), q.Match), nil
}

// dropEmpty omits snapshots a matcher left without samples.
func dropEmpty(snaps []storage.Snapshot, m *storage.Matcher) []storage.Snapshot {
	if m == nil {
		return snaps
	}
	return slices.DeleteFunc(snaps, func(s storage.Snapshot) bool { return len(s.Samples) == 0 })
}

// latestCompact returns the newest snapshot from the host's lastdata
// score: one HGET when it is in a head, a one-timestamp range otherwise.
func (s *Store) latestCompact(ctx context.Context, sh *shard, hostID string) (storage.Snapshot, bool, bool, error) {
	score, err := sh.client.ZScore(ctx, sh.keys.lastData(), hostID).Result()
	if errors.Is(err, redis.Nil) {
		return storage.Snapshot{}, false, false, nil // not known here: the seed's path
	}
	if err != nil {
		return storage.Snapshot{}, false, true, fmt.Errorf("latest %s on redis shard %s: read lastdata: %w", hostID, sh.name, err)
	}
	ts := int64(score)
	if ts < s.cutoff() {
		return storage.Snapshot{}, false, true, nil
	}
	head := sh.keys.head(hostID, windowOf(ts))
	rec, err := sh.client.HGet(ctx, head, strconv.FormatInt(ts, 10)).Bytes()
	if err == nil {
		snap := storage.Snapshot{HostID: hostID, Timestamp: ts}
		if err := s.decodeLatest(ctx, sh, head, rec, &snap); err != nil {
			return storage.Snapshot{}, false, true, fmt.Errorf("latest %s on redis shard %s: %w", hostID, sh.name, err)
		}
		return snap, true, true, nil
	}
	if !errors.Is(err, redis.Nil) {
		return storage.Snapshot{}, false, true, fmt.Errorf("latest %s on redis shard %s: %w", hostID, sh.name, err)
	}
	got, err := s.readRangeAll(ctx, sh.client, sh, storage.RangeQuery{HostID: hostID, From: ts, To: ts}, ts)
	if err != nil {
		return storage.Snapshot{}, false, true, fmt.Errorf("latest %s on redis shard %s: %w", hostID, sh.name, err)
	}
	if len(got) == 0 {
		return storage.Snapshot{}, false, false, nil // sealed meanwhile or gone: the slow path
	}
	return got[len(got)-1], true, true, nil
}

// decodeLatest decodes one head record, with its schema from the cache or
// else from the head.
func (s *Store) decodeLatest(ctx context.Context, sh *shard, head string, rec []byte, snap *storage.Snapshot) error {
	dec := chunk.NewDecoder()
	missing, _ := dec.RecordSchemas(rec)
	var fetch []string
	var fetchIDs []chunk.SchemaID
	for _, id := range missing {
		if sch, ok := s.schemas.get(id); ok {
			if err := dec.AddSchema(id, sch); err != nil {
				return fmt.Errorf("%s: %w", head, err)
			}
			continue
		}
		fetch = append(fetch, schemaField(id))
		fetchIDs = append(fetchIDs, id)
	}
	if len(fetch) > 0 {
		vals, err := sh.client.HMGet(ctx, head, fetch...).Result()
		if err != nil {
			return fmt.Errorf("read schemas of %s: %w", head, err)
		}
		for i, v := range vals {
			str, ok := v.(string)
			if !ok {
				return fmt.Errorf("%s: %w: field %s", head, chunk.ErrNoSchema, fetch[i])
			}
			id := fetchIDs[i]
			if err := dec.AddSchema(id, []byte(str)); err != nil {
				return fmt.Errorf("%s: %w", head, err)
			}
			s.schemas.put(id, []byte(str))
		}
	}
	return dec.DecodeRecord(rec, nil, snap)
}

// Seal seals every head of hostID on its owner whose window ended more than
// sealDelay ago (writes do this as they go; Seal is for hosts that
// stopped sending, and for ConvertHost). It returns the windows sealed.
func (s *Store) Seal(ctx context.Context, hostID string) (int, error) {
	if err := storage.ValidateHostID(hostID); err != nil {
		return 0, fmt.Errorf("seal: %w", err)
	}
	t, err := s.acquire()
	if err != nil {
		return 0, fmt.Errorf("seal %s: %w", hostID, err)
	}
	defer s.release(t)
	sh := t.owner(hostID)
	windows, err := s.closedHeads(ctx, sh, hostID)
	if err != nil {
		return 0, err
	}
	return len(windows), s.seal(ctx, sh, hostID, windows)
}

// closedHeads lists the host's heads on sh whose window is ready to seal.
func (s *Store) closedHeads(ctx context.Context, sh *shard, hostID string) ([]int64, error) {
	ws, err := sh.client.ZRangeByScore(ctx, sh.keys.headIndex(hostID), &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(s.now().Unix()-chunkSpan-sealDelay+1, 10),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("seal %s on redis shard %s: %w", hostID, sh.name, err)
	}
	return rollupStarts(ws)
}

// sealClosed seals the host's closed heads on sh.
func (s *Store) sealClosed(ctx context.Context, sh *shard, hostID string) error {
	windows, err := s.closedHeads(ctx, sh, hostID)
	if err != nil {
		return err
	}
	return s.seal(ctx, sh, hostID, windows)
}

// seal merges each window's head into its chunk.
func (s *Store) seal(ctx context.Context, sh *shard, host string, windows []int64) error {
	for attempt := 1; len(windows) > 0; attempt++ {
		if attempt > sealAttempts {
			return fmt.Errorf("seal %s on redis shard %s: window %d kept changing (%d attempts)", host, sh.name, windows[0], sealAttempts)
		}
		data, err := readWindows(ctx, sh.client, sh, host, windows, windows)
		if err != nil {
			return fmt.Errorf("seal %s on redis shard %s: %w", host, sh.name, err)
		}
		cutoff := s.cutoff()
		dec := chunk.NewDecoder()
		pipe := sh.client.Pipeline()
		cmds := make([]*redis.Cmd, len(windows))
		for i, w := range windows {
			d := data[w]
			if d == nil {
				d = &windowData{}
			}
			snaps, err := decodeWindow(dec, sh, host, w, d, cutoff, math.MaxInt64, nil)
			if err != nil {
				return fmt.Errorf("seal %s: %w", host, err)
			}
			var enc []byte
			if len(snaps) > 0 {
				if enc, err = chunk.Encode(nil, snaps); err != nil {
					return fmt.Errorf("seal %s window %d: %w", host, w, err)
				}
			}
			cmds[i] = sealCommit.EvalSha(ctx, pipe,
				[]string{sh.keys.head(host, w), sh.keys.chunk(host, w), sh.keys.headIndex(host), sh.keys.chunkIndex(host), sh.keys.fence(host)},
				d.version, digest(d.chunk), enc, w+chunkSpan+ttlSeconds(s.cfg.Retention), w)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				if lerr := sealCommit.Load(ctx, sh.client).Err(); lerr != nil {
					return fmt.Errorf("seal %s on redis shard %s: load the script: %w", host, sh.name, lerr)
				}
				continue
			}
			return fmt.Errorf("seal %s on redis shard %s: %w", host, sh.name, err)
		}
		var retry []int64
		for i, c := range cmds {
			switch n, _ := c.Int(); n {
			case 0:
				retry = append(retry, windows[i])
			case -1:
				return nil // moving away: the move takes the heads along
			}
		}
		windows = retry
	}
	return nil
}

// sealAfterWrite seals the windows a write's pipeline reported, except
// those the write itself touched (snaps): a host sending a closed window's
// data — an agent replaying its spool — sends more of it in its next
// calls, and sealing on each of them would re-read and re-encode the
// window every call. Such a window is sealed by the first write that no
// longer touches it. A failure is logged, not returned: the write itself
// is stored.
func (s *Store) sealAfterWrite(ctx context.Context, sh *shard, host string, cmd *redis.StringSliceCmd, snaps []*storage.Snapshot) {
	if cmd == nil || len(cmd.Val()) == 0 {
		return
	}
	windows, err := rollupStarts(cmd.Val())
	if err == nil {
		windows = slices.DeleteFunc(windows, func(w int64) bool {
			return slices.ContainsFunc(snaps, func(sn *storage.Snapshot) bool { return windowOf(sn.Timestamp) == w })
		})
		err = s.seal(ctx, sh, host, windows)
	}
	if err != nil {
		s.logger.Warn("sealing chunks failed; the heads stay readable and are sealed by a later write", "host", host, "shard", sh.name, "err", err)
	}
}
