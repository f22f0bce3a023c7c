package redisstore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/hash"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

// startShards starts n redis-servers: their shard configs (named by
// address) and a plain client per address.
func startShards(t testing.TB, n int) ([]ShardConfig, map[string]*redis.Client) {
	t.Helper()
	var shards []ShardConfig
	raw := map[string]*redis.Client{}
	for i := 0; i < n; i++ {
		addr := redistest.Start(t).Addr
		shards = append(shards, ShardConfig{Addr: addr})
		raw[addr] = rawClient(t, addr)
	}
	return shards, raw
}

func ringOf(t testing.TB, shards []ShardConfig) *hash.Ring {
	t.Helper()
	var names []string
	for _, sc := range shards {
		names = append(names, sc.name())
	}
	r, err := hash.New(names, hash.DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mirror writes to the store under test and to a reference store on a
// server of its own (one shard, never moved): what the reference returns
// is what the store under test must return.
type mirror struct {
	t        testing.TB
	s, ref   *Store
	mu       sync.Mutex
	hostsSet map[string]bool
}

func newMirror(t testing.TB, s *Store) *mirror {
	ref := openStore(t, Config{Shards: []ShardConfig{{Addr: redistest.Start(t).Addr}}})
	t.Cleanup(func() { _ = ref.Close() })
	return &mirror{t: t, s: s, ref: ref, hostsSet: map[string]bool{}}
}

func (m *mirror) write(ctx context.Context, snaps ...storage.Snapshot) error {
	if err := m.s.WriteSnapshots(ctx, snaps); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sn := range snaps {
		m.hostsSet[sn.HostID] = true
	}
	return m.ref.WriteSnapshots(ctx, snaps)
}

func (m *mirror) register(ctx context.Context, id string, at time.Time) {
	m.t.Helper()
	for _, st := range []*Store{m.s, m.ref} {
		if _, err := st.RegisterHost(ctx, storage.Host{ID: id, Hostname: id + ".local", Labels: map[string]string{"role": "web"}}, at); err != nil {
			m.t.Fatal(err)
		}
	}
}

func (m *mirror) heartbeat(ctx context.Context, id string, at time.Time) {
	m.t.Helper()
	for _, st := range []*Store{m.s, m.ref} {
		known, err := st.Heartbeat(ctx, id, at)
		if err != nil || !known {
			m.t.Fatalf("Heartbeat %s = %v, %v; want known", id, known, err)
		}
	}
}

// hostView is everything a client can read of one host.
type hostView struct {
	Range          []storage.Snapshot
	Latest         storage.Snapshot
	LatestOK       bool
	Minutes, Hours []storage.RollupSeries
}

func view(t testing.TB, s *Store, id string) hostView {
	t.Helper()
	ctx := ctxT(t)
	var v hostView
	var err error
	if v.Range, err = s.Range(ctx, storage.RangeQuery{HostID: id, From: 0, To: 1 << 62}); err != nil {
		t.Fatal(err)
	}
	if v.Latest, v.LatestOK, err = s.Latest(ctx, id); err != nil {
		t.Fatal(err)
	}
	if v.Minutes, err = s.RangeRollup(ctx, storage.RollupQuery{HostID: id, Resolution: storage.Minute, From: 0, To: 1 << 62}); err != nil {
		t.Fatal(err)
	}
	if v.Hours, err = s.RangeRollup(ctx, storage.RollupQuery{HostID: id, Resolution: storage.Hour, From: 0, To: 1 << 62}); err != nil {
		t.Fatal(err)
	}
	return v
}

// check compares every host's view and the host list with the reference.
func (m *mirror) check(what string) {
	m.t.Helper()
	m.mu.Lock()
	ids := make([]string, 0, len(m.hostsSet))
	for id := range m.hostsSet {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		got, want := view(m.t, m.s, id), view(m.t, m.ref, id)
		if !reflect.DeepEqual(got, want) {
			m.t.Fatalf("%s: host %s reads\n%+v\nwant (reference)\n%+v", what, id, got, want)
		}
	}
	got, err := m.s.Hosts(ctxT(m.t))
	if err != nil {
		m.t.Fatal(err)
	}
	want, err := m.ref.Hosts(ctxT(m.t))
	if err != nil {
		m.t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		m.t.Fatalf("%s: Hosts =\n%+v\nwant (reference)\n%+v", what, got, want)
	}
}

// history is n snapshots of host, step seconds apart from base, two series
// of integral values (sums stay exact in any order).
func history(host string, base int64, n int, step int64) []storage.Snapshot {
	out := make([]storage.Snapshot, n)
	for i := range out {
		ts := base + int64(i)*step
		out[i] = storage.Snapshot{HostID: host, Timestamp: ts, Tags: map[string]string{"env": "prod"}, Samples: []storage.Sample{
			{Series: "cpu.usage_percent", Value: float64(ts % 97), Unit: "%"},
			{Series: "mem.used_bytes", Value: float64(ts % 1000 * 1024), Unit: "bytes"},
		}}
	}
	return out
}

// isHostKey reports whether key is one of host's keys (plain or tagged).
func isHostKey(key, host string) bool {
	return strings.Contains(key, ":"+host+":") || strings.HasSuffix(key, ":"+host) || strings.Contains(key, "{"+host+"}")
}

// hostKeys lists host's keys on a server (SCAN: a test may) with their
// absolute expiry in Unix ms (0: none).
func hostKeys(t testing.TB, c *redis.Client, host string) map[string]int64 {
	t.Helper()
	ctx := ctxT(t)
	out := map[string]int64{}
	iter := c.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if !isHostKey(k, host) {
			continue
		}
		at, err := c.PExpireTime(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		out[k] = int64(at / time.Millisecond)
		if at < 0 {
			out[k] = 0
		}
	}
	if err := iter.Err(); err != nil {
		if errors.Is(err, redis.Nil) {
			return out
		}
		t.Fatal(err)
	}
	return out
}

func TestSetTopologyMovesHostsLive(t *testing.T) {
	shards, raw := startShards(t, 3)
	ctx := ctxT(t)
	s := openStore(t, Config{Shards: shards[:2]})
	defer s.Close()
	m := newMirror(t, s)
	now := time.Now().Unix()
	base := now - 3*3600
	// Shard names are their random ports, so pick the hosts: 8 that will
	// move to the third shard and 8 that stay.
	var hosts []string
	oldR, newR := ringOf(t, shards[:2]), ringOf(t, shards)
	for n, stay, move := 0, 0, 0; stay < 8 || move < 8; n++ {
		id := fmt.Sprintf("mv-%02d", n)
		if oldR.Lookup(id) != newR.Lookup(id) && move < 8 {
			move++
		} else if oldR.Lookup(id) == newR.Lookup(id) && stay < 8 {
			stay++
		} else {
			continue
		}
		hosts = append(hosts, id)
	}
	for i, id := range hosts {
		m.register(ctx, id, time.Unix(base-int64(i), 0))
		if err := m.write(ctx, history(id, base+int64(i), 60, 170)...); err != nil {
			t.Fatal(err)
		}
		m.heartbeat(ctx, id, time.Unix(now-5, 0))
	}
	m.check("before the ring change")

	// A third shard joins: hosts whose owner changed move to it.
	oldRing := ringOf(t, shards[:2])
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: shards, Previous: shards[:2]}); err != nil {
		t.Fatal(err)
	}
	if got := s.Topology(); got.Version != 1 || len(got.Shards) != 3 || len(got.Previous) != 2 || s.ShardCount() != 3 {
		t.Fatalf("Topology() = %+v, ShardCount %d", got, s.ShardCount())
	}
	var moving []string
	for _, h := range hosts {
		if s.OwnerOf(h) != oldRing.Lookup(h) {
			moving = append(moving, h)
			if s.OwnerOf(h) != shards[2].Addr {
				t.Fatalf("host %s moves to %s, not to the new shard", h, s.OwnerOf(h))
			}
		}
	}
	if len(moving) < 2 || len(moving) == len(hosts) {
		t.Fatalf("%d of %d hosts move: want some, not all", len(moving), len(hosts))
	}
	m.check("after the ring change, before any move")

	// A heartbeat of a host the new owner does not know yet goes to the
	// old owner.
	for _, h := range moving[1:] {
		m.heartbeat(ctx, h, time.Unix(now-2, 0))
	}
	// Expiries of the keys before the move (hosts set excepted: shared).
	expiry := map[string]map[string]int64{}
	for _, h := range moving[1:] {
		expiry[h] = hostKeys(t, raw[oldRing.Lookup(h)], h)
	}
	// Written during the move: to the new owner.
	busy := moving[0]
	if err := m.write(ctx, history(busy, now-100, 10, 7)...); err != nil {
		t.Fatal(err)
	}
	m.register(ctx, busy, time.Unix(now-1, 0))
	m.heartbeat(ctx, busy, time.Unix(now, 0))
	m.check("after writes to the new owner")

	for _, sh := range shards[:2] {
		on, err := s.HostsOn(ctx, sh.Addr)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range moving {
			if oldRing.Lookup(h) == sh.Addr && !contains(on, h) {
				t.Fatalf("HostsOn(%s) = %v lacks %s", sh.Addr, on, h)
			}
		}
	}

	for i, h := range moving {
		from, to := oldRing.Lookup(h), s.OwnerOf(h)
		keys, err := s.MoveHost(ctx, h, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if keys < 60 {
			t.Fatalf("MoveHost(%s) copied %d keys, want at least its 60 snapshots", h, keys)
		}
		if left := hostKeys(t, raw[from], h); len(left) != 0 {
			t.Fatalf("after MoveHost(%s) the old owner still holds %v", h, left)
		}
		if on, _ := s.HostsOn(ctx, from); contains(on, h) {
			t.Fatalf("HostsOn(%s) still lists %s after its move", from, h)
		}
		if i > 0 {
			moved := hostKeys(t, raw[to], h)
			for k, at := range expiry[h] {
				got, ok := moved[k]
				if !ok {
					t.Fatalf("after MoveHost(%s): key %s is not on the new owner", h, k)
				}
				if d := got - at; d < -1000 || d > 1000 {
					t.Fatalf("after MoveHost(%s): %s expires at %d, %d ms from the original", h, k, got, d)
				}
			}
			if len(moved) != len(expiry[h]) {
				t.Fatalf("after MoveHost(%s): %d keys on the new owner, %d before", h, len(moved), len(expiry[h]))
			}
		}
		m.check("after moving " + h)
		// Again: nothing left to copy, nothing counted twice.
		if keys, err := s.MoveHost(ctx, h, from, to); err != nil || keys != 0 {
			t.Fatalf("MoveHost(%s) again = %d, %v; want 0 keys", h, keys, err)
		}
	}
	m.check("after every move")
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: shards}); err != nil {
		t.Fatal(err)
	}
	m.check("with the previous ring cleared")

	// The first shard is drained: all its hosts move to the other two.
	if err := s.SetTopology(ctx, Topology{Version: 2, Shards: shards[1:], Previous: shards}); err != nil {
		t.Fatal(err)
	}
	m.check("after the drain ring change")
	drained, err := s.HostsOn(ctx, shards[0].Addr)
	if err != nil || len(drained) == 0 {
		t.Fatalf("HostsOn(drained) = %v, %v", drained, err)
	}
	for _, h := range drained {
		if _, err := s.MoveHost(ctx, h, shards[0].Addr, s.OwnerOf(h)); err != nil {
			t.Fatal(err)
		}
	}
	m.check("after the drain")
	if err := s.SetTopology(ctx, Topology{Version: 2, Shards: shards[1:]}); err != nil {
		t.Fatal(err)
	}
	m.check("with the drained shard gone")
	if n, err := raw[shards[0].Addr].DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("the drained shard holds %d keys (%v)", n, err)
	}
	// Its client is closed: only the test's own connection is left.
	waitFor(t, "the drained shard's connections closed", 10*time.Second, func() (bool, error) {
		info, err := raw[shards[0].Addr].Info(ctx, "clients").Result()
		return strings.Contains(info, "connected_clients:1\r"), err
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestMoveHostMergesRollups: both shards hold buckets of the same minute
// and hour (the target's written during the move); the move adds them up,
// once, however often it runs, and reads during the move show the sum.
func TestMoveHostMergesRollups(t *testing.T) {
	shards, raw := startShards(t, 2)
	ctx := ctxT(t)
	s := openStore(t, Config{Shards: shards[:1]})
	defer s.Close()
	m := newMirror(t, s)
	now := time.Now().Unix()
	hour := storage.Hour.BucketStart(now) - 3600
	if err := m.write(ctx, history("h", hour, 40, 60)...); err != nil { // even minutes …
		t.Fatal(err)
	}
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: shards[1:], Previous: shards[:1]}); err != nil {
		t.Fatal(err)
	}
	if err := m.write(ctx, history("h", hour+30, 40, 60)...); err != nil { // … and the same minutes' second halves
		t.Fatal(err)
	}
	// A snapshot counted on the old owner and sent again (at-least-once)
	// after the ring change is not counted again on the new owner.
	if err := m.write(ctx, history("h", hour, 3, 60)...); err != nil {
		t.Fatal(err)
	}
	m.check("both owners hold the buckets")
	if got := raw[shards[1].Addr].Exists(ctx, "monitor:rollup:1h:h:"+strconv.FormatInt(hour, 10)).Val(); got != 1 {
		t.Fatal("the new owner holds no hour bucket: the test does not test a merge")
	}
	for i := 0; i < 2; i++ {
		if _, err := s.MoveHost(ctx, "h", shards[0].Addr, shards[1].Addr); err != nil {
			t.Fatal(err)
		}
		m.check(fmt.Sprintf("after MoveHost #%d", i+1))
	}
	hours := view(t, s, "h").Hours
	if len(hours) != 2 || hours[0].Points[0].Count != 80 {
		t.Fatalf("hour buckets after the move = %+v, want 80 snapshots counted", hours)
	}
}

