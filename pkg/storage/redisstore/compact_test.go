package redisstore

import (
	"fmt"
	"slices"
	"time"

	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

func compactConfig(clock *storagetest.Clock, shards ...ShardConfig) Config {
	cfg := conformanceConfig(clock, shards...)
	cfg.Layout = LayoutCompact
	return cfg
}

func TestConformanceCompact(t *testing.T) {
	srv := redistest.Start(t)
	storagetest.Run(t, func(t *testing.T, clock *storagetest.Clock) storage.Store {
		return openStore(t, compactConfig(clock, ShardConfig{Addr: srv.Addr}))
	})
}

// TestCompactSealsAndMerges writes three hours of a host, checks that the
// closed windows became chunks (no heads left), that reads are exact, and
// that a late rewrite into a sealed window wins and is sealed again.
func TestCompactSealsAndMerges(t *testing.T) {
	srv := redistest.Start(t)
	clock := midWindow()
	cfg := compactConfig(clock, ShardConfig{Addr: srv.Addr})
	cfg.Retention = 24 * time.Hour
	s := openStore(t, cfg)
	ctx := ctxT(t)
	raw := rawClient(t, srv.Addr)
	start := windowOf(clock.Now().Unix()) - 3*chunkSpan
	var want []storage.Snapshot
	for ts := start; ts < start+3*chunkSpan; ts += 5 {
		want = append(want, storage.Snapshot{HostID: "c1", Timestamp: ts, Tags: map[string]string{"env": "t"},
			Samples: []storage.Sample{{Series: "cpu", Value: float64(ts%1000) / 10, Unit: "%"}, {Series: "mem", Value: 16 << 30, Unit: "bytes"}}})
	}
	for i := 0; i < len(want); i += 100 {
		if err := s.WriteSnapshots(ctx, want[i:min(i+100, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	// One more write in the current window seals the last closed one.
	now := storage.Snapshot{HostID: "c1", Timestamp: clock.Now().Unix(), Samples: []storage.Sample{{Series: "cpu", Value: 1}}}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{now}); err != nil {
		t.Fatal(err)
	}
	want = append(want, now)
	chunks := raw.ZRange(ctx, s.cfg.KeyPrefix+"index:chunk:c1", 0, -1).Val()
	heads := raw.ZRange(ctx, s.cfg.KeyPrefix+"index:head:c1", 0, -1).Val()
	if len(chunks) != 3 || len(heads) != 1 {
		t.Fatalf("chunks %v heads %v, want 3 chunks and the current head", chunks, heads)
	}
	for _, w := range chunks {
		if n := raw.Exists(ctx, s.cfg.KeyPrefix+"head:c1:"+w).Val(); n != 0 {
			t.Fatalf("head of sealed window %s still exists", w)
		}
		if ttl := raw.TTL(ctx, s.cfg.KeyPrefix+"chunk:c1:"+w).Val(); ttl <= 0 {
			t.Fatalf("chunk %s has no TTL (%v)", w, ttl)
		}
	}
	check := func(what string) {
		t.Helper()
		got, err := s.Range(ctx, storage.RangeQuery{HostID: "c1", From: 0, To: 1 << 62})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d snapshots, want %d", what, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Timestamp != w.Timestamp || len(g.Samples) != len(w.Samples) || g.Samples[0] != w.Samples[0] || len(g.Tags) != len(w.Tags) {
				t.Fatalf("%s: snapshot %d = %+v, want %+v", what, i, g, w)
			}
		}
	}
	check("sealed")
	// A late rewrite of a sealed snapshot: a head for its window, read
	// over the chunk, and sealed into it by the next write that does not
	// touch the window (one that does would re-seal it on every call of a
	// replay).
	late := want[10]
	late.Samples = []storage.Sample{{Series: "cpu", Value: 99.5, Unit: "%"}}
	late.Tags = nil
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{late}); err != nil {
		t.Fatal(err)
	}
	want[10] = late
	check("late rewrite in a head")
	if heads := raw.ZRange(ctx, s.cfg.KeyPrefix+"index:head:c1", 0, -1).Val(); len(heads) != 2 {
		t.Fatalf("heads %v after the late rewrite, want its window's and the current one", heads)
	}
	next := storage.Snapshot{HostID: "c1", Timestamp: now.Timestamp + 1, Samples: []storage.Sample{{Series: "cpu", Value: 2}}}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{next}); err != nil {
		t.Fatal(err)
	}
	want = append(want, next)
	check("late rewrite sealed again")
	if n, err := s.Seal(ctx, "c1"); err != nil || n != 0 {
		t.Fatalf("Seal = %d, %v; the write sealed the late head already", n, err)
	}
	snap, ok, err := s.Latest(ctx, "c1")
	if err != nil || !ok || snap.Timestamp != next.Timestamp {
		t.Fatalf("Latest = %d, %v, %v", snap.Timestamp, ok, err)
	}
	// The memory of a sealed window: about 2 bytes per sample or less.
	used, err := raw.MemoryUsage(ctx, s.cfg.KeyPrefix+"chunk:c1:"+chunks[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one sealed hour: %d bytes for %d samples", used, 720*2)
}

// TestMoveHostCompact moves hosts with sealed chunks and open heads to a
// new shard, with a write arriving mid-way, and compares every read with a
// reference store that never moved; nothing of a moved host stays on the
// old shard.
func TestMoveHostCompact(t *testing.T) {
	shards, raw := startShards(t, 2)
	clock := midWindow()
	cfg := Config{Shards: shards[:1], KeyPrefix: uniquePrefix(), Layout: LayoutCompact, Now: clock.Now}
	s := openStore(t, cfg)
	m := newMirror(t, s)
	m.ref.cfg.Layout = LayoutCompact
	m.ref.cfg.Now, m.ref.now = clock.Now, clock.Now
	ctx := ctxT(t)
	base := windowOf(clock.Now().Unix()) - 2*chunkSpan
	var hosts []string
	for i := 0; i < 12; i++ {
		id := fmt.Sprintf("cm-%02d", i)
		hosts = append(hosts, id)
		if err := m.write(ctx, history(id, base, 2*720+30, 5)...); err != nil {
			t.Fatal(err)
		}
		if err := m.write(ctx, history(id, clock.Now().Unix()-30, 3, 5)...); err != nil {
			t.Fatal(err)
		}
	}
	m.check("before the move")
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: shards, Previous: shards[:1]}); err != nil {
		t.Fatal(err)
	}
	m.check("ring changed, nothing moved")
	moved := 0
	for i, id := range hosts {
		if s.OwnerOf(id) != shards[1].name() {
			continue
		}
		if i%2 == 0 { // a write on the new ring before the move
			if err := m.write(ctx, history(id, clock.Now().Unix()-20, 2, 7)...); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.MoveHost(ctx, id, shards[0].name(), shards[1].name()); err != nil {
			t.Fatal(err)
		}
		if left := hostKeys(t, raw[shards[0].Addr], id); len(left) > 0 {
			t.Fatalf("host %s left keys on the old shard: %v", id, left)
		}
		moved++
	}
	if moved == 0 {
		t.Fatal("no host changed owner")
	}
	m.check("moved")
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: shards}); err != nil {
		t.Fatal(err)
	}
	m.check("move done")
}

