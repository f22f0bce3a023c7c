package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func apply(t *testing.T, f *FSM, idx uint64, typ monitorpb.CommandType, m proto.Message) any {
	t.Helper()
	b, err := Encode(typ, m)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b})
}

func TestFSMCommandsSnapshotRestore(t *testing.T) {
	f := NewFSM()
	steps := []struct {
		typ monitorpb.CommandType
		msg proto.Message
	}{
		{monitorpb.CommandType_COMMAND_TYPE_PUT_MEMBER, &monitorpb.Member{Id: "b2", GrpcAddr: "10.0.0.2:9093", RaftAddr: "10.0.0.2:9094"}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_MEMBER, &monitorpb.Member{Id: "b1", GrpcAddr: "10.0.0.1:9093", RaftAddr: "10.0.0.1:9094"}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_SHARD, &monitorpb.Shard{Id: "s1", Addrs: []string{"r1:6379"}}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_SHARD, &monitorpb.Shard{Id: "s2", Addrs: []string{"r2:6379"}}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_MIGRATION, &monitorpb.Migration{RingVersion: 2, Done: true}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_SHARD, &monitorpb.Shard{Id: "s1", Addrs: []string{"r1:6379"}, Draining: true}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_MIGRATION, &monitorpb.Migration{RingVersion: 3, HostsMoved: 7, Done: true}},
		{monitorpb.CommandType_COMMAND_TYPE_REMOVE_SHARD, &monitorpb.RemoveShard{Id: "s1"}},
		{monitorpb.CommandType_COMMAND_TYPE_REMOVE_SHARD, &monitorpb.RemoveShard{Id: "absent"}}, // no ring change
		{monitorpb.CommandType_COMMAND_TYPE_REGISTER_HOST, &monitorpb.RegisteredHost{HostId: "web-1", LastRegistered: 100}},
		{monitorpb.CommandType_COMMAND_TYPE_REGISTER_HOST, &monitorpb.RegisteredHost{HostId: "web-1", Hostname: "w", LastRegistered: 200}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING, &monitorpb.Setting{Key: "k", Value: "v1"}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING, &monitorpb.Setting{Key: "k", Value: "v2"}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_ALERT_RULE, &monitorpb.AlertRule{Id: "r1", Metric: "cpu.usage_percent", Op: ">", Threshold: 90}},
		{monitorpb.CommandType_COMMAND_TYPE_PUT_ALERT_RULE, &monitorpb.AlertRule{Id: "r2", Metric: "mem.used_percent", Op: ">", Threshold: 95}},
		{monitorpb.CommandType_COMMAND_TYPE_DELETE_ALERT_RULE, &monitorpb.DeleteAlertRule{Id: "r1"}},
		{monitorpb.CommandType_COMMAND_TYPE_REMOVE_MEMBER, &monitorpb.RemoveMember{Id: "b2"}},
	}
	for i, s := range steps {
		if r := apply(t, f, uint64(i+1), s.typ, s.msg); r != nil {
			t.Fatalf("step %d: %v", i, r)
		}
	}
	want := &monitorpb.ControlState{
		Members:     []*monitorpb.Member{{Id: "b1", GrpcAddr: "10.0.0.1:9093", RaftAddr: "10.0.0.1:9094"}},
		Shards:      []*monitorpb.Shard{{Id: "s2", Addrs: []string{"r2:6379"}}},
		RingVersion: 3,
		Migration:   &monitorpb.Migration{RingVersion: 3, HostsMoved: 7, Done: true},
		Hosts:       []*monitorpb.RegisteredHost{{HostId: "web-1", Hostname: "w", FirstRegistered: 100, LastRegistered: 200}},
		Settings:    []*monitorpb.Setting{{Key: "k", Value: "v2"}},
		AlertRules:  []*monitorpb.AlertRule{{Id: "r2", Metric: "mem.used_percent", Op: ">", Threshold: 95}},
	}
	if got := f.State(); !proto.Equal(got, want) {
		t.Fatalf("state =\n%v\nwant\n%v", got, want)
	}
	// Malformed entries change nothing and say why.
	if r := f.Apply(&raft.Log{Index: 99, Type: raft.LogCommand, Data: []byte{200, 1}}); r == nil {
		t.Fatal("unknown command type accepted")
	}
	if r := f.Apply(&raft.Log{Index: 99, Type: raft.LogCommand, Data: []byte{byte(monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING), 0xff}}); r == nil {
		t.Fatal("garbage payload accepted")
	}
	if got := f.State(); !proto.Equal(got, want) {
		t.Fatal("a malformed entry changed the state")
	}

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	apply(t, f, 100, monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING, &monitorpb.Setting{Key: "after", Value: "x"}) // not in the snapshot
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if got := g.State(); !proto.Equal(got, want) {
		t.Fatalf("restored state =\n%v\nwant\n%v", got, want)
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte{0xff, 0xff}))); err == nil {
		t.Fatal("corrupt snapshot restored")
	}
}

