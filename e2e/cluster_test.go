package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/hash"
	"github.com/monitorhq/monitor/pkg/loadgen"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const (
	testSecret   = "e2e-cluster-secret-0123456789"
	testAdminPwd = "e2e-admin-password"
)

type runningBroker struct {
	b    *broker.Broker
	stop context.CancelFunc
	done chan error
}

func startClusterBroker(t *testing.T, id, spec string, join []string, logger *slog.Logger) *runningBroker {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.NodeID = id
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen = "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Raft.Join = join
	cfg.Cluster.Secret, cfg.Cluster.AdminPassword = testSecret, testAdminPwd
	cfg.Ingest.RetryAfter = config.Duration(100 * time.Millisecond)
	if err := cfg.SetStorageSpec(spec); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(context.Background(), cfg, logger.With("broker", id))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	rb := &runningBroker{b: b, stop: stop, done: make(chan error, 1)}
	go func() { rb.done <- b.Run(ctx) }()
	return rb
}

func (rb *runningBroker) shutdown(t *testing.T) {
	rb.stop()
	if err := <-rb.done; err != nil {
		t.Errorf("broker: %v", err)
	}
}

func clusterClient(t *testing.T, addr string) (monitorpb.ClusterServiceClient, monitorpb.MonitorServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return monitorpb.NewClusterServiceClient(conn), monitorpb.NewMonitorServiceClient(conn)
}