// TestConvertLayouts writes hosts in the seed layout, converts them to the
// compact layout while a broker already writes compact, then back, and
// compares every read with a reference store after each step.
func TestConvertLayouts(t *testing.T) {
	srv := redistest.Start(t)
	prefix := uniquePrefix()
	clock := midWindow()
	seed := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, KeyPrefix: prefix, Now: clock.Now})
	compact := openStore(t, Config{Shards: []ShardConfig{{Addr: srv.Addr}}, KeyPrefix: prefix, Layout: LayoutCompact, Now: clock.Now})
	m := newMirror(t, seed)
	ctx := ctxT(t)
	base := windowOf(clock.Now().Unix()) - chunkSpan
	for i := 0; i < 3; i++ {
		if err := m.write(ctx, history(fmt.Sprintf("cv-%d", i), base, 800, 5)...); err != nil {
			t.Fatal(err)
		}
	}
	m.check("seed")
	// A broker restarted with the compact layout writes; both read all.
	m.s = compact
	if err := m.write(ctx, history("cv-0", clock.Now().Unix()-10, 2, 3)...); err != nil {
		t.Fatal(err)
	}
	m.check("mixed")
	n, err := compact.ConvertAll(ctx, nil)
	if err != nil || n != 3*800 {
		t.Fatalf("ConvertAll to compact = %d, %v; want %d", n, err, 3*800)
	}
	m.check("converted to compact")
	raw := rawClient(t, srv.Addr)
	if k := raw.Keys(ctx, prefix+"metrics:*").Val(); len(k) != 0 {
		t.Fatalf("seed hashes left: %d", len(k))
	}
	m.s = seed
	m.check("compact read by the seed layout")
	if _, err := seed.ConvertAll(ctx, nil); err != nil {
		t.Fatal(err)
	}
	m.check("converted back to seed")
	if k := raw.Keys(ctx, prefix+"chunk:*").Val(); len(k) != 0 {
		t.Fatalf("chunks left: %v", k)
	}
	if k := raw.Keys(ctx, prefix+"head:*").Val(); len(k) != 0 {
		t.Fatalf("heads left: %v", k)
	}
}