// TestMoveHostResumes crashes a move half-way — the source refuses the
// deletes (an ACL without UNLINK), after the first buckets were merged into
// the target — then reads (they must not count the merged buckets twice)
// and runs the move again with full rights.
func TestMoveHostResumes(t *testing.T) {
	shards, raw := startShards(t, 2)
	ctx := ctxT(t)
	src := raw[shards[0].Addr]
	if err := src.Do(ctx, "ACL", "SETUSER", "nodel", "on", ">pw", "~*", "+@all", "-unlink").Err(); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, Config{Shards: shards[:1]})
	defer s.Close()
	m := newMirror(t, s)
	now := time.Now().Unix()
	if err := m.write(ctx, history("h", now-7000, 50, 130)...); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: shards[1:], Previous: shards[:1]}); err != nil {
		t.Fatal(err)
	}
	if err := m.write(ctx, history("h", now-7000+65, 50, 130)...); err != nil {
		t.Fatal(err)
	}
	restricted := shards[0]
	restricted.Username, restricted.Password = "nodel", "pw"
	crashy := openStore(t, Config{Shards: []ShardConfig{restricted}})
	defer crashy.Close()
	if err := crashy.SetTopology(ctx, Topology{Version: 1, Shards: shards[1:], Previous: []ShardConfig{restricted}}); err != nil {
		t.Fatal(err)
	}
	_, err := crashy.MoveHost(ctx, "h", shards[0].Addr, shards[1].Addr)
	if err == nil || !strings.Contains(err.Error(), "delete 50 1m buckets") {
		t.Fatalf("MoveHost without UNLINK = %v, want it to fail deleting the minute buckets", err)
	}
	if n := raw[shards[1].Addr].HLen(ctx, "monitor:moved:h").Val(); n == 0 {
		t.Fatal("no ledger on the target: the crash came before any merge")
	}
	m.check("after the crash")
	// The crashed move's fence is still up (until it expires): a second
	// MoveHost waits for it.
	if _, err := s.MoveHost(ctx, "h", shards[0].Addr, shards[1].Addr); err == nil || !strings.Contains(err.Error(), "fence") {
		t.Fatalf("MoveHost under another's fence = %v", err)
	}
	if err := src.Del(ctx, "monitor:moving:h").Err(); err != nil { // as if it expired
		t.Fatal(err)
	}
	if _, err := s.MoveHost(ctx, "h", shards[0].Addr, shards[1].Addr); err != nil {
		t.Fatal(err)
	}
	m.check("after the resumed move")
	if left := hostKeys(t, src, "h"); len(left) != 0 {
		t.Fatalf("the source still holds %v", left)
	}
	if n := raw[shards[1].Addr].Exists(ctx, "monitor:moved:h").Val(); n != 0 {
		t.Fatal("the ledger outlived the move")
	}
}