// TestClusterAddsShardUnderLoad forms a three-broker cluster from one
// bootstrap and two joins (real Raft over TCP) over two real redis-server
// shards, runs simulated agents against all three brokers, and adds a third
// shard through a follower (forwarded to the leader) while they write. It
// checks: about a third of the hosts move (1/(N+1) for N = 2 shards), every
// range query made during the move returns every snapshot that existed when
// the move began, no acknowledged snapshot is lost, and afterwards each
// moved host's keys are on the new shard only.
func TestClusterAddsShardUnderLoad(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // registered first, so it runs after the other cleanups
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r1, r2, r3 := redistest.Start(t), redistest.Start(t), redistest.Start(t)
	spec := "redis://" + r1.Addr + ",redis://" + r2.Addr

	b1 := startClusterBroker(t, "b1", spec, nil, logger)
	defer b1.shutdown(t)
	b2 := startClusterBroker(t, "b2", spec, []string{b1.b.GRPCAddr()}, logger)
	defer b2.shutdown(t)
	b3 := startClusterBroker(t, "b3", spec, []string{b2.b.GRPCAddr()}, logger) // joins through a follower
	defer b3.shutdown(t)

	cc1, mc1 := clusterClient(t, b1.b.GRPCAddr())
	cc2, mc2 := clusterClient(t, b2.b.GRPCAddr())
	_, mc3 := clusterClient(t, b3.b.GRPCAddr())
	eventually(t, 30*time.Second, func() error {
		st, err := cc1.Status(ctx, &monitorpb.StatusRequest{})
		if err != nil {
			return err
		}
		if len(st.GetMembers()) != 3 || st.GetLeaderId() == "" || st.GetRingVersion() != 1 {
			return fmt.Errorf("members %d, leader %q, ring %d", len(st.GetMembers()), st.GetLeaderId(), st.GetRingVersion())
		}
		for _, m := range st.GetMembers() {
			if m.GetMember().GetGrpcAddr() == "" {
				return fmt.Errorf("member %s has no gRPC address yet", m.GetMember().GetId())
			}
		}
		return nil
	})

	log := &ackLog{acked: map[string][]int64{}, fc: map[string]int{}}
	g, err := loadgen.New(loadgen.Config{
		Brokers: []string{b1.b.GRPCAddr(), b2.b.GRPCAddr(), b3.b.GRPCAddr()}, Hosts: 90, Interval: 250 * time.Millisecond,
		Conns: 3, Metrics: 20, Prefix: "mv", OnAck: log.onAck, OnFlowControl: log.onFlowControl,
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	hosts := g.Hosts()
	// Register the hosts as agents do, through all three brokers: the
	// registry is replicated through Raft (followers forward to the leader).
	for i, h := range hosts {
		mc := []monitorpb.MonitorServiceClient{mc1, mc2, mc3}[i%3]
		if _, err := mc.Register(ctx, &monitorpb.RegisterRequest{Host: &monitorpb.HostInfo{HostId: h, Hostname: h + ".example"}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, func() error {
		st, err := cc1.Status(ctx, &monitorpb.StatusRequest{})
		if err != nil {
			return err
		}
		n := uint64(0)
		for _, c := range st.GetShardHosts() {
			n += c
		}
		if n != uint64(len(hosts)) {
			return fmt.Errorf("%d of %d hosts in the cluster registry", n, len(hosts))
		}
		return nil
	})
	lctx, stopLoad := context.WithCancel(ctx)
	var res loadgen.Result
	ldone := make(chan error, 1)
	go func() {
		var err error
		res, err = g.Run(lctx)
		ldone <- err
	}()
	loadStopped := false
	defer func() {
		if !loadStopped {
			stopLoad()
			<-ldone
		}
	}()
	zero := map[string]int{}
	eventually(t, 30*time.Second, func() error {
		if h := progressed(log.counts(), zero, hosts, 4); h != "" {
			return fmt.Errorf("host %s has fewer than 4 acks", h)
		}
		return nil
	})

	// What exists before the move: per host, the acknowledged timestamps.
	before := map[string][]int64{}
	log.mu.Lock()
	for h, ts := range log.acked {
		before[h] = slices.Sorted(slices.Values(ts))
	}
	log.mu.Unlock()

	// Readers query hosts through two brokers for the whole move.
	var (
		readers    sync.WaitGroup
		queries    atomic.Int64
		incomplete atomic.Int64
		readErrs   atomic.Int64
		firstBad   atomic.Value
	)
	rctx, stopReaders := context.WithCancel(ctx)
	for i, mc := range []monitorpb.MonitorServiceClient{mc1, mc3} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for n := i; rctx.Err() == nil; n++ {
				h := hosts[n%len(hosts)]
				want := before[h]
				if len(want) == 0 {
					continue
				}
				qctx, qcancel := context.WithTimeout(rctx, 10*time.Second)
				resp, err := mc.QueryRange(qctx, &monitorpb.QueryRangeRequest{HostId: h, Names: []string{"cpu.usage_percent"},
					From: want[0], To: want[len(want)-1], Resolution: monitorpb.Resolution_RESOLUTION_RAW})
				qcancel()
				if rctx.Err() != nil {
					return
				}
				queries.Add(1)
				if err != nil {
					readErrs.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("query %s: %v", h, err))
					continue
				}
				got := map[int64]bool{}
				for _, s := range resp.GetSeries() {
					for _, p := range s.GetPoints() {
						got[p.GetTimestamp()] = true
					}
				}
				for _, ts := range want {
					if !got[ts] {
						incomplete.Add(1)
						firstBad.CompareAndSwap(nil, fmt.Sprintf("host %s: snapshot %d missing during the move (%d of %d returned)", h, ts, len(got), len(want)))
						break
					}
				}
			}
		}()
	}

	// Add the third shard through a follower-or-leader (b2), as an admin.
	admin := metadata.AppendToOutgoingContext(ctx, "authorization",
		"Basic "+base64.StdEncoding.EncodeToString([]byte("admin:"+testAdminPwd)))
	if _, err := cc2.AddShard(ctx, &monitorpb.Shard{Id: "r3", Addrs: []string{r3.Addr}}); err == nil {
		t.Fatal("AddShard without credentials was accepted")
	}
	start := time.Now()
	st, err := cc2.AddShard(admin, &monitorpb.Shard{Id: "r3", Addrs: []string{r3.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetRingVersion() != 2 {
		t.Fatalf("ring version after adding a shard = %d, want 2", st.GetRingVersion())
	}
	// Wait for the migration to finish (the Watch stream).
	w, err := cc1.Watch(ctx, &monitorpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var final *monitorpb.StatusResponse
	for {
		s, err := w.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if m := s.GetMigration(); m.GetRingVersion() == 2 && m.GetDone() {
			final = s
			break
		}
	}
	took := time.Since(start)
	// Keep writing and reading a little on the new ring.
	after := log.counts()
	eventually(t, 30*time.Second, func() error {
		if h := progressed(log.counts(), after, hosts, 2); h != "" {
			return fmt.Errorf("host %s stalled after the move", h)
		}
		return nil
	})
	stopReaders()
	readers.Wait()
	stopLoad()
	loadStopped = true
	if err := <-ldone; err != nil {
		t.Fatal(err)
	}

	m := final.GetMigration()
	t.Logf("migration: %d hosts moved, %d keys copied in %s (%.1f hosts/s); %d range queries during the move; load %s",
		m.GetHostsMoved(), m.GetKeysCopied(), took.Round(time.Millisecond), float64(m.GetHostsMoved())/took.Seconds(), queries.Load(), res)
	if v := firstBad.Load(); v != nil {
		t.Errorf("during the move: %d of %d queries incomplete, %d failed; first: %s", incomplete.Load(), queries.Load(), readErrs.Load(), v)
	}
	if queries.Load() == 0 {
		t.Error("no range query ran during the move")
	}

	// About 1/(N+1) of the hosts moved, all of them to r3.
	oldRing, _ := hash.New([]string{r1.Addr, r2.Addr}, hash.DefaultVirtualNodes)
	newRing, _ := hash.New([]string{r1.Addr, r2.Addr, "r3"}, hash.DefaultVirtualNodes)
	moved := 0
	for _, h := range hosts {
		if o, n := oldRing.Lookup(h), newRing.Lookup(h); o != n {
			moved++
			if n != "r3" {
				t.Errorf("host %s moved from %s to %s, not to the new shard", h, o, n)
			}
		}
	}
	frac := float64(moved) / float64(len(hosts))
	t.Logf("moved fraction %.2f (%d of %d hosts; ideal 1/3)", frac, moved, len(hosts))
	if frac < 0.1 || frac > 0.55 { // shard names are random ports: the new shard's share of the ring varies
		t.Errorf("moved fraction %.2f is far from 1/3", frac)
	}
	if int(m.GetHostsMoved()) != moved {
		t.Errorf("migration reports %d hosts moved; the rings say %d", m.GetHostsMoved(), moved)
	}
	if got := final.GetShardHosts()["r3"]; got != uint64(moved) {
		t.Errorf("status shows %d registered hosts on r3, want %d: %v", got, moved, final.GetShardHosts())
	}

	// Nothing acknowledged is lost: every acked snapshot is readable, and a
	// moved host's keys are on r3 only.
	if res.Lost != 0 || res.Dropped != 0 {
		t.Errorf("load generator: lost %d, dropped %d", res.Lost, res.Dropped)
	}
	log.mu.Lock()
	acked := map[string][]int64{}
	for h, ts := range log.acked {
		acked[h] = slices.Clone(ts)
	}
	log.mu.Unlock()
	total := 0
	for _, h := range hosts {
		ts := acked[h]
		slices.Sort(ts)
		resp, err := mc1.QueryRange(ctx, &monitorpb.QueryRangeRequest{HostId: h, Names: []string{"cpu.usage_percent"},
			From: ts[0], To: ts[len(ts)-1], Resolution: monitorpb.Resolution_RESOLUTION_RAW})
		if err != nil {
			t.Fatalf("query %s: %v", h, err)
		}
		got := map[int64]bool{}
		for _, s := range resp.GetSeries() {
			for _, p := range s.GetPoints() {
				got[p.GetTimestamp()] = true
			}
		}
		for _, x := range ts {
			if !got[x] {
				t.Errorf("host %s: acknowledged snapshot %d is lost", h, x)
				break
			}
		}
		total += len(ts)
		owner := newRing.Lookup(h)
		for _, srv := range []*redistest.Server{r1, r2, r3} {
			name := srv.Addr
			if srv == r3 {
				name = "r3"
			}
			n, err := redistest.Do(ctx, srv.Addr, "EXISTS monitor:index:metrics:"+h)
			if err != nil {
				t.Fatal(err)
			}
			if (strings.TrimSpace(n) == ":1") != (name == owner) {
				t.Errorf("host %s (owner %s): index on %s exists=%s", h, owner, name, n)
			}
		}
	}
	t.Logf("%d acknowledged snapshots checked", total)
}