// TestFSMRingChanges checks the shard rules: a ring change starts a
// migration, one at a time; a shard leaves the ring by draining and leaves
// the cluster only when drained; progress of an old ring change is refused.
func TestFSMRingChanges(t *testing.T) {
	shard := func(id string, draining bool) *monitorpb.Shard {
		return &monitorpb.Shard{Id: id, Addrs: []string{id + ":6379"}, Draining: draining}
	}
	const (
		put     = monitorpb.CommandType_COMMAND_TYPE_PUT_SHARD
		remove  = monitorpb.CommandType_COMMAND_TYPE_REMOVE_SHARD
		migrate = monitorpb.CommandType_COMMAND_TYPE_PUT_MIGRATION
	)
	f := NewFSM()
	idx := uint64(0)
	ok := func(typ monitorpb.CommandType, m proto.Message) {
		t.Helper()
		idx++
		if r := apply(t, f, idx, typ, m); r != nil {
			t.Fatalf("%s %v: %v", typ, m, r)
		}
	}
	refused := func(typ monitorpb.CommandType, m proto.Message, want string) {
		t.Helper()
		before := f.State()
		idx++
		r := apply(t, f, idx, typ, m)
		err, _ := r.(error)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s %v = %v, want an error containing %q", typ, m, r, want)
		}
		if !proto.Equal(f.State(), before) {
			t.Fatalf("refused %s changed the state", typ)
		}
	}
	ok(put, shard("a", false))
	if m := f.State().GetMigration(); !m.GetDone() || f.State().GetRingVersion() != 1 {
		t.Fatalf("first shard: migration %v, ring %d; want nothing to move at ring 1", m, f.State().GetRingVersion())
	}
	ok(put, shard("b", false))
	m := f.State().GetMigration()
	if m.GetDone() || m.GetRingVersion() != 2 || !slices.Equal(m.GetFromShards(), []string{"a"}) || !slices.Equal(m.GetToShards(), []string{"a", "b"}) {
		t.Fatalf("adding b: migration %v", m)
	}
	ok(put, &monitorpb.Shard{Id: "b", Addrs: []string{"b2:6379"}}) // a new address is not a ring change
	refused(put, shard("c", false), "still moving hosts")
	refused(remove, &monitorpb.RemoveShard{Id: "a"}, "drain it first")
	refused(migrate, &monitorpb.Migration{RingVersion: 1, Done: true}, "stale")
	ok(migrate, &monitorpb.Migration{RingVersion: 2, Done: true})
	ok(put, shard("a", true))
	if st := f.State(); st.GetRingVersion() != 3 || !slices.Equal(RingOf(st.GetShards()), []string{"b"}) {
		t.Fatalf("draining a: ring %d %v", st.GetRingVersion(), RingOf(st.GetShards()))
	}
	refused(remove, &monitorpb.RemoveShard{Id: "a"}, "still draining")
	refused(put, shard("b", true), "last shard")
	ok(migrate, &monitorpb.Migration{RingVersion: 3, Done: true})
	ok(remove, &monitorpb.RemoveShard{Id: "a"})
	if st := f.State(); len(st.GetShards()) != 1 || st.GetRingVersion() != 3 {
		t.Fatalf("after removing a: %v", st)
	}
}

// cluster is a set of real Raft nodes over TCP on loopback.
type cluster struct {
	t     *testing.T
	nodes map[string]*Node
	dirs  map[string]string
	addrs map[string]string
	cfg   func(id string) NodeConfig
}

