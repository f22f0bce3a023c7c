package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// ackLog records what the simulated agents saw, per host.
type ackLog struct {
	mu    sync.Mutex
	acked map[string][]int64 // host → acknowledged snapshot timestamps
	fc    map[string]int     // host → FlowControl messages
}

func (l *ackLog) onAck(host string, ts []int64) {
	l.mu.Lock()
	l.acked[host] = append(l.acked[host], ts...)
	l.mu.Unlock()
}

func (l *ackLog) onFlowControl(host string, _ *monitorpb.FlowControl) {
	l.mu.Lock()
	l.fc[host]++
	l.mu.Unlock()
}

// counts returns the number of acknowledged snapshots per host.
func (l *ackLog) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.acked))
	for h, ts := range l.acked {
		out[h] = len(ts)
	}
	return out
}

func (l *ackLog) flowControls(hosts []string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, h := range hosts {
		n += l.fc[h]
	}
	return n
}

// progressed reports the first host of hosts with fewer than n more acks
// than in before ("" when all have them).
func progressed(now, before map[string]int, hosts []string, n int) string {
	for _, h := range hosts {
		if now[h]-before[h] < n {
			return h
		}
	}
	return ""
}

// TestShardOutageUnderLoad runs simulated agents through a real broker onto
// three real redis-server shards, kills one shard under load and restarts
// it: the agents on it get flow control (their streams stay up), hosts on
// the other shards keep being stored meanwhile (one write lane per shard),
// ingest resumes after the restart, and every acknowledged snapshot is in
// Redis at the end. The shards persist with appendfsync always, so what a
// shard acknowledged survives its kill, as it would with replication.
// Part of make test-faults: it logs FIGURE lines (outage, resume, drain).
func TestShardOutageUnderLoad(t *testing.T) {
	defer goleak.VerifyNone(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	var shards []*redistest.Server
	var spec string
	for i := 0; i < 3; i++ {
		s := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
		shards = append(shards, s)
		if i > 0 {
			spec += ","
		}
		spec += "redis://" + s.Addr
	}

	cfg := broker.DefaultConfig()
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen, cfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	cfg.Ingest.RetryAfter = config.Duration(100 * time.Millisecond)
	cfg.Ingest.WriteTimeout = config.Duration(time.Second)
	if err := cfg.SetStorageSpec(spec); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	bctx, stopBroker := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(bctx) }()
	defer func() {
		stopBroker()
		if err := <-bdone; err != nil {
			t.Errorf("broker: %v", err)
		}
	}()

	// The same shard list routes hosts the same way as the broker's store.
	router, err := redisstore.New(ctx, redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: shards[0].Addr}, {Addr: shards[1].Addr}, {Addr: shards[2].Addr}}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer router.Close()

	log := &ackLog{acked: map[string][]int64{}, fc: map[string]int{}}
	g, err := loadgen.New(loadgen.Config{
		Brokers: []string{b.GRPCAddr()}, Hosts: 30, Interval: 100 * time.Millisecond, Conns: 2,
		Prefix: "outage", OnAck: log.onAck, OnFlowControl: log.onFlowControl,
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	byShard := make([][]string, 3)
	for _, h := range g.Hosts() {
		k := router.ShardOf(h)
		byShard[k] = append(byShard[k], h)
	}
	victim := 0
	for k := range byShard {
		if len(byShard[k]) > len(byShard[victim]) {
			victim = k
		}
	}
	var healthy []string
	for k, hs := range byShard {
		if k != victim {
			healthy = append(healthy, hs...)
		}
	}
	t.Logf("hosts per shard %d/%d/%d; stopping shard %d", len(byShard[0]), len(byShard[1]), len(byShard[2]), victim)

	lctx, stopLoad := context.WithCancel(ctx)
	type outcome struct {
		res loadgen.Result
		err error
	}
	ldone := make(chan outcome, 1)
	go func() {
		res, err := g.Run(lctx)
		ldone <- outcome{res, err}
	}()
	var out *outcome
	defer func() {
		if out == nil { // the test failed before the load was stopped
			stopLoad()
			<-ldone
		}
	}()

	all := g.Hosts()
	zero := map[string]int{}
	eventually(t, 15*time.Second, func() error {
		if h := progressed(log.counts(), zero, all, 3); h != "" {
			return fmt.Errorf("host %s has fewer than 3 acks", h)
		}
		return nil
	})

	// Outage: the victim's hosts get flow control, the others keep flowing.
	// It lasts at least MONITOR_FAULTS_OUTAGE (default 5s; make bench-faults
	// runs it longer).
	outage := 5 * time.Second
	if v := os.Getenv("MONITOR_FAULTS_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("MONITOR_FAULTS_OUTAGE=%q: %v", v, err)
		}
		outage = d
	}
	stoppedAt := time.Now()
	shards[victim].Stop()
	eventually(t, 10*time.Second, func() error {
		if n := log.flowControls(byShard[victim]); n == 0 {
			return fmt.Errorf("no flow control yet for the stopped shard's hosts")
		}
		return nil
	})
	during := log.counts()
	eventually(t, 10*time.Second, func() error {
		if h := progressed(log.counts(), during, healthy, 10); h != "" {
			return fmt.Errorf("host %s on a healthy shard stalled while shard %d is down", h, victim)
		}
		return nil
	})
	stalled := log.counts()
	if h := progressed(stalled, during, byShard[victim], 1); h == "" {
		t.Fatalf("every host of the stopped shard was acknowledged during the outage: %v", stalled)
	}

	if d := outage - time.Since(stoppedAt); d > 0 {
		time.Sleep(d) // the outage's length is the fault itself, not a wait for a condition
	}

	// Recovery: the shard comes back with its data; its hosts resume and
	// drain what they held back (drain time: until nothing is unsent and
	// no more than one batch per host is in flight).
	shards[victim].Restart(t)
	restarted := time.Now()
	after := log.counts()
	eventually(t, 15*time.Second+outage, func() error {
		if h := progressed(log.counts(), after, all, 3); h != "" {
			return fmt.Errorf("host %s has not resumed after the restart", h)
		}
		return nil
	})
	resumed := time.Since(restarted)
	eventually(t, 60*time.Second+4*outage, func() error {
		if s := g.Stats(); s.Unsent != 0 || s.Lost > uint64(len(all)) {
			return fmt.Errorf("backlog not drained: %d unsent, %d in flight", s.Unsent, s.Lost)
		}
		return nil
	})
	drained := time.Since(restarted)
	stopLoad()
	o := <-ldone
	out = &o
	if out.err != nil {
		t.Fatal(out.err)
	}
	res := out.res
	t.Logf("loadgen: %s", res)
	if res.Lost != 0 || res.Errors != 0 || res.Rejected != 0 || res.FlowControls == 0 {
		t.Fatalf("want no lost snapshots, no stream errors (flow control keeps streams up), no rejections and some flow control: %s", res)
	}
	st := b.Stats()
	if st.WriteFailures == 0 || st.Queue.WriteErrors == 0 {
		t.Fatalf("broker saw no failed writes: %+v", st)
	}

	// Every acknowledged snapshot is stored, on its host's shard, whole.
	total := 0
	for k, s := range shards {
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
		pipe := rdb.Pipeline()
		type probe struct {
			key string
			n   *redis.IntCmd
		}
		var probes []probe
		log.mu.Lock()
		for _, h := range byShard[k] {
			for _, ts := range log.acked[h] {
				key := fmt.Sprintf("monitor:metrics:%s:%d", h, ts)
				probes = append(probes, probe{key, pipe.HLen(ctx, key)})
			}
		}
		log.mu.Unlock()
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("read shard %d: %v", k, err)
		}
		rdb.Close()
		for _, p := range probes {
			if n := p.n.Val(); n != 50+3 { // 50 metrics + host_id, timestamp, tag:env
				t.Fatalf("acknowledged snapshot %s on shard %d has %d fields, want 53", p.key, k, n)
			}
		}
		total += len(probes)
	}
	if uint64(total) != res.Acked {
		t.Fatalf("checked %d acknowledged snapshots, loadgen counted %d", total, res.Acked)
	}
	t.Logf("verified %d acknowledged snapshots; broker: write failures %d, flow control %d, queue refusals %v",
		total, st.WriteFailures, st.FlowControlSent, st.Queue.Refused)
	t.Logf("FIGURE shard_outage_agent_streams=%d streams", len(all))
	t.Logf("FIGURE shard_outage_hosts_on_stopped_shard=%d hosts", len(byShard[victim]))
	t.Logf("FIGURE shard_outage_ms=%d ms", restarted.Sub(stoppedAt).Milliseconds())
	t.Logf("FIGURE shard_outage_flow_control=%d messages", res.FlowControls)
	t.Logf("FIGURE shard_outage_resume_ms=%d ms", resumed.Milliseconds())
	t.Logf("FIGURE shard_outage_drain_ms=%d ms", drained.Milliseconds())
	t.Logf("FIGURE shard_outage_acked_snapshots=%d snapshots", total)
	t.Logf("FIGURE shard_outage_lost=%d snapshots", res.Lost)
}
