package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/hash"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var prefixSeq atomic.Int64

// uniquePrefix keeps the stores of one test run apart on a shared server.
func uniquePrefix() string { return fmt.Sprintf("t%d:", prefixSeq.Add(1)) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(ctxT(t), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func rawClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// conformanceConfig is a store as storagetest.Run wants it, with a key
// prefix of its own.
func conformanceConfig(clock *storagetest.Clock, shards ...ShardConfig) Config {
	return Config{
		Shards:    shards,
		KeyPrefix: uniquePrefix(),
		Retention: storagetest.Retention,
		HostTTL:   storagetest.Retention,
		Rollups:   storagetest.Rollups(),
		Now:       clock.Now,
	}
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	storagetest.Run(t, func(t *testing.T, clock *storagetest.Clock) storage.Store {
		return openStore(t, conformanceConfig(clock, ShardConfig{Addr: srv.Addr}))
	})
}

func TestConformanceThreeShards(t *testing.T) {
	var shards []ShardConfig
	for i := 0; i < 3; i++ {
		shards = append(shards, ShardConfig{Addr: redistest.Start(t).Addr})
	}
	storagetest.Run(t, func(t *testing.T, clock *storagetest.Clock) storage.Store {
		cfg := conformanceConfig(clock, shards...)
		cfg.ReadChunk = 7 // several pipelines per range
		return openStore(t, cfg)
	})
}

// TestShardPlacement checks with plain clients that every key of a host,
// rollups included, is on the shard the ring names, and on no other.
func TestShardPlacement(t *testing.T) {
	var shards []ShardConfig
	var addrs []string
	raw := map[string]*redis.Client{}
	for i := 0; i < 3; i++ {
		addr := redistest.Start(t).Addr
		shards = append(shards, ShardConfig{Addr: addr})
		addrs = append(addrs, addr)
		raw[addr] = rawClient(t, addr)
	}
	s := openStore(t, Config{Shards: shards})
	defer s.Close()
	ring, err := hash.New(addrs, hash.DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	now := time.Now().Unix()
	var batch []storage.Snapshot
	var ids []string
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("place-%02d", i)
		ids = append(ids, id)
		batch = append(batch, storage.Snapshot{HostID: id, Timestamp: now, Samples: []storage.Sample{{Series: "v", Value: float64(i)}}})
		if _, err := s.RegisterHost(ctx, storage.Host{ID: id}, time.Unix(now, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteSnapshots(ctx, batch); err != nil {
		t.Fatal(err)
	}
	used := map[string]int{}
	for _, id := range ids {
		owner := ring.Lookup(id)
		used[owner]++
		keys := []string{
			"monitor:metrics:" + id + ":" + strconv.FormatInt(now, 10),
			"monitor:index:metrics:" + id,
			"monitor:host:" + id,
			"monitor:rollup:1m:" + id + ":" + strconv.FormatInt(now-now%60, 10),
			"monitor:rollup:1h:" + id + ":" + strconv.FormatInt(now-now%3600, 10),
			"monitor:index:rollup:1m:" + id,
			"monitor:index:rollup:1h:" + id,
			"monitor:rollup:seen:" + id + ":" + strconv.FormatInt(now-now%3600, 10),
		}
		for addr, c := range raw {
			n, err := c.Exists(ctx, keys...).Result()
			if err != nil {
				t.Fatal(err)
			}
			want := int64(0)
			if addr == owner {
				want = int64(len(keys))
			}
			if n != want {
				t.Fatalf("host %s: %d of its keys on %s, want %d (ring owner %s)", id, n, addr, want, owner)
			}
			score, err := c.ZScore(ctx, "monitor:hosts", id).Result()
			if addr == owner && (err != nil || int64(score) != now) {
				t.Fatalf("host %s: hosts set score on owner = %v, %v", id, score, err)
			}
			if addr != owner && !errors.Is(err, redis.Nil) {
				t.Fatalf("host %s listed in the hosts set of %s, not its owner", id, addr)
			}
		}
	}
	if len(used) != 3 {
		t.Fatalf("30 hosts used only shards %v", used)
	}
	hs, err := s.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 30 {
		t.Fatalf("Hosts merged %d hosts, want 30", len(hs))
	}
}

// TestRawLayout reads what WriteSnapshots wrote with a plain client: the
// seed's exact field names, JSON values, index member and score, TTLs.
func TestRawLayout(t *testing.T) {
	srv := redistest.Start(t)
	c := rawClient(t, srv.Addr)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer s.Close()
	ctx := ctxT(t)
	ts := time.Now().Unix()
	snap := storage.Snapshot{
		HostID: "web-01", Timestamp: ts,
		Tags: map[string]string{"env": "prod", "dc": "fra 1"},
		Samples: []storage.Sample{
			{Series: "cpu.usage_percent", Value: 75.5, Unit: "%"},
			{Series: "net.rx_bytes_per_sec{iface=eth0}", Value: 1e6, Unit: "bytes/s"},
			{Series: "edge.tiny", Value: 1e-9},
			{Series: "edge.big", Value: 1e21, Unit: `q"b\`},
			{Series: "edge.neg", Value: -3, Unit: "°C"},
		},
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{snap}); err != nil {
		t.Fatal(err)
	}
	key := "monitor:metrics:web-01:" + strconv.FormatInt(ts, 10)
	got, err := c.HGetAll(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"host_id":                  "web-01",
		"timestamp":                strconv.FormatInt(ts, 10),
		"tag:env":                  "prod",
		"tag:dc":                   "fra 1",
		"metric:cpu.usage_percent": `{"value":75.5,"unit":"%"}`,
		"metric:net.rx_bytes_per_sec{iface=eth0}": `{"value":1000000,"unit":"bytes/s"}`,
		"metric:edge.tiny":                        `{"value":1e-9,"unit":""}`,
		"metric:edge.big":                         `{"value":1e+21,"unit":"q\"b\\"}`,
		"metric:edge.neg":                         `{"value":-3,"unit":"°C"}`,
	}
	if len(got) != len(want) {
		t.Fatalf("hash %s has fields %v, want %v", key, got, want)
	}
	for f, v := range want {
		if got[f] != v {
			t.Fatalf("field %s = %q, want %q", f, got[f], v)
		}
	}
	zs, err := c.ZRangeWithScores(ctx, "monitor:index:metrics:web-01", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(zs) != 1 || zs[0].Member != key || int64(zs[0].Score) != ts {
		t.Fatalf("index = %v, want [%s score %d]", zs, key, ts)
	}
	for _, k := range []string{key, "monitor:index:metrics:web-01"} {
		ttl, err := c.TTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl < storage.DefaultRetention-time.Minute || ttl > storage.DefaultRetention {
			t.Fatalf("TTL of %s = %v, want about %v", k, ttl, storage.DefaultRetention)
		}
	}
	score, err := c.ZScore(ctx, "monitor:hosts", "web-01").Result()
	if err != nil || int64(score) != ts {
		t.Fatalf("hosts set score = %v, %v; want %d", score, err, ts)
	}
	// The rollups: a hash per resolution and bucket, an index per
	// resolution, the hour's seen bitmap; nothing else.
	minute, hour := ts-ts%60, ts-ts%3600
	tsStr := func(v int64) string { return strconv.FormatInt(v, 10) }
	wantKeys := []string{
		key, "monitor:index:metrics:web-01", "monitor:hosts",
		"monitor:rollup:1m:web-01:" + tsStr(minute), "monitor:rollup:1h:web-01:" + tsStr(hour),
		"monitor:index:rollup:1m:web-01", "monitor:index:rollup:1h:web-01",
		"monitor:rollup:seen:web-01:" + tsStr(hour),
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	slices.Sort(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("keys after one snapshot:\n%v\nwant\n%v", keys, wantKeys)
	}
	for _, tc := range []struct {
		res   string
		start int64
		ttl   time.Duration
	}{{"1m", minute, storage.DefaultMinuteRetention}, {"1h", hour, storage.DefaultHourRetention}} {
		rk := "monitor:rollup:" + tc.res + ":web-01:" + tsStr(tc.start)
		raw, err := c.Get(ctx, rk).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if v := binary.LittleEndian.Uint64(raw); v != 1 {
			t.Fatalf("%s version %d, want 1 after one write", rk, v)
		}
		aggs, err := storage.DecodeRollupBucket(nil, raw[8:], tc.start, nil)
		if err != nil {
			t.Fatalf("%s: %v", rk, err)
		}
		if len(aggs) != len(snap.Samples) {
			t.Fatalf("%s has %d series, want %d", rk, len(aggs), len(snap.Samples))
		}
		i := slices.IndexFunc(aggs, func(a storage.SeriesAggregate) bool { return a.Series == "edge.neg" })
		want := storage.Aggregate{Min: -3, Max: -3, Sum: -3, Count: 1, Last: -3, LastTS: ts, Unit: "°C"}
		if i < 0 || aggs[i].Aggregate != want {
			t.Fatalf("%s: edge.neg = %+v, want %+v", rk, aggs, want)
		}
		// EXPIREAT start + retention, so the TTL is that less the time since.
		wantTTL := time.Until(time.Unix(tc.start, 0).Add(tc.ttl))
		if ttl := c.TTL(ctx, rk).Val(); ttl < wantTTL-time.Minute || ttl > wantTTL+time.Minute {
			t.Fatalf("TTL of %s = %v, want about %v", rk, ttl, wantTTL)
		}
		ik := "monitor:index:rollup:" + tc.res + ":web-01"
		zs := c.ZRangeWithScores(ctx, ik, 0, -1).Val()
		if len(zs) != 1 || zs[0].Member != tsStr(tc.start) || int64(zs[0].Score) != tc.start {
			t.Fatalf("%s = %v, want member and score %d", ik, zs, tc.start)
		}
		if ttl := c.TTL(ctx, ik).Val(); ttl < wantTTL-time.Minute || ttl > wantTTL+time.Minute {
			t.Fatalf("TTL of %s = %v, want about %v", ik, ttl, wantTTL)
		}
	}
	sk := "monitor:rollup:seen:web-01:" + tsStr(hour)
	if bit := c.GetBit(ctx, sk, ts-hour).Val(); bit != 1 {
		t.Fatalf("seen bit %d of %s = %d, want 1", ts-hour, sk, bit)
	}
	if n := c.BitCount(ctx, sk, nil).Val(); n != 1 {
		t.Fatalf("%s has %d bits set, want 1", sk, n)
	}
	wantTTL := time.Until(time.Unix(hour+3600, 0).Add(storage.DefaultRetention))
	if ttl := c.TTL(ctx, sk).Val(); ttl < wantTTL-time.Minute || ttl > wantTTL+time.Minute {
		t.Fatalf("TTL of %s = %v, want about %v", sk, ttl, wantTTL)
	}
}

func TestRawHostLayout(t *testing.T) {
	srv := redistest.Start(t)
	c := rawClient(t, srv.Addr)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, KeyPrefix: "mon:", HostTTL: time.Hour})
	defer s.Close()
	ctx := ctxT(t)
	at := time.Unix(1_800_000_000, 0)
	h := storage.Host{ID: "db-1", Hostname: "db-1.local", OS: "linux", Platform: "debian", Kernel: "6.1", Arch: "arm64",
		CPUCount: 4, MemoryBytes: 8 << 30, Labels: map[string]string{"role": "db"}, AgentVersion: "v1", BootTime: 1_700_000_000}
	if _, err := s.RegisterHost(ctx, h, at); err != nil {
		t.Fatal(err)
	}
	if known, err := s.Heartbeat(ctx, "db-1", at.Add(5*time.Second)); err != nil || !known {
		t.Fatalf("Heartbeat = %v, %v", known, err)
	}
	got, err := c.HGetAll(ctx, "mon:host:db-1").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": "db-1", "hostname": "db-1.local", "os": "linux", "platform": "debian", "kernel": "6.1", "arch": "arm64",
		"cpu_count": "4", "memory_bytes": strconv.Itoa(8 << 30), "labels": `{"role":"db"}`, "agent_version": "v1",
		"boot_time": "1700000000", "first_seen": "1800000000", "last_registered": "1800000000", "last_heartbeat": "1800000005",
	}
	if len(got) != len(want) {
		t.Fatalf("host hash = %v, want %v", got, want)
	}
	for f, v := range want {
		if got[f] != v {
			t.Fatalf("host field %s = %q, want %q", f, got[f], v)
		}
	}
	if ttl := c.TTL(ctx, "mon:host:db-1").Val(); ttl < time.Hour-time.Minute || ttl > time.Hour {
		t.Fatalf("host hash TTL = %v, want about 1h", ttl)
	}
	if ttl := c.TTL(ctx, "mon:hosts").Val(); ttl < storage.DefaultRetention-time.Minute {
		t.Fatalf("hosts set TTL = %v, want about the retention", ttl)
	}
	if score := c.ZScore(ctx, "mon:hosts", "db-1").Val(); int64(score) != at.Unix()+5 {
		t.Fatalf("hosts score = %v, want the heartbeat time", score)
	}
}

// TestRetentionTTL checks that a short retention becomes the keys' TTL.
func TestRetentionTTL(t *testing.T) {
	srv := redistest.Start(t)
	c := rawClient(t, srv.Addr)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, Retention: 90 * time.Second, HostTTL: 30 * time.Second})
	defer s.Close()
	ctx := ctxT(t)
	now := time.Now()
	if _, err := s.RegisterHost(ctx, storage.Host{ID: "h"}, now); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{{HostID: "h", Timestamp: now.Unix()}}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]time.Duration{
		"monitor:metrics:h:" + strconv.FormatInt(now.Unix(), 10): 90 * time.Second,
		"monitor:index:metrics:h":                                90 * time.Second,
		"monitor:host:h":                                         30 * time.Second,
		// The hosts set indexes every host with data left: rollups too.
		"monitor:hosts": storage.DefaultHourRetention,
	} {
		ttl, err := c.TTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= want-5*time.Second || ttl > want {
			t.Fatalf("TTL of %s = %v, want about %v", key, ttl, want)
		}
	}
}

// TestIndexTrimmed checks that writes remove index members older than the
// retention, so a host writing for months keeps a bounded index.
func TestIndexTrimmed(t *testing.T) {
	srv := redistest.Start(t)
	c := rawClient(t, srv.Addr)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, Retention: time.Hour})
	defer s.Close()
	ctx := ctxT(t)
	now := time.Now().Unix()
	old := now - 2*3600
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{{HostID: "h", Timestamp: old}}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{{HostID: "h", Timestamp: now}}); err != nil {
		t.Fatal(err)
	}
	members := c.ZRange(ctx, "monitor:index:metrics:h", 0, -1).Val()
	if len(members) != 1 || !strings.HasSuffix(members[0], strconv.FormatInt(now, 10)) {
		t.Fatalf("index after trimming = %v", members)
	}
}

func TestExpiredHashSkipped(t *testing.T) {
	srv := redistest.Start(t)
	c := rawClient(t, srv.Addr)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, ReadChunk: 2})
	defer s.Close()
	ctx := ctxT(t)
	b := time.Now().Unix() - 100
	var batch []storage.Snapshot
	for i := int64(0); i < 5; i++ {
		batch = append(batch, storage.Snapshot{HostID: "h", Timestamp: b + i, Samples: []storage.Sample{{Series: "v", Value: float64(i)}}})
	}
	if err := s.WriteSnapshots(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Expire two hashes the way Redis would, leaving their index members.
	c.Del(ctx, "monitor:metrics:h:"+strconv.FormatInt(b+1, 10), "monitor:metrics:h:"+strconv.FormatInt(b+4, 10))
	got, err := s.Range(ctx, storage.RangeQuery{HostID: "h", From: 0, To: b + 10})
	if err != nil {
		t.Fatalf("Range with expired hashes: %v", err)
	}
	var tss []int64
	for _, sn := range got {
		tss = append(tss, sn.Timestamp-b)
	}
	if fmt.Sprint(tss) != "[0 2 3]" {
		t.Fatalf("Range returned offsets %v, want [0 2 3]", tss)
	}
	latest, ok, err := s.Latest(ctx, "h")
	if err != nil || ok {
		t.Fatalf("Latest with its hash expired = %v, %v, %v; want not ok", latest.Timestamp, ok, err)
	}
}

// TestForeignHash reads a hash written by another writer of the seed's
// layout: pretty JSON, keys in another order, no timestamp field.
func TestForeignHash(t *testing.T) {
	srv := redistest.Start(t)
	c := rawClient(t, srv.Addr)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer s.Close()
	ctx := ctxT(t)
	ts := time.Now().Unix()
	key := "monitor:metrics:old-agent:" + strconv.FormatInt(ts, 10)
	c.HSet(ctx, key, "host_id", "old-agent",
		"metric:cpu.usage", `{ "unit": "%", "value": 12.5 }`,
		"metric:mem.used", `{"value":7,"unit":"MB","extra":true}`,
		"metric:escaped", `{"value":1,"unit":"\u00b0C"}`,
		"unknown_field", "ignored")
	c.ZAdd(ctx, "monitor:index:metrics:old-agent", redis.Z{Score: float64(ts), Member: key})
	got, err := s.Range(ctx, storage.RangeQuery{HostID: "old-agent", From: 0, To: ts})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Timestamp != ts {
		t.Fatalf("Range = %+v", got)
	}
	want := []storage.Sample{{Series: "cpu.usage", Value: 12.5, Unit: "%"}, {Series: "escaped", Value: 1, Unit: "°C"}, {Series: "mem.used", Value: 7, Unit: "MB"}}
	if fmt.Sprint(got[0].Samples) != fmt.Sprint(want) {
		t.Fatalf("samples = %v, want %v", got[0].Samples, want)
	}

	// A value nobody can read is an error naming the key and field.
	c.HSet(ctx, key, "metric:broken", `{"value":"high"}`)
	_, err = s.Range(ctx, storage.RangeQuery{HostID: "old-agent", From: 0, To: ts})
	if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "metric:broken") {
		t.Fatalf("Range over a corrupt value = %v, want an error naming %s and the field", err, key)
	}
}

func TestNewRefusesUnreachableShard(t *testing.T) {
	srv := redistest.Start(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = New(ctx, Config{Shards: []ShardConfig{{Addr: srv.Addr}, {Addr: dead, Password: "s3cret-pw"}}}, nil)
	if err == nil {
		t.Fatal("New with an unreachable shard succeeded")
	}
	if !strings.Contains(err.Error(), dead) {
		t.Fatalf("error %q does not name the shard %s", err, dead)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %q contains the password", err)
	}
}

func TestNewRefusesConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no shards", Config{}, "no shards"},
		{"empty addr", Config{Shards: []ShardConfig{{}}}, "no address"},
		{"bad addr", Config{Shards: []ShardConfig{{Addr: "localhost"}}}, "not host:port"},
		{"duplicate", Config{Shards: []ShardConfig{{Addr: "a:1"}, {Addr: "a:1"}}}, "listed twice"},
		{"negative retention", Config{Shards: []ShardConfig{{Addr: "a:1"}}, Retention: -time.Second}, "retention"},
		{"negative read chunk", Config{Shards: []ShardConfig{{Addr: "a:1"}}, ReadChunk: -1}, "read chunk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []ShardConfig
	}{
		{"redis://127.0.0.1:6379", []ShardConfig{{Addr: "127.0.0.1:6379"}}},
		{"redis://localhost", []ShardConfig{{Addr: "localhost:6379"}}},
		{"redis://r1:7000/2, redis://r2:7001", []ShardConfig{{Addr: "r1:7000", DB: 2}, {Addr: "r2:7001"}}},
		{"redis://user:p%40ss@r1:6379/0", []ShardConfig{{Addr: "r1:6379", Username: "user", Password: "p@ss"}}},
		{"redis://:only-pass@r1:6379", []ShardConfig{{Addr: "r1:6379", Password: "only-pass"}}},
		{"redis://u:pa/ss@r1:6379", []ShardConfig{{Addr: "r1:6379", Username: "u", Password: "pa/ss"}}},
		{"rediss://r1:6380", []ShardConfig{{Addr: "r1:6380", TLS: TLSConfig{Enabled: true}}}},
		{"REDIS://r1:1/", []ShardConfig{{Addr: "r1:1"}}},
		{"redis://[::1]:6379/3", []ShardConfig{{Addr: "[::1]:6379", DB: 3}}},
		{"redis://r1:6379/0,redis://r1:6379/1", []ShardConfig{{Addr: "r1:6379"}, {Addr: "r1:6379", DB: 1}}},
	} {
		got, err := ParseSpec(tc.spec)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tc.spec, err)
			continue
		}
		// reflect, not fmt: ShardConfig's String hides the password.
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseSpec(%q) = %#v, want %#v", tc.spec, got, tc.want)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want string
	}{
		{"", "empty"},
		{"  ", "empty"},
		{"redis://a:1,", "item 2 is empty"},
		{"redis://a:1,,redis://b:1", "item 2 is empty"},
		{"embedded", "item 1 (embedded): want a URL"},
		{"http://a:1", `scheme "http"`},
		{"redis://a:1,redis://b:notaport", `item 2 (redis://b:notaport): port "notaport"`},
		{"redis://a:0", `port "0"`},
		{"redis://a:70000", `port "70000"`},
		{"redis://a:", "empty port"},
		{"redis://:6379", "no host"},
		{"redis://a:1/x", `database "x"`},
		{"redis://a:1/-1", `database "-1"`},
		{"redis://a:1?db=2", "query parameters"},
		{"redis://a:1,redis://a:1", "already item 1"},
		{"redis://::1:6379", "IPv6"},
		{"redis://u:s3cret@b:xx", "item 1 (redis://***@b:xx)"},
		{"redis://u:s3cret/x@b:1/y", `database "y"`},
		{"redis://u:s3%zzcret@b:1", "bad %-escape"},
	} {
		_, err := ParseSpec(tc.spec)
		if err == nil {
			t.Errorf("ParseSpec(%q) succeeded, want an error containing %q", tc.spec, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSpec(%q) = %q, want it to contain %q", tc.spec, err, tc.want)
		}
		if strings.Contains(err.Error(), "s3") {
			t.Errorf("ParseSpec(%q) = %q: leaks the password", tc.spec, err)
		}
	}
}

// TestRangeChunks runs a range larger than several pipelines.
func TestRangeChunks(t *testing.T) {
	srv := redistest.Start(t)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, ReadChunk: 4})
	defer s.Close()
	ctx := ctxT(t)
	b := time.Now().Unix() - 1000
	var batch []storage.Snapshot
	for i := int64(0); i < 25; i++ {
		batch = append(batch, storage.Snapshot{HostID: "h", Timestamp: b + i, Samples: []storage.Sample{{Series: "v", Value: float64(i)}, {Series: "a", Value: -float64(i)}}})
	}
	if err := s.WriteSnapshots(ctx, batch); err != nil {
		t.Fatal(err)
	}
	got, err := s.Range(ctx, storage.RangeQuery{HostID: "h", From: b, To: b + 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 25 {
		t.Fatalf("got %d snapshots", len(got))
	}
	for i, sn := range got {
		if sn.Timestamp != b+int64(i) || len(sn.Samples) != 2 || sn.Samples[1].Value != float64(i) || sn.Samples[0].Value != -float64(i) {
			t.Fatalf("snapshot %d = %+v", i, sn)
		}
		// Samples of one snapshot must not alias another's.
		sn.Samples = append(sn.Samples, storage.Sample{Series: "z"})
		if i+1 < len(got) && got[i+1].Samples[0].Series != "a" {
			t.Fatalf("appending to snapshot %d's samples changed snapshot %d", i, i+1)
		}
	}
}