// midWindow is a clock in the middle of the current chunk window, so what a
// test writes "now" and in the windows before does not depend on the time
// of day it runs at (a head is sealed only sealDelay after its window ends,
// and a window's data must not reach past now).
func midWindow() *storagetest.Clock {
	c := &storagetest.Clock{}
	now := time.Now().Unix()
	c.Advance(time.Duration(windowOf(now)+chunkSpan/2-now) * time.Second)
	return c
}

// TestCompactReadsVersion1Heads: heads written before schema records
// (version 1 records, series names in each) read and seal as before, mixed
// with version 2 records in one head.
func TestCompactReadsVersion1Heads(t *testing.T) {
	srv := redistest.Start(t)
	clock := midWindow()
	cfg := compactConfig(clock, ShardConfig{Addr: srv.Addr})
	cfg.Retention = 24 * time.Hour
	s := openStore(t, cfg)
	ctx := ctxT(t)
	raw := rawClient(t, srv.Addr)
	w := windowOf(clock.Now().Unix()) - chunkSpan
	mk := func(ts int64, v float64) storage.Snapshot {
		return storage.Snapshot{HostID: "old", Timestamp: ts, Tags: map[string]string{"env": "t"},
			Samples: []storage.Sample{{Series: "cpu", Value: v, Unit: "%"}, {Series: "mem", Value: 16 << 30, Unit: "bytes"}}}
	}
	old := mk(w+10, 12.25)
	if err := raw.HSet(ctx, s.cfg.KeyPrefix+"head:old:"+fmt.Sprint(w), fmt.Sprint(old.Timestamp), chunk.AppendRecord(nil, &old), headVersion, 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.ZAdd(ctx, s.cfg.KeyPrefix+"index:head:old", redis.Z{Score: float64(w), Member: w}).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := mk(w+15, 13.5)
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{fresh}); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		got, err := s.Range(ctx, storage.RangeQuery{HostID: "old", From: w, To: w + chunkSpan})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || fmt.Sprint(got[0].Samples, got[1].Samples, got[0].Tags) != fmt.Sprint(old.Samples, fresh.Samples, old.Tags) {
			t.Fatalf("%s: Range = %+v", what, got)
		}
	}
	check("in the head")
	if n, err := s.Seal(ctx, "old"); err != nil || n != 1 {
		t.Fatalf("Seal = %d, %v", n, err)
	}
	check("sealed")
}

// TestCompactLatestSchemas: Latest finds the schemas of the newest record
// whether this store has met them (cache) or not (a fresh store, a family
// of series that just appeared).
func TestCompactLatestSchemas(t *testing.T) {
	srv := redistest.Start(t)
	clock := midWindow()
	cfg := compactConfig(clock, ShardConfig{Addr: srv.Addr})
	s := openStore(t, cfg)
	ctx := ctxT(t)
	now := clock.Now().Unix()
	base := []storage.Sample{{Series: "cpu.usage_percent", Value: 12.5, Unit: "%"}, {Series: "mem.used_bytes", Value: 1 << 30, Unit: "bytes"}}
	for i, extra := range [][]storage.Sample{nil, {{Series: "process.cpu_percent{pid=7}", Value: 0.25, Unit: "%"}}, {{Series: "process.cpu_percent{pid=8}", Value: 3}}} {
		snap := storage.Snapshot{HostID: "l", Timestamp: now - 10 + int64(i), Samples: append(slices.Clone(base), extra...)}
		if err := s.WriteSnapshots(ctx, []storage.Snapshot{snap}); err != nil {
			t.Fatal(err)
		}
		for _, st := range []*Store{s, openStore(t, cfg)} {
			got, ok, err := st.Latest(ctx, "l")
			if err != nil || !ok || got.Timestamp != snap.Timestamp || fmt.Sprint(got.Samples) != fmt.Sprint(snap.Samples) {
				t.Fatalf("write %d: Latest = %+v, %v, %v; want %+v", i, got, ok, err, snap)
			}
		}
	}
}
