package redisstore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
)

// brokerACL is the ACL rule set docs/storage.md and docs/security.md give
// the brokers' Redis user (after "ACL SETUSER monitor on >PASSWORD"): keys
// under the default prefix only, no Pub/Sub channels, the read, write,
// transaction and scripting commands without the @dangerous ones, PING,
// and RESTORE back (MoveHost copies snapshot hashes with DUMP/RESTORE).
// Change it here and in those pages together.
var brokerACL = []string{"~monitor:*", "resetchannels", "+@read", "+@write", "+@transaction", "+@scripting", "-@dangerous", "+ping", "+restore"}

// brokerClusterACL is added to brokerACL for a shard that is a Redis
// Cluster: go-redis' cluster client reads the slot map (CLUSTER SLOTS) and
// the command table (COMMAND, to route read-only commands), and with
// read_from_replicas sends READONLY.
var brokerClusterACL = []string{"+cluster|slots", "+command", "+readonly"}

const (
	aclUser     = "monitor"
	aclPassword = "acl-test-password"
)

// aclShard starts a redis-server that has the user monitor with rules, and
// returns the shard config that logs in as that user and an admin client
// (the default user) to inspect the server. DEBUG is enabled (Redis 7
// turns it off by default), so that refusing it is the ACL's doing.
func aclShard(t *testing.T, rules []string) (ShardConfig, *redis.Client) {
	t.Helper()
	args := append([]string{"--enable-debug-command", "yes"}, redistest.User(aclUser, aclPassword, rules...)...)
	srv := redistest.Start(t, args...)
	return ShardConfig{Addr: srv.Addr, Username: aclUser, Password: aclPassword}, rawClient(t, srv.Addr)
}

// aclDenials returns the ACL LOG entries of a server: every command or key
// that Redis refused to a user since the last ACL LOG RESET.
func aclDenials(t *testing.T, admin *redis.Client) []string {
	t.Helper()
	entries, err := admin.ACLLog(ctxT(t), 100).Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s %s %s (%s)", e.Username, e.Reason, e.Object, e.Context))
	}
	return out
}

