package redisstore

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

// checkEveryKeyHasTTL fails when any key on the server has no expiry.
func checkEveryKeyHasTTL(t *testing.T, c *redis.Client, wantMin int) {
	t.Helper()
	ctx := ctxT(t)
	n := 0
	iter := c.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		ttl, err := c.TTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		// -2: expired between SCAN and TTL, fine.
		if ttl == -1 || (ttl != -2 && ttl <= 0) {
			t.Errorf("key %s has TTL %v; every key written must expire", key, ttl)
		}
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if n < wantMin {
		t.Fatalf("only %d keys on the server, want at least %d: did the suite write anything?", n, wantMin)
	}
	t.Logf("%d keys, each with a TTL", n)
}

// TestEveryKeyHasTTL runs the whole conformance suite, rollups included,
// on a server of its own, then reads every key: none may lack a TTL.
func TestEveryKeyHasTTL(t *testing.T) {
	srv := redistest.Start(t)
	storagetest.Run(t, func(t *testing.T, clock *storagetest.Clock) storage.Store {
		return openStore(t, conformanceConfig(clock, ShardConfig{Addr: srv.Addr}))
	})
	c := rawClient(t, srv.Addr)
	checkEveryKeyHasTTL(t, c, 100)
	// The rollup keys are among them.
	for _, pattern := range []string{"*:rollup:1m:*", "*:rollup:1h:*", "*:rollup:seen:*", "*:index:rollup:1m:*", "*:index:rollup:1h:*"} {
		keys, err := c.Keys(ctxT(t), pattern).Result()
		if err != nil || len(keys) == 0 {
			t.Fatalf("no keys match %s (%v)", pattern, err)
		}
	}
}

// TestRollupScriptReloaded: a restarted Redis has lost its scripts; the
// next write loads the rollup script again and counts the snapshot once.
func TestRollupScriptReloaded(t *testing.T) {
	srv := redistest.Start(t)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer s.Close()
	ctx := ctxT(t)
	srv.Restart(t)
	c := rawClient(t, srv.Addr)
	if ok := c.ScriptExists(ctx, rollupCommit.Hash()).Val(); len(ok) != 1 || ok[0] {
		t.Fatalf("SCRIPT EXISTS after a restart = %v, want [false]", ok)
	}
	ts := time.Now().Unix() - 30
	snap := storage.Snapshot{HostID: "h", Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 4}}}
	// The first command after the restart may meet the closed connection.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.WriteSnapshots(ctx, []storage.Snapshot{snap})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("WriteSnapshots after a restart: %v", err)
		}
	}
	if ok := c.ScriptExists(ctx, rollupCommit.Hash()).Val(); len(ok) != 1 || !ok[0] {
		t.Fatalf("SCRIPT EXISTS after the write = %v, want [true]: the store did not load it again", ok)
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{snap}); err != nil {
		t.Fatal(err)
	}
	got, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "h", Resolution: storage.Minute, From: ts, To: ts})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Points[0].Count != 1 || got[0].Points[0].Sum != 4 {
		t.Fatalf("rollup after a restart = %+v, want one sample of 4", got)
	}
}

// TestRollupFailureLeavesNothing: a bucket the store cannot read (not a
// string, or not a bucket) fails the call, names the key, and marks nothing
// as counted; once the key is gone, a resend is counted exactly once.
func TestRollupFailureLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(c *redis.Client, key string) error
		want  string
	}{
		{"a list", func(c *redis.Client, key string) error { return c.RPush(ctxT(t), key, "x").Err() }, "WRONGTYPE"},
		{"garbage", func(c *redis.Client, key string) error { return c.Set(ctxT(t), key, "not a rollup bucket", 0).Err() }, "corrupt rollup bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			c := rawClient(t, srv.Addr)
			s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
			defer s.Close()
			ctx := ctxT(t)
			ts := time.Now().Unix() - 30
			bad := "monitor:rollup:1m:h:" + strconv.FormatInt(ts-ts%60, 10)
			if err := tc.plant(c, bad); err != nil {
				t.Fatal(err)
			}
			snap := storage.Snapshot{HostID: "h", Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 4}}}
			err := s.WriteSnapshots(ctx, []storage.Snapshot{snap})
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.want != "WRONGTYPE" && !strings.Contains(err.Error(), bad)) {
				t.Fatalf("WriteSnapshots over %s = %v, want %q naming %s", tc.name, err, tc.want, bad)
			}
			hour := ts - ts%3600
			if n := c.Exists(ctx, "monitor:rollup:1h:h:"+strconv.FormatInt(hour, 10)).Val(); n != 0 {
				t.Fatal("the failed call wrote the hour bucket")
			}
			if bit := c.GetBit(ctx, "monitor:rollup:seen:h:"+strconv.FormatInt(hour, 10), ts-hour).Val(); bit != 0 {
				t.Fatal("the failed call marked the snapshot as counted")
			}
			c.Del(ctx, bad)
			for i := 0; i < 2; i++ {
				if err := s.WriteSnapshots(ctx, []storage.Snapshot{snap}); err != nil {
					t.Fatal(err)
				}
			}
			for _, res := range storage.RollupResolutions() {
				got, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "h", Resolution: res, From: ts, To: ts})
				if err != nil || len(got) != 1 || got[0].Points[0].Count != 1 {
					t.Fatalf("%s after the repair = %+v, %v; want one sample", res, got, err)
				}
			}
		})
	}
}