func newCluster(t *testing.T, ids ...string) *cluster { return newClusterWith(t, nil, ids...) }

// newClusterWith is newCluster with mod applied to every node's config.
func newClusterWith(t *testing.T, mod func(*NodeConfig), ids ...string) *cluster {
	c := &cluster{t: t, nodes: map[string]*Node{}, dirs: map[string]string{}, addrs: map[string]string{}}
	c.cfg = func(id string) NodeConfig {
		cfg := NodeConfig{ID: id, BindAddr: c.addrs[id], DataDir: c.dirs[id], HeartbeatTimeout: 500 * time.Millisecond,
			ElectionTimeout: time.Second, SnapshotThreshold: 32, TrailingLogs: 8, SnapshotInterval: time.Hour}
		if mod != nil {
			mod(&cfg)
		}
		return cfg
	}
	for i, id := range ids {
		c.dirs[id] = t.TempDir()
		c.addrs[id] = freeAddr(t)
		cfg := c.cfg(id)
		cfg.Bootstrap = i == 0
		c.start(id, cfg)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Shutdown()
		}
	})
	leader := c.waitLeader(nil)
	for _, id := range ids[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := leader.AddVoter(ctx, id, c.addrs[id]); err != nil {
			t.Fatalf("join %s: %v", id, err)
		}
		cancel()
	}
	return c
}

func (c *cluster) start(id string, cfg NodeConfig) {
	n, err := Start(cfg, quiet)
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.nodes[id] = n
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitLeader waits until exactly one live node leads (excluding skip).
func (c *cluster) waitLeader(skip *Node) *Node {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var leaders []*Node
		for _, n := range c.nodes {
			if n != skip && n.IsLeader() {
				leaders = append(leaders, n)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no single leader within 15 s")
	return nil
}

// waitConverged waits until every live node has applied the same state.
func (c *cluster) waitConverged(want *monitorpb.ControlState) {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		for _, n := range c.nodes {
			if !proto.Equal(n.FSM().State(), want) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for id, n := range c.nodes {
				c.t.Logf("%s: %d settings", id, len(n.FSM().State().GetSettings()))
			}
			c.t.Fatal("nodes did not converge")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func put(ctx context.Context, n *Node, k, v string) error {
	return n.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING, &monitorpb.Setting{Key: k, Value: v})
}

func TestClusterReplicatesFailsOverAndCatchesUp(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	leader := c.waitLeader(nil)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if err := put(ctx, leader, fmt.Sprintf("k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	// A follower refuses writes and names the leader.
	for _, n := range c.nodes {
		if n != leader {
			err := put(ctx, n, "x", "y")
			var nl *NotLeaderError
			if !errors.As(err, &nl) || nl.LeaderID != leader.ID() {
				t.Fatalf("write on follower: %v", err)
			}
			break
		}
	}
	c.waitConverged(leader.FSM().State())
	st, err := leader.Status()
	if err != nil || len(st.Servers) != 3 || st.State != "Leader" || st.Term == 0 {
		t.Fatalf("status: %+v %v", st, err)
	}

	// Kill the leader: a new one is elected and has every acknowledged write.
	oldID := leader.ID()
	start := time.Now()
	leader.Shutdown()
	delete(c.nodes, oldID)
	leader = c.waitLeader(nil)
	t.Logf("new leader %s elected %.2fs after the old one stopped", leader.ID(), time.Since(start).Seconds())
	for i := 0; i < 10; i++ {
		if v, ok := leader.FSM().Setting(fmt.Sprintf("k%02d", i)); !ok || v != "v" {
			t.Fatalf("acknowledged write k%02d lost after failover", i)
		}
	}
	// Enough writes while the old leader is down to force a snapshot and
	// compact the log past what it has: it must catch up by snapshot.
	for i := 10; i < 80; i++ {
		if err := put(ctx, leader, fmt.Sprintf("k%02d", i), "w"); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// Restart the old leader from its data dir: it rejoins and catches up.
	c.start(oldID, c.cfg(oldID))
	c.waitConverged(leader.FSM().State())
	if got := len(c.nodes[oldID].FSM().State().GetSettings()); got != 80 {
		t.Fatalf("restarted node has %d settings, want 80", got)
	}
}