// TestMoveHostConcurrentWriter writes the moving host on the new ring all
// through MoveHost: nothing is lost, nothing counted twice.
func TestMoveHostConcurrentWriter(t *testing.T) {
	shards, _ := startShards(t, 2)
	ctx := ctxT(t)
	s := openStore(t, Config{Shards: shards[:1], ReadChunk: 16})
	defer s.Close()
	m := newMirror(t, s)
	now := time.Now().Unix()
	base := now - 2*3600
	if err := m.write(ctx, history("w", base, 400, 9)...); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: shards[1:], Previous: shards[:1]}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		// Between the old snapshots (same buckets) and after them.
		for i := 0; ; i++ {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if err := m.write(ctx, history("w", base+4+int64(i)*9, 1, 9)...); err != nil {
				errc <- err
				return
			}
		}
	}()
	for i := 0; i < 3; i++ {
		if _, err := s.MoveHost(ctx, "w", shards[0].Addr, shards[1].Addr); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	m.check("after moving under a writer")
}

// TestWriteOnOldRingRefused: a broker still on the old ring writes a host
// whose fence is up: its rollups are refused with ErrHostMoving, so the
// agent sends again (to a broker on the new ring).
func TestWriteOnOldRingRefused(t *testing.T) {
	shards, raw := startShards(t, 1)
	ctx := ctxT(t)
	s := openStore(t, Config{Shards: shards})
	defer s.Close()
	if err := raw[shards[0].Addr].Set(ctx, "monitor:moving:f", "another", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	err := s.WriteSnapshots(ctx, history("f", time.Now().Unix(), 1, 1))
	if !errors.Is(err, ErrHostMoving) || !strings.Contains(err.Error(), "host f") {
		t.Fatalf("WriteSnapshots of a fenced host = %v, want ErrHostMoving", err)
	}
	if err := s.WriteSnapshots(ctx, history("g", time.Now().Unix(), 1, 1)); err != nil {
		t.Fatalf("another host is refused too: %v", err)
	}
}

// TestConformanceDuringMove runs the conformance suite on a store in the
// middle of a ring change (two shards, the previous ring one of them):
// every read consults both owners of half the hosts.
func TestConformanceDuringMove(t *testing.T) {
	shards, _ := startShards(t, 2)
	storagetest.Run(t, func(t *testing.T, clock *storagetest.Clock) storage.Store {
		s := openStore(t, conformanceConfig(clock, shards[1]))
		if err := s.SetTopology(ctxT(t), Topology{Version: 1, Shards: shards, Previous: shards[1:]}); err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestSetTopologyRefuses(t *testing.T) {
	shards, _ := startShards(t, 2)
	ctx := ctxT(t)
	s := openStore(t, Config{Shards: shards[:1]})
	defer s.Close()
	if err := s.SetTopology(ctx, Topology{Version: 5, Shards: shards}); err != nil {
		t.Fatal(err)
	}
	dead := ShardConfig{Addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), Password: "s3cret"}
	other := shards[1]
	other.DB = 0
	other.Replicas = []string{"127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		top  Topology
		want string
	}{
		{"older version", Topology{Version: 4, Shards: shards}, "already at version 5"},
		{"no shards", Topology{Version: 6}, "no shards"},
		{"duplicate", Topology{Version: 6, Shards: []ShardConfig{shards[0], shards[0]}}, "listed twice"},
		{"unreachable", Topology{Version: 6, Shards: append(shards[:2:2], dead)}, dead.Addr},
		{"same name, other settings", Topology{Version: 6, Shards: []ShardConfig{shards[0], other}, Previous: shards}, "different settings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.SetTopology(ctx, tc.top)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("SetTopology = %v, want an error containing %q", err, tc.want)
			}
			if got := s.Topology(); got.Version != 5 || len(got.Shards) != 2 {
				t.Fatalf("after a refused SetTopology the store is at %+v", got)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
	if s.ShardName(0) != shards[0].Addr || s.ShardName(1) != shards[1].Addr || s.ShardName(2) != "" {
		t.Fatalf("ShardName = %q, %q, %q", s.ShardName(0), s.ShardName(1), s.ShardName(2))
	}
	if _, err := s.HostsOn(ctx, "nowhere:1"); err == nil || !strings.Contains(err.Error(), "nowhere:1") {
		t.Fatalf("HostsOn(unknown shard) = %v", err)
	}
	for _, tc := range []struct{ from, to, want string }{
		{shards[0].Addr, shards[0].Addr, "both"},
		{"nowhere:1", shards[0].Addr, "nowhere:1"},
		{shards[0].Addr, "nowhere:1", "nowhere:1"},
	} {
		if _, err := s.MoveHost(ctx, "h", tc.from, tc.to); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("MoveHost(%s, %s) = %v, want an error containing %q", tc.from, tc.to, err, tc.want)
		}
	}
	owner := s.OwnerOf("h")
	notOwner := shards[0].Addr
	if owner == notOwner {
		notOwner = shards[1].Addr
	}
	if _, err := s.MoveHost(ctx, "h", owner, notOwner); err == nil || !strings.Contains(err.Error(), "its owner") {
		t.Fatalf("MoveHost to a shard that is not the owner = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTopology(ctx, Topology{Version: 9, Shards: shards}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetTopology after Close = %v", err)
	}
	if _, err := s.Range(ctx, storage.RangeQuery{HostID: "h", To: 1 << 62}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Range after Close = %v", err)
	}
}

// TestSetTopologyUnderLoad flips the ring while writers and readers run
// (with -race: no data race, no call on a closed client), then closes.
func TestSetTopologyUnderLoad(t *testing.T) {
	shards, _ := startShards(t, 2)
	ctx := ctxT(t)
	s := openStore(t, Config{Shards: shards[:1]})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	now := time.Now().Unix()
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				host := fmt.Sprintf("load-%d-%d", g, i%5)
				var err error
				switch i % 3 {
				case 0:
					err = s.WriteSnapshots(ctx, history(host, now-int64(i), 1, 1))
				case 1:
					_, err = s.Range(ctx, storage.RangeQuery{HostID: host, To: now})
				default:
					_, err = s.Hosts(ctx)
				}
				if err != nil && !errors.Is(err, ErrHostMoving) {
					errc <- err
					return
				}
			}
		}()
	}
	tops := []Topology{{Shards: shards}, {Shards: shards, Previous: shards[:1]}, {Shards: shards[1:], Previous: shards}, {Shards: shards[:1]}}
	for i := 0; i < 20; i++ {
		top := tops[i%len(tops)]
		top.Version = uint64(i + 1)
		if err := s.SetTopology(ctx, top); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMoveHostToAndFromCluster moves a host from a plain shard to a Redis
// Cluster shard (key names gain hash tags) and back.
func TestMoveHostToAndFromCluster(t *testing.T) {
	addrs := startCluster(t)
	plain, raw := startShards(t, 1)
	cluster := ShardConfig{Name: "cluster-a", Cluster: true, ClusterAddrs: addrs}
	ctx := ctxT(t)
	s := openStore(t, Config{Shards: plain})
	defer s.Close()
	m := newMirror(t, s)
	now := time.Now().Unix()
	m.register(ctx, "c1", time.Unix(now-9000, 0))
	if err := m.write(ctx, history("c1", now-7200, 80, 90)...); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: []ShardConfig{cluster}, Previous: plain}); err != nil {
		t.Fatal(err)
	}
	if err := m.write(ctx, history("c1", now-7200+45, 80, 90)...); err != nil {
		t.Fatal(err)
	}
	m.check("moving to the cluster")
	if _, err := s.MoveHost(ctx, "c1", plain[0].Addr, "cluster-a"); err != nil {
		t.Fatal(err)
	}
	m.check("on the cluster")
	if left := hostKeys(t, raw[plain[0].Addr], "c1"); len(left) != 0 {
		t.Fatalf("the plain shard still holds %v", left)
	}
	tagged := 0
	for _, a := range addrs {
		for k := range hostKeys(t, rawClient(t, a), "c1") {
			if !strings.Contains(k, "{c1}") {
				t.Fatalf("key %s on the cluster has no hash tag", k)
			}
			tagged++
		}
	}
	if tagged < 160 {
		t.Fatalf("%d keys of c1 on the cluster, want its 160 snapshots and more", tagged)
	}

	if err := s.SetTopology(ctx, Topology{Version: 2, Shards: plain, Previous: []ShardConfig{cluster}}); err != nil {
		t.Fatal(err)
	}
	m.check("moving back")
	if _, err := s.MoveHost(ctx, "c1", "cluster-a", plain[0].Addr); err != nil {
		t.Fatal(err)
	}
	m.check("back on the plain shard")
	for _, a := range addrs {
		if left := hostKeys(t, rawClient(t, a), "c1"); len(left) != 0 {
			t.Fatalf("cluster node %s still holds %v", a, left)
		}
	}
}

// BenchmarkMoveHost moves one host with an hour of 5 s snapshots of 50
// metrics (720 hashes, 60 minute and 1 hour buckets) back and forth
// between two shards:
//
//	go test -run XXX -bench MoveHost -benchmem ./pkg/storage/redisstore/
func BenchmarkMoveHost(b *testing.B) {
	shards, _ := startShards(b, 2)
	ctx := context.Background()
	s := openStore(b, Config{Shards: shards[:1]})
	defer s.Close()
	now := time.Now().Unix()
	var batch []storage.Snapshot
	for i := 0; i < 720; i++ {
		batch = append(batch, benchSnapshot("bench-move", now-3600+int64(i)*5))
		if len(batch) == 60 {
			if err := s.WriteSnapshots(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := s.RegisterHost(ctx, storage.Host{ID: "bench-move"}, time.Unix(now, 0)); err != nil {
		b.Fatal(err)
	}
	keys := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from, to := shards[i%2], shards[(i+1)%2]
		if err := s.SetTopology(ctx, Topology{Version: uint64(i + 1), Shards: []ShardConfig{to}, Previous: []ShardConfig{from}}); err != nil {
			b.Fatal(err)
		}
		n, err := s.MoveHost(ctx, "bench-move", from.Addr, to.Addr)
		if err != nil {
			b.Fatal(err)
		}
		keys += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hosts/s")
	b.ReportMetric(float64(keys)/b.Elapsed().Seconds(), "keys/s")
	b.ReportMetric(float64(keys)/float64(b.N), "keys/host")
}
