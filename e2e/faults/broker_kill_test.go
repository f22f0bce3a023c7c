package faults

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/loadgen"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const (
	clusterSecret = "faults-cluster-secret-0123456789"
	adminPassword = "faults-admin-password"
)

// brokerList resolves "faults:///N" to every broker, the list rotated by N,
// so loadgen's connections start on different brokers and gRPC's
// pick_first moves a connection to the next broker when its own dies: the
// agents' failover, for simulated agents.
type brokerList struct {
	mu    sync.Mutex
	addrs []string
}

var brokers = &brokerList{}

func init() { resolver.Register(brokers) }

func (b *brokerList) set(addrs []string) {
	b.mu.Lock()
	b.addrs = addrs
	b.mu.Unlock()
}

func (b *brokerList) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(target.Endpoint(), "/"))
	if err != nil {
		return nil, fmt.Errorf("faults resolver: target %q: %w", target.Endpoint(), err)
	}
	b.mu.Lock()
	var st resolver.State
	for i := range b.addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: b.addrs[(n+i)%len(b.addrs)]})
	}
	b.mu.Unlock()
	if err := cc.UpdateState(st); err != nil {
		return nil, err
	}
	return nopResolver{}, nil
}

func (*brokerList) Scheme() string { return "faults" }

type nopResolver struct{}