// TestACLBrokerUser runs every path of the store that touches Redis —
// writes, reads, rollups, the Lua scripts, the compact layout and its
// sealing, MoveHost in both layouts (DUMP/RESTORE, the move scripts) and
// ConvertAll — as a user with brokerACL, checks that Redis refused none of
// it (ACL LOG stays empty) and that the data read back is whole, and that
// the same user is refused FLUSHALL, FLUSHDB, CONFIG, KEYS, DEBUG,
// SHUTDOWN and the other dangerous commands.
func TestACLBrokerUser(t *testing.T) {
	a, adminA := aclShard(t, brokerACL)
	b, adminB := aclShard(t, brokerACL)
	ctx := ctxT(t)
	clock := midWindow()
	now := clock.Now().Unix()
	base := windowOf(now) - 2*chunkSpan // two closed hours, then the open one

	// Seed layout on shard a: register, write, heartbeat, read.
	seed := openStore(t, Config{Shards: []ShardConfig{a}, Now: clock.Now})
	defer seed.Close()
	const hosts, perHost = 12, 2*720 + 40
	written := map[string]int{}
	var ids []string
	for i := range hosts {
		id := fmt.Sprintf("acl-%02d", i)
		ids = append(ids, id)
		if _, err := seed.RegisterHost(ctx, storage.Host{ID: id, Hostname: id + ".local"}, time.Unix(base, 0)); err != nil {
			t.Fatalf("RegisterHost as the ACL user: %v", err)
		}
		if err := seed.WriteSnapshots(ctx, history(id, base, perHost, 5)); err != nil {
			t.Fatalf("WriteSnapshots as the ACL user: %v", err)
		}
		written[id] = perHost
		if known, err := seed.Heartbeat(ctx, id, time.Unix(now, 0)); err != nil || !known {
			t.Fatalf("Heartbeat as the ACL user = %v, %v", known, err)
		}
	}
	if err := seed.Ping(ctx); err != nil {
		t.Fatalf("Ping as the ACL user: %v", err)
	}
	checkHosts(t, seed, ids, written, "seed layout")

	// MoveHost in the seed layout: shard b joins, the hosts whose owner
	// changed move (DUMP, RESTORE, the fence and merge scripts).
	if err := seed.SetTopology(ctx, Topology{Version: 1, Shards: []ShardConfig{a, b}, Previous: []ShardConfig{a}}); err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, id := range ids {
		if to := seed.OwnerOf(id); to != a.name() {
			n, err := seed.MoveHost(ctx, id, a.name(), to)
			if err != nil {
				t.Fatalf("MoveHost as the ACL user: %v", err)
			}
			if n < perHost {
				t.Fatalf("MoveHost(%s) copied %d keys, want at least its %d snapshots", id, n, perHost)
			}
			moved++
		}
	}
	if moved == 0 || moved == hosts {
		t.Fatalf("%d of %d hosts moved to the new shard: want some, not all", moved, hosts)
	}
	if err := seed.SetTopology(ctx, Topology{Version: 1, Shards: []ShardConfig{a, b}}); err != nil {
		t.Fatal(err)
	}
	checkHosts(t, seed, ids, written, "seed layout, moved")

	// The compact layout on both shards: write into the open hour,
	// convert the seed hashes (ConvertAll), seal.
	compact := openStore(t, Config{Shards: []ShardConfig{a, b}, Layout: LayoutCompact, Now: clock.Now})
	defer compact.Close()
	if err := compact.SetTopology(ctx, Topology{Version: 1, Shards: []ShardConfig{a, b}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := compact.WriteSnapshots(ctx, history(id, now-30, 3, 7)); err != nil {
			t.Fatalf("WriteSnapshots (compact) as the ACL user: %v", err)
		}
		written[id] += 3
	}
	n, err := compact.ConvertAll(ctx, nil)
	if err != nil {
		t.Fatalf("ConvertAll as the ACL user: %v", err)
	}
	if n != hosts*perHost {
		t.Fatalf("ConvertAll converted %d snapshots, want %d", n, hosts*perHost)
	}
	for _, id := range ids {
		if _, err := compact.Seal(ctx, id); err != nil {
			t.Fatalf("Seal as the ACL user: %v", err)
		}
	}
	checkHosts(t, compact, ids, written, "compact layout")

	// MoveHost in the compact layout: shard a leaves, its hosts move to b
	// (the chunk and head scripts).
	if err := compact.SetTopology(ctx, Topology{Version: 2, Shards: []ShardConfig{b}, Previous: []ShardConfig{a, b}}); err != nil {
		t.Fatal(err)
	}
	onA, err := compact.HostsOn(ctx, a.name())
	if err != nil {
		t.Fatal(err)
	}
	if len(onA) == 0 {
		t.Fatal("no host left on shard a to move")
	}
	for _, id := range onA {
		if _, err := compact.MoveHost(ctx, id, a.name(), b.name()); err != nil {
			t.Fatalf("MoveHost (compact) as the ACL user: %v", err)
		}
	}
	if err := compact.SetTopology(ctx, Topology{Version: 2, Shards: []ShardConfig{b}}); err != nil {
		t.Fatal(err)
	}
	checkHosts(t, compact, ids, written, "compact layout, moved")

	for name, admin := range map[string]*redis.Client{"a": adminA, "b": adminB} {
		if d := aclDenials(t, admin); len(d) > 0 {
			t.Fatalf("shard %s refused the broker's user %d times: %s", name, len(d), strings.Join(d, "; "))
		}
	}

	// The same user is refused what could wipe, reconfigure, stall or
	// stop the server.
	user := redis.NewClient(&redis.Options{Addr: b.Addr, Username: aclUser, Password: aclPassword, Protocol: 2, DisableIdentity: true})
	defer user.Close()
	refused := [][]any{
		{"flushall"}, {"flushdb"}, {"config", "get", "*"}, {"config", "set", "appendonly", "no"},
		{"keys", "*"}, {"debug", "sleep", "0"}, {"shutdown", "nosave"}, {"info"}, {"monitor"},
		{"acl", "setuser", aclUser, "+@all"}, {"replicaof", "127.0.0.1", "1"}, {"migrate", "127.0.0.1", "1", "x", "0", "1"},
		{"client", "kill", "type", "normal"}, {"bgsave"}, {"module", "list"}, {"swapdb", "0", "1"},
		{"set", "other:key", "x"}, // outside ~monitor:*
	}
	for _, cmd := range refused {
		err := user.Do(ctx, cmd...).Err()
		if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%v as the broker's user = %v; want NOPERM", cmd, err)
		}
	}
	if size := adminB.DBSize(ctx).Val(); size == 0 {
		t.Fatal("the data set is empty after the refused commands")
	}
	if d := aclDenials(t, adminB); len(d) < len(refused) {
		t.Fatalf("ACL LOG has %d denials after %d refused commands: %v", len(d), len(refused), d)
	}
	checkHosts(t, compact, ids, written, "after the refused commands")
}