// TestNoRollups: with rollups off nothing but the seed's keys is written
// and RangeRollup says so.
func TestNoRollups(t *testing.T) {
	srv := redistest.Start(t)
	c := rawClient(t, srv.Addr)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, NoRollups: true})
	defer s.Close()
	ctx := ctxT(t)
	ts := time.Now().Unix()
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{{HostID: "h", Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 1}}}}); err != nil {
		t.Fatal(err)
	}
	if keys := c.Keys(ctx, "*rollup*").Val(); len(keys) != 0 {
		t.Fatalf("rollup keys written with rollups off: %v", keys)
	}
	if _, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "h", Resolution: storage.Minute, From: 0, To: ts}); !errors.Is(err, storage.ErrNoRollups) {
		t.Fatalf("RangeRollup with rollups off = %v, want ErrNoRollups", err)
	}
}

// TestRollupManySeries crosses the script's chunk of 1000 fields per HMGET
// and HSET.
func TestRollupManySeries(t *testing.T) {
	srv := redistest.Start(t)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer s.Close()
	ctx := ctxT(t)
	ts := time.Now().Unix() - 30
	if ts%3600 == 0 {
		ts-- // keep ts-1 in the same hour
	}
	mk := func(ts int64, v float64) storage.Snapshot {
		sn := storage.Snapshot{HostID: "wide", Timestamp: ts}
		for i := 0; i < 2500; i++ {
			sn.Samples = append(sn.Samples, storage.Sample{Series: "s" + strconv.Itoa(i), Value: v + float64(i)})
		}
		return sn
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{mk(ts, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{mk(ts-1, 10), mk(ts, 99)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "wide", Resolution: storage.Hour, From: ts, To: ts})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2500 {
		t.Fatalf("%d series, want 2500", len(got))
	}
	for _, r := range got {
		i, _ := strconv.Atoi(r.Series[1:])
		a := r.Points[0].Aggregate
		if a.Count != 2 || a.Min != float64(i) || a.Max != float64(10+i) || a.Last != float64(i) || a.LastTS != ts {
			t.Fatalf("series %s = %+v", r.Series, a)
		}
	}
}

// TestRollupCommitConflict drives the three steps by hand with another
// writer committing in between: the commit refuses, leaves no temporary
// key, and the retry counts both writers' snapshots once each.
func TestRollupCommitConflict(t *testing.T) {
	srv := redistest.Start(t)
	c := rawClient(t, srv.Addr)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer s.Close()
	other := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}})
	defer other.Close()
	ctx := ctxT(t)
	ts := time.Now().Unix() - 30
	if ts%60 == 0 {
		ts-- // keep ts-1 in the same minute
	}
	mine := storage.Snapshot{HostID: "h", Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 1}}}
	theirs := storage.Snapshot{HostID: "h", Timestamp: ts - 1, Samples: []storage.Sample{{Series: "v", Value: 2}}}
	top := s.topo.Load()
	sh := top.cur[0]

	w := newRollupWork("h", []*storage.Snapshot{&mine}, s.cutoff())
	pipe := sh.client.Pipeline()
	w.read(ctx, pipe, sh.keys)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	// Another broker counts a snapshot of the same host meanwhile.
	if err := other.WriteSnapshots(ctx, []storage.Snapshot{theirs}); err != nil {
		t.Fatal(err)
	}
	pipe = sh.client.Pipeline()
	if err := w.queue(ctx, pipe, sh.keys, &s.cfg, time.Now().Unix(), s.commitToken()); err != nil {
		t.Fatal(err)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := w.commit.Int(); err != nil || n != 0 {
		t.Fatalf("commit after a concurrent change = %d, %v; want 0 (conflict)", n, err)
	}
	if keys := c.Keys(ctx, "monitor:rollup:tmp:*").Val(); len(keys) != 0 {
		t.Fatalf("a refused commit left %v", keys)
	}
	if err := s.rollUp(ctx, top, sh, conflicted([]*rollupWork{w})); err != nil {
		t.Fatal(err)
	}
	for _, res := range storage.RollupResolutions() {
		got, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "h", Resolution: res, From: ts, To: ts})
		if err != nil || len(got) != 1 {
			t.Fatalf("%s: %+v, %v", res, got, err)
		}
		if a := got[0].Points[0].Aggregate; a.Count != 2 || a.Sum != 3 || a.Last != 1 || a.Min != 1 || a.Max != 2 {
			t.Fatalf("%s after the retry = %+v, want both snapshots once", res, a)
		}
	}
}
