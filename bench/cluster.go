package main

// Cluster figures: election time after the leader is killed, control-plane
// write latency (at the leader and forwarded by a follower), and the rate
// at which a ring change moves hosts — three bin/broker processes in a Raft
// cluster over real TCP on loopback.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/monitorhq/monitor/internal/redistest"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const (
	benchSecret   = "bench-cluster-secret-0123456789"
	benchAdminPwd = "bench-admin-password"
)

// member is one broker of the bench cluster; it keeps its addresses and
// data dir across restarts.
type member struct {
	id, grpc, raft, dir, spec string
	join                      []string
	cmd                       *exec.Cmd
	done                      chan error
	conn                      *grpc.ClientConn
	cc                        monitorpb.ClusterServiceClient
}

func (h *harness) newMember(id, spec string, join []string) (*member, error) {
	g, err := freeAddr()
	if err != nil {
		return nil, err
	}
	r, err := freeAddr()
	if err != nil {
		return nil, err
	}
	m := &member{id: id, grpc: g, raft: r, dir: filepath.Join(h.tmp, "cluster-"+id), spec: spec, join: join}
	if m.conn, err = grpc.NewClient(g, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, err
	}
	m.cc = monitorpb.NewClusterServiceClient(m.conn)
	return m, os.MkdirAll(m.dir, 0o755)
}

func (h *harness) startMember(m *member) error {
	args := []string{"-grpc", m.grpc, "-raft", m.raft, "-http", "", "-data", m.dir, "-node-id", m.id, "-storage", m.spec, "-log-level", "warn"}
	if len(m.join) > 0 {
		args = append(args, "-join", m.join[0])
	}
	logf, err := os.OpenFile(filepath.Join(m.dir, "broker.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	m.cmd = exec.Command(filepath.Join(h.bin, "broker"), args...)
	m.cmd.Env = append(os.Environ(), "MONITOR_CLUSTER_SECRET="+benchSecret, "MONITOR_ADMIN_PASSWORD="+benchAdminPwd)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start broker %s: %w", m.id, err)
	}
	m.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) {
		done <- cmd.Wait()
		logf.Close()
	}(m.cmd, m.done)
	return nil
}

func (m *member) kill() {
	if m.cmd != nil && m.cmd.ProcessState == nil {
		_ = m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.done
	}
}

func (m *member) stop() {
	if m.cmd != nil && m.cmd.ProcessState == nil {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(20 * time.Second):
			m.kill()
		}
	}
	m.conn.Close()
}