// TestACLWithoutRestore shows that brokerACL is no larger than it must be
// for MoveHost: without +restore everything but moving a host works, and
// the move fails naming the command.
func TestACLWithoutRestore(t *testing.T) {
	rules := brokerACL[:len(brokerACL)-1]
	if brokerACL[len(brokerACL)-1] != "+restore" {
		t.Fatalf("brokerACL %v no longer ends with +restore; update this test", brokerACL)
	}
	a, _ := aclShard(t, rules)
	b, adminB := aclShard(t, rules)
	ctx := ctxT(t)
	now := time.Now().Unix()
	s := openStore(t, Config{Shards: []ShardConfig{a}})
	defer s.Close()
	var ids []string
	for i := range 8 {
		id := fmt.Sprintf("nr-%d", i)
		ids = append(ids, id)
		if err := s.WriteSnapshots(ctx, history(id, now-600, 20, 5)); err != nil {
			t.Fatalf("WriteSnapshots without +restore: %v", err)
		}
	}
	if err := s.SetTopology(ctx, Topology{Version: 1, Shards: []ShardConfig{a, b}, Previous: []ShardConfig{a}}); err != nil {
		t.Fatal(err)
	}
	tried := false
	for _, id := range ids {
		if to := s.OwnerOf(id); to == b.name() {
			tried = true
			_, err := s.MoveHost(ctx, id, a.name(), to)
			if err == nil || !strings.Contains(err.Error(), "NOPERM") || !strings.Contains(strings.ToLower(err.Error()), "restore") {
				t.Fatalf("MoveHost without +restore = %v; want a NOPERM error naming restore", err)
			}
			break
		}
	}
	if !tried {
		t.Fatal("no host changed owner")
	}
	if d := aclDenials(t, adminB); len(d) == 0 {
		t.Fatal("the target shard logged no ACL denial")
	}
}

// checkHosts reads every host through s: its whole history, its latest
// snapshot, its minute rollups, and the host list.
func checkHosts(t *testing.T, s *Store, ids []string, written map[string]int, what string) {
	t.Helper()
	ctx := ctxT(t)
	for _, id := range ids {
		got, err := s.Range(ctx, storage.RangeQuery{HostID: id, From: 0, To: 1 << 62})
		if err != nil {
			t.Fatalf("%s: Range as the ACL user: %v", what, err)
		}
		if len(got) != written[id] {
			t.Fatalf("%s: host %s has %d snapshots, %d were written", what, id, len(got), written[id])
		}
		if _, ok, err := s.Latest(ctx, id); err != nil || !ok {
			t.Fatalf("%s: Latest as the ACL user = %v, %v", what, ok, err)
		}
		rs, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: id, Resolution: storage.Minute, From: 0, To: 1 << 62})
		if err != nil || len(rs) == 0 {
			t.Fatalf("%s: RangeRollup as the ACL user = %d series, %v", what, len(rs), err)
		}
	}
	hs, err := s.Hosts(ctx)
	if err != nil {
		t.Fatalf("%s: Hosts as the ACL user: %v", what, err)
	}
	if len(hs) != len(ids) {
		t.Fatalf("%s: Hosts lists %d hosts, want %d", what, len(hs), len(ids))
	}
}

// TestACLClusterShard runs writes, reads and the scripts against a shard
// that is a Redis Cluster as a user with brokerACL plus what go-redis'
// cluster client asks for (brokerClusterACL).
func TestACLClusterShard(t *testing.T) {
	addrs := startCluster(t)
	ctx := ctxT(t)
	rules := append([]any{"ACL", "SETUSER", aclUser, "on", ">" + aclPassword}, anySlice(brokerACL)...)
	rules = append(rules, anySlice(brokerClusterACL)...)
	var admins []*redis.Client
	for _, a := range addrs {
		admin := rawClient(t, a)
		if err := admin.Do(ctx, rules...).Err(); err != nil {
			t.Fatal(err)
		}
		admins = append(admins, admin)
	}
	sc := ShardConfig{Name: "cluster-acl", Cluster: true, ClusterAddrs: addrs, Username: aclUser, Password: aclPassword}
	s := openStore(t, Config{Shards: []ShardConfig{sc}, ReadFromReplicas: true})
	defer s.Close()
	now := time.Now().Unix()
	written := map[string]int{}
	var ids []string
	for i := range 6 {
		id := fmt.Sprintf("cl-%d", i)
		ids = append(ids, id)
		if _, err := s.RegisterHost(ctx, storage.Host{ID: id}, time.Unix(now-600, 0)); err != nil {
			t.Fatalf("RegisterHost on a cluster as the ACL user: %v", err)
		}
		if err := s.WriteSnapshots(ctx, history(id, now-600, 100, 5)); err != nil {
			t.Fatalf("WriteSnapshots on a cluster as the ACL user: %v", err)
		}
		written[id] = 100
		if _, err := s.Heartbeat(ctx, id, time.Unix(now, 0)); err != nil {
			t.Fatalf("Heartbeat on a cluster as the ACL user: %v", err)
		}
	}
	checkHosts(t, s, ids, written, "cluster shard")
	for i, admin := range admins {
		if d := aclDenials(t, admin); len(d) > 0 {
			t.Fatalf("cluster node %s refused the broker's user: %s", addrs[i], strings.Join(d, "; "))
		}
	}
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