func (nopResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (nopResolver) Close()                                {}

// member is one broker process of the cluster.
type member struct {
	id, grpc, raft string
	p              *proc
	cc             monitorpb.ClusterServiceClient
}

func startMember(t *testing.T, id, spec string, join string) *member {
	t.Helper()
	m := &member{id: id, grpc: freeAddr(t), raft: freeAddr(t)}
	args := []string{"-grpc", m.grpc, "-raft", m.raft, "-http", "", "-data", t.TempDir(), "-node-id", id, "-storage", spec, "-log-level", "warn"}
	if join != "" {
		args = append(args, "-join", join)
	}
	m.p = startProc(t, id, []string{"MONITOR_CLUSTER_SECRET=" + clusterSecret, "MONITOR_ADMIN_PASSWORD=" + adminPassword}, args...)
	conn, err := grpc.NewClient(m.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m.cc = monitorpb.NewClusterServiceClient(conn)
	return m
}

func (m *member) status() (*monitorpb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return m.cc.Status(ctx, &monitorpb.StatusRequest{})
}

// TestBrokerSIGKILLUnderAgentStreams runs three broker processes in one
// Raft cluster over one Redis shard, streams simulated agents into all
// three, and SIGKILLs the Raft leader under load. The agents' connections
// on it move to the other brokers (reconnect figures), they resend what was
// not acknowledged, and at the end every acknowledged snapshot is in Redis,
// whole, and no snapshot is stored twice (stored keys per host = distinct
// acknowledged timestamps).
func TestBrokerSIGKILLUnderAgentStreams(t *testing.T) {
	noLeaks(t)
	hosts, conns, hold := 60, 6, 3*time.Second
	if long() {
		hosts, conns, hold = 300, 12, 15*time.Second
	}
	const metrics = 20
	rs := redistest.Start(t)
	spec := "redis://" + rs.Addr
	b1 := startMember(t, "b1", spec, "")
	eventually(t, 30*time.Second, func() error {
		st, err := b1.status()
		if err != nil {
			return err
		}
		if st.GetLeaderId() != "b1" {
			return fmt.Errorf("leader %q", st.GetLeaderId())
		}
		return nil
	})
	b2 := startMember(t, "b2", spec, b1.grpc)
	b3 := startMember(t, "b3", spec, b1.grpc)
	members := []*member{b1, b2, b3}
	eventually(t, 60*time.Second, func() error {
		for _, m := range members {
			st, err := m.status()
			if err != nil {
				return fmt.Errorf("%s: %w", m.id, err)
			}
			if len(st.GetMembers()) != 3 || st.GetLeaderId() == "" {
				return fmt.Errorf("%s sees %d members, leader %q", m.id, len(st.GetMembers()), st.GetLeaderId())
			}
		}
		return nil
	})
	st, _ := b1.status()
	victim := members[0]
	for _, m := range members {
		if m.id == st.GetLeaderId() {
			victim = m
		}
	}
	var addrs []string
	victimRot := 0
	for i, m := range members {
		addrs = append(addrs, m.grpc)
		if m == victim {
			victimRot = i
		}
	}
	brokers.set(addrs)

	log := newAckLog()
	targets := []string{"faults:///0", "faults:///1", "faults:///2"}
	g, err := loadgen.New(loadgen.Config{
		Brokers: targets, Hosts: hosts, Interval: 200 * time.Millisecond, Conns: conns, Metrics: metrics,
		Drain: 30 * time.Second, Prefix: "kill", OnAck: log.onAck,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	all := g.Hosts()
	// Hosts whose connection starts on the victim: host i uses connection
	// i%conns, connection j the target j%3, whose first broker is addrs[j%3].
	var onVictim []string
	for i, h := range all {
		if (i%conns)%len(targets) == victimRot {
			onVictim = append(onVictim, h)
		}
	}
	lctx, stopLoad := context.WithCancel(context.Background())
	type outcome struct {
		res loadgen.Result
		err error
	}
	ldone := make(chan outcome, 1)
	go func() {
		res, err := g.Run(lctx)
		ldone <- outcome{res, err}
	}()
	stopped := false
	defer func() {
		if !stopped {
			stopLoad()
			<-ldone
		}
	}()
	zero := map[string]int{}
	eventually(t, 60*time.Second, func() error {
		if h := behind(log.counts(), zero, all, 3); h != "" {
			return fmt.Errorf("host %s has fewer than 3 acks", h)
		}
		return nil
	})

	// SIGKILL the leader under load.
	mark := log.setMark()
	victim.p.kill()
	before := log.counts()
	eventually(t, 60*time.Second, func() error {
		if h := behind(log.counts(), before, all, 3); h != "" {
			return fmt.Errorf("host %s has not resumed after the kill", h)
		}
		return nil
	})
	var reconnect []time.Duration
	log.mu.Lock()
	for _, h := range onVictim {
		reconnect = append(reconnect, log.first[h].Sub(mark))
	}
	log.mu.Unlock()
	// The survivors elect a leader.
	var survivors []*member
	for _, m := range members {
		if m != victim {
			survivors = append(survivors, m)
		}
	}
	eventually(t, 30*time.Second, func() error {
		st, err := survivors[0].status()
		if err != nil {
			return err
		}
		if st.GetLeaderId() == "" || st.GetLeaderId() == victim.id {
			return fmt.Errorf("leader %q", st.GetLeaderId())
		}
		return nil
	})
	election := time.Since(mark)
	// Keep the load on the two survivors for a while (hold's worth of
	// snapshots per host).
	during := log.counts()
	eventually(t, 10*hold+30*time.Second, func() error {
		if h := behind(log.counts(), during, all, int(hold/(200*time.Millisecond))); h != "" {
			return fmt.Errorf("host %s stalled on the survivors", h)
		}
		return nil
	})
	stopLoad()
	stopped = true
	out := <-ldone
	if out.err != nil {
		t.Fatal(out.err)
	}
	res := out.res
	t.Logf("loadgen: %s", res)

	// Every acknowledged snapshot is stored whole; nothing is stored twice.
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	var lost, dups, repeated, checked int
	for _, h := range all {
		acked, rep := log.distinct(h)
		repeated += rep
		idx, err := rdb.ZRangeWithScores(ctx, "monitor:index:metrics:"+h, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys, err := scanCount(ctx, rdb, "monitor:metrics:"+h+":*")
		if err != nil {
			t.Fatal(err)
		}
		stored := map[int64]bool{}
		for _, z := range idx {
			stored[int64(z.Score)] = true
		}
		pipe := rdb.Pipeline()
		lens := map[int64]*redis.IntCmd{}
		for ts := range acked {
			lens[ts] = pipe.HLen(ctx, fmt.Sprintf("monitor:metrics:%s:%d", h, ts))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		for ts, n := range lens {
			checked++
			if !stored[ts] || n.Val() != metrics+3 { // + host_id, timestamp, tag:env
				lost++
				if lost <= 5 {
					t.Errorf("host %s: acknowledged snapshot %d: indexed %v, %d fields", h, ts, stored[ts], n.Val())
				}
			}
		}
		if extra := keys - len(acked); extra > 0 {
			dups += extra
		}
		if keys != len(idx) {
			t.Errorf("host %s: %d snapshot keys but %d index entries", h, keys, len(idx))
		}
	}
	p := func(q float64) int64 { return quantile(reconnect, q).Milliseconds() }
	figure(t, "kill_agent_streams", hosts, "streams")
	figure(t, "kill_brokers", len(members), "brokers")
	figure(t, "kill_streams_on_victim", len(onVictim), "streams")
	figure(t, "kill_reconnect_p50_ms", p(0.5), "ms")
	figure(t, "kill_reconnect_p99_ms", p(0.99), "ms")
	figure(t, "kill_reconnect_max_ms", p(1), "ms")
	figure(t, "kill_election_ms", election.Milliseconds(), "ms")
	figure(t, "kill_acked_snapshots", checked, "snapshots")
	figure(t, "kill_resent_batches", res.Resent, "batches")
	figure(t, "kill_acks_repeated", repeated, "snapshots")
	figure(t, "kill_lost", lost, "snapshots")
	figure(t, "kill_duplicates_stored", dups, "snapshots")
	if res.Lost != 0 || res.Rejected != 0 || res.Dropped != 0 {
		t.Fatalf("load generator: lost %d (sent, never acknowledged), rejected %d, dropped %d", res.Lost, res.Rejected, res.Dropped)
	}
	if lost != 0 || dups != 0 {
		t.Fatalf("%d acknowledged snapshots lost, %d stored twice", lost, dups)
	}
	if len(onVictim) == 0 || res.Reconnects == 0 {
		t.Fatalf("no stream was on the killed broker (%d) or reconnected (%d)", len(onVictim), res.Reconnects)
	}
}

// scanCount counts the keys matching pattern (SCAN, not KEYS).
func scanCount(ctx context.Context, rdb *redis.Client, pattern string) (int, error) {
	n := 0
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return 0, err
		}
		n += len(keys)
		if cursor = next; cursor == 0 {
			return n, nil
		}
	}
}