func (m *member) status(ctx context.Context) (*monitorpb.StatusResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return m.cc.Status(cctx, &monitorpb.StatusRequest{})
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) cluster(ctx context.Context) error {
	r2dir := filepath.Join(h.tmp, "redis-2")
	if err := os.MkdirAll(r2dir, 0o755); err != nil {
		return err
	}
	r2, err := redistest.Launch(r2dir)
	if err != nil {
		return err
	}
	defer r2.Stop()
	spec := "redis://" + h.redis.Addr
	b1, err := h.newMember("b1", spec, nil)
	if err != nil {
		return err
	}
	b2, err := h.newMember("b2", spec, []string{b1.grpc})
	if err != nil {
		return err
	}
	b3, err := h.newMember("b3", spec, []string{b1.grpc})
	if err != nil {
		return err
	}
	members := []*member{b1, b2, b3}
	defer func() {
		for _, m := range members {
			m.stop()
		}
	}()
	for _, m := range members {
		if err := h.startMember(m); err != nil {
			return err
		}
	}
	formed := func() error {
		st, err := b1.status(ctx)
		if err != nil {
			return err
		}
		if len(st.GetMembers()) != 3 || st.GetLeaderId() == "" || st.GetRingVersion() < 1 {
			return fmt.Errorf("cluster not formed: %d members, leader %q, ring %d", len(st.GetMembers()), st.GetLeaderId(), st.GetRingVersion())
		}
		return nil
	}
	if err := waitFor(60*time.Second, formed); err != nil {
		return fmt.Errorf("form the bench cluster: %w; b2 log:\n%s", err, tail(filepath.Join(b2.dir, "broker.log")))
	}
	leaderOf := func() (*member, error) {
		st, err := b1.status(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			if m.id == st.GetLeaderId() {
				return m, nil
			}
		}
		return nil, fmt.Errorf("no leader")
	}

	// Control-plane writes: alert rules (a small Raft entry), at the
	// leader and through a follower that forwards them.
	writes := 200
	if h.p.Runs == 1 {
		writes = 20
	}
	leader, err := leaderOf()
	if err != nil {
		return err
	}
	var follower *member
	for _, m := range members {
		if m != leader {
			follower = m
			break
		}
	}
	for _, c := range []struct {
		name string
		m    *member
	}{{"leader", leader}, {"follower (forwarded)", follower}} {
		auth := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+benchSecret)
		var lat []float64
		for i := 0; i < writes; i++ {
			start := time.Now()
			wctx, cancel := context.WithTimeout(auth, 5*time.Second)
			_, err := c.m.cc.PutAlertRule(wctx, &monitorpb.AlertRule{Id: "bench-" + strconv.Itoa(i%20), Metric: "cpu.usage_percent", Op: ">", Threshold: float64(i)})
			cancel()
			if err != nil {
				h.fail("control-plane write at the %s: %v", c.name, err)
				break
			}
			lat = append(lat, float64(time.Since(start).Microseconds())/1000)
		}
		if len(lat) == 0 {
			continue
		}
		slices.Sort(lat)
		h.add(figure{Name: "control-plane write latency p50, " + c.name, Unit: "ms", Runs: []float64{lat[len(lat)/2]},
			Command: fmt.Sprintf("go run ./bench: %d PutAlertRule RPCs in sequence to the %s of 3 bin/broker (Raft over TCP, loopback)", len(lat), c.name),
			Note:    fmt.Sprintf("p99 %.2f ms, max %.2f ms; the write returns when the entry is committed by a quorum and applied on the leader", lat[len(lat)*99/100], lat[len(lat)-1])})
	}

	// Migration: give hosts data, then add a shard and time the move.
	hosts := 300
	dur := 8 * time.Second
	if h.p.Runs == 1 {
		hosts, dur = 40, 2*time.Second
	}
	res, _, _, err := h.loadgenRun(b1.grpc, hosts, dur, "mig")
	if err != nil {
		return err
	}
	if res.Lost > 0 || res.Errors > 0 {
		h.fail("load before the migration: lost %d, errors %d", res.Lost, res.Errors)
	}
	admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:"+benchAdminPwd)))
	actx, cancel := context.WithTimeout(admin, 30*time.Second)
	_, err = b2.cc.AddShard(actx, &monitorpb.Shard{Id: "r2", Addrs: []string{r2.Addr}})
	cancel()
	if err != nil {
		return fmt.Errorf("add shard: %w", err)
	}
	var mig *monitorpb.Migration
	if err := waitFor(5*time.Minute, func() error {
		st, err := b1.status(ctx)
		if err != nil {
			return err
		}
		if m := st.GetMigration(); m.GetRingVersion() == 2 && m.GetDone() {
			mig = m
			return nil
		}
		return errors.New("migration not done")
	}); err != nil {
		return err
	}
	secs := float64(mig.GetFinishedUnixMs()-mig.GetStartedUnixMs())/1000 - 1.0 // less the 1 s settle (2 × heartbeat)
	if secs > 0 && mig.GetHostsMoved() > 0 {
		h.add(figure{Name: "migration rate after adding a shard", Unit: "hosts/s", Runs: []float64{float64(mig.GetHostsMoved()) / secs},
			Command: fmt.Sprintf("go run ./bench: bin/loadgen -hosts %d -interval 0 -duration %s into 1 Redis shard, then monitorctl shard add r2", hosts, dur),
			Note: fmt.Sprintf("%d of %d hosts moved (%.0f%%), %d keys copied in %.2f s (%.0f keys/s); every snapshot of those hosts was %d samples",
				mig.GetHostsMoved(), hosts, 100*float64(mig.GetHostsMoved())/float64(hosts), mig.GetKeysCopied(), secs, float64(mig.GetKeysCopied())/secs, h.p.Metrics)})
	}

	// Elections: kill -9 the leader, time until a survivor names a new one,
	// restart the victim from its data dir, repeat.
	kills := 5
	if h.p.Runs == 1 {
		kills = 1
	}
	var elections []float64
	for i := 0; i < kills; i++ {
		leader, err := leaderOf()
		if err != nil {
			return err
		}
		var survivor *member
		for _, m := range members {
			if m != leader {
				survivor = m
				break
			}
		}
		leader.kill()
		start := time.Now()
		if err := waitFor(30*time.Second, func() error {
			st, err := survivor.status(ctx)
			if err != nil {
				return err
			}
			if st.GetLeaderId() == "" || st.GetLeaderId() == leader.id {
				return fmt.Errorf("no new leader")
			}
			return nil
		}); err != nil {
			return fmt.Errorf("election %d: %w", i+1, err)
		}
		elections = append(elections, float64(time.Since(start).Milliseconds()))
		if err := h.startMember(leader); err != nil {
			return err
		}
		if err := waitFor(60*time.Second, func() error {
			st, err := leader.status(ctx)
			if err != nil {
				return err
			}
			if st.GetLeaderId() == "" || st.GetAppliedIndex() < st.GetCommitIndex() {
				return fmt.Errorf("restarted %s has not caught up", leader.id)
			}
			return formed()
		}); err != nil {
			return fmt.Errorf("restart %s: %w", leader.id, err)
		}
	}
	h.add(figure{Name: "election time after the leader is killed", Unit: "ms", Runs: elections,
		Command: "go run ./bench: kill -9 the leader of 3 bin/broker, poll a survivor's Status every 10 ms until it names a new leader; restart the victim from its data dir; repeat",
		Note:    "heartbeat 500 ms, election timeout 1 s (the seed's): a follower waits one heartbeat timeout without contact, then an election runs"})
	return nil
}
