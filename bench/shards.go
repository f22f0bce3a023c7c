package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
)

// shards measures ingest onto three Redis shards: loadgen → broker →
// three Redis (rollups off), against the raw go-redis loop of the same
// layout in the same run (each batch split by the store's own ring and
// written to the three shards concurrently, as the store does).
func (h *harness) shards(ctx context.Context) error {
	dur, _ := time.ParseDuration(h.p.Duration)
	servers := []*redistest.Server{h.redis}
	for range 2 {
		s, err := redistest.Launch(h.tmp)
		if err != nil {
			return err
		}
		defer s.Stop()
		servers = append(servers, s)
	}
	var specs []string
	var rdbs []*redis.Client
	var shardCfg []redisstore.ShardConfig
	for _, s := range servers {
		specs = append(specs, "redis://"+s.Addr)
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr, Protocol: 2})
		defer rdb.Close()
		rdbs = append(rdbs, rdb)
		shardCfg = append(shardCfg, redisstore.ShardConfig{Addr: s.Addr})
	}
	flushAll := func() error {
		for _, rdb := range rdbs {
			if err := h.flush(ctx, rdb); err != nil {
				return err
			}
		}
		return nil
	}
	cpuAll := func() float64 {
		var t float64
		for _, rdb := range rdbs {
			t += redisCPU(ctx, rdb)
		}
		return t
	}
	// The store is used for its ring only (ShardOf): the raw loop routes a
	// host where the broker's store does.
	ring, err := redisstore.New(ctx, redisstore.Config{Shards: shardCfg, NoRollups: true}, nil)
	if err != nil {
		return err
	}
	defer ring.Close()
	raws := make([]*rawWriter, len(servers))
	for i, s := range servers {
		raws[i] = newRawWriter(s.Addr)
		defer raws[i].rdb.Close()
	}
	rawWrite := func(ctx context.Context, snaps []storage.Snapshot) error {
		groups := make([][]storage.Snapshot, len(raws))
		for _, s := range snaps {
			k := ring.ShardOf(s.HostID)
			groups[k] = append(groups[k], s)
		}
		var g errgroup.Group
		for k, grp := range groups {
			if len(grp) > 0 {
				g.Go(func() error { return raws[k].write(ctx, grp) })
			}
		}
		return g.Wait()
	}
	tpl, err := loadgen.NewTemplate(h.p.Metrics)
	if err != nil {
		return err
	}
	p := newPool(tpl)
	base := time.Now().Add(-5 * 24 * time.Hour).Unix()
	spec := strings.Join(specs, ",")
	var brokerRates, rawRates, brokerCPU, redisViaBroker, rawClient, redisViaRaw []float64
	var brokerCmd string
	for run := 0; run < h.p.Runs; run++ {
		if err := flushAll(); err != nil {
			return err
		}
		b, err := h.startBroker(ctx, spec, rollupsOff)
		if err != nil {
			return err
		}
		r0 := cpuAll()
		res, cmd, _, err := h.loadgenRun(b.addr, h.p.Hosts, dur, fmt.Sprintf("sh%d", run))
		r1 := cpuAll()
		if serr := b.stop(); serr != nil && err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		h.res.Loadgen["broker_3_shards_rollups_off"] = append(h.res.Loadgen["broker_3_shards_rollups_off"], res)
		if res.Lost > 0 || res.Errors > 0 || res.Rejected > 0 || res.Acked == 0 {
			h.fail("3 shards: %s", res)
		}
		brokerCmd = strings.Replace(b.args, "redis://REDIS", "redis://REDIS1,redis://REDIS2,redis://REDIS3", 1) + "; " + cmd
		brokerRates = append(brokerRates, res.SnapshotsPerS)
		brokerCPU = append(brokerCPU, perSnap(b.cpu().Seconds(), res.Acked))
		redisViaBroker = append(redisViaBroker, perSnap(r1-r0, res.Acked))

		if err := flushAll(); err != nil {
			return err
		}
		c0, r0 := selfCPU(), cpuAll()
		rate, n, err := batches(ctx, p, h.p.Hosts, h.p.FlushSize, h.p.Workers, base, dur, rawWrite)
		c1, r1 := selfCPU(), cpuAll()
		if err != nil {
			h.fail("raw loop, 3 shards: %v", err)
		}
		rawRates = append(rawRates, rate)
		rawClient = append(rawClient, perSnap(c1-c0, uint64(n)))
		redisViaRaw = append(redisViaRaw, perSnap(r1-r0, uint64(n)))
	}
	rawCmd := fmt.Sprintf("go run ./bench (raw loop over 3 shards: batches of %d split by the store's ring, MULTI/EXEC per shard concurrently, %d concurrent batches, %d hosts)", h.p.FlushSize, h.p.Workers, h.p.Hosts)
	h.add(figure{Name: "ingest broker→3 redis shards, rollups off", Unit: "snapshots/s", Runs: brokerRates, Command: brokerCmd,
		Note: fmt.Sprintf("loadgen → broker → three Redis on this machine (%d hosts × %d metrics, saturation, %s)", h.p.Hosts, h.p.Metrics, dur)})
	h.add(figure{Name: "ingest raw go-redis loop, 3 shards", Unit: "snapshots/s", Runs: rawRates, Command: rawCmd})
	h.add(figure{Name: "ratio broker/raw, 3 shards", Unit: "×", Value: h.figure("ingest broker→3 redis shards, rollups off") / h.figure("ingest raw go-redis loop, 3 shards"), Command: "the two lines above"})
	cpuNote := "CPU time (user+sys) over snapshots acknowledged or written; Redis: the three shards' INFO cpu summed"
	h.add(figure{Name: "cpu/snapshot broker, 3 shards", Unit: "µs", Runs: brokerCPU, Command: brokerCmd, Note: cpuNote})
	h.add(figure{Name: "cpu/snapshot redis via broker, 3 shards", Unit: "µs", Runs: redisViaBroker, Command: brokerCmd, Note: cpuNote})
	h.add(figure{Name: "cpu/snapshot raw loop client, 3 shards", Unit: "µs", Runs: rawClient, Command: rawCmd, Note: cpuNote})
	h.add(figure{Name: "cpu/snapshot redis via raw loop, 3 shards", Unit: "µs", Runs: redisViaRaw, Command: rawCmd, Note: cpuNote})
	return nil
}
