package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/embedded"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const rollupsOff = "storage:\n  rollups:\n    enabled: false\n"

func (h *harness) flush(ctx context.Context, rdb *redis.Client) error {
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("FLUSHALL: %w", err)
	}
	return nil
}

// ingestRun is one throughput run and what it cost, in CPU microseconds
// per snapshot.
type ingestRun struct {
	rate                  float64
	cmd                   string
	client, broker, redis float64 // µs CPU per snapshot: loadgen or raw client, broker, Redis
}

// redisCPU is Redis' used_cpu_user + used_cpu_sys in seconds.
func redisCPU(ctx context.Context, rdb *redis.Client) float64 {
	if rdb == nil {
		return 0
	}
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}

// selfCPU is this process's CPU time in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func perSnap(seconds float64, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return seconds * 1e6 / float64(n)
}

// brokerIngest starts a broker on spec, saturates it with loadgen and stops
// it; lost, failed or rejected snapshots are failures of the run.
func (h *harness) brokerIngest(ctx context.Context, rdb *redis.Client, label, spec, yaml string, hosts int, dur time.Duration, prefix string) (ingestRun, error) {
	b, err := h.startBroker(ctx, spec, yaml)
	if err != nil {
		return ingestRun{}, err
	}
	r0 := redisCPU(ctx, rdb)
	res, cmd, lgCPU, err := h.loadgenRun(b.addr, hosts, dur, prefix)
	r1 := redisCPU(ctx, rdb)
	if serr := b.stop(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return ingestRun{}, err
	}
	h.res.Loadgen[label] = append(h.res.Loadgen[label], res)
	if res.Lost > 0 || res.Errors > 0 || res.Rejected > 0 || res.Acked == 0 {
		h.fail("%s: %d lost, %d stream errors, %d rejected, %d acknowledged: %s", label, res.Lost, res.Errors, res.Rejected, res.Acked, res)
	}
	run := ingestRun{rate: res.SnapshotsPerS, cmd: b.args + "; " + cmd,
		client: perSnap(lgCPU.Seconds(), res.Acked), broker: perSnap(b.cpu().Seconds(), res.Acked)}
	if !strings.HasPrefix(spec, "embedded") {
		run.redis = perSnap(r1-r0, res.Acked)
	}
	return run, nil
}

// directRun writes with write (raw loop or a store) for dur and measures
// this process's and Redis' CPU per snapshot.
func (h *harness) directRun(ctx context.Context, rdb *redis.Client, p pool, workers int, base int64, dur time.Duration, write func(context.Context, []storage.Snapshot) error) (ingestRun, error) {
	c0, r0 := selfCPU(), redisCPU(ctx, rdb)
	rate, n, err := batches(ctx, p, h.p.Hosts, h.p.FlushSize, workers, base, dur, write)
	c1, r1 := selfCPU(), redisCPU(ctx, rdb)
	run := ingestRun{rate: rate, client: perSnap(c1-c0, uint64(n))}
	if rdb != nil {
		run.redis = perSnap(r1-r0, uint64(n))
	}
	return run, err
}

// ingest measures write throughput: through the broker and raw, in the
// same runs, interleaved so that background load hits all alike.
func (h *harness) ingest(ctx context.Context) error {
	dur, _ := time.ParseDuration(h.p.Duration)
	tpl, err := loadgen.NewTemplate(h.p.Metrics)
	if err != nil {
		return err
	}
	p := newPool(tpl)
	addr := h.redis.Addr
	rdb := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2})
	defer rdb.Close()
	raw := newRawWriter(addr)
	defer raw.rdb.Close()

	runs := map[string][]ingestRun{}
	base := time.Now().Add(-5 * 24 * time.Hour).Unix()
	for run := 0; run < h.p.Runs; run++ {
		if err := h.flush(ctx, rdb); err != nil {
			return err
		}
		r, err := h.brokerIngest(ctx, rdb, "broker_redis_rollups_on", "redis://"+addr, "", h.p.Hosts, dur, fmt.Sprintf("on%d", run))
		if err != nil {
			return err
		}
		runs["on"] = append(runs["on"], r)

		if err := h.flush(ctx, rdb); err != nil {
			return err
		}
		if r, err = h.brokerIngest(ctx, rdb, "broker_redis_rollups_off", "redis://"+addr, rollupsOff, h.p.Hosts, dur, fmt.Sprintf("off%d", run)); err != nil {
			return err
		}
		runs["off"] = append(runs["off"], r)

		if err := h.flush(ctx, rdb); err != nil {
			return err
		}
		if r, err = h.directRun(ctx, rdb, p, h.p.Workers, base, dur, raw.write); err != nil {
			h.fail("raw pipeline loop: %v", err)
		}
		runs["raw"] = append(runs["raw"], r)

		if err := h.flush(ctx, rdb); err != nil {
			return err
		}
		store, err := redisstore.New(ctx, redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: addr}}}, nil)
		if err != nil {
			return err
		}
		r, err = h.directRun(ctx, rdb, p, h.p.Workers, base, dur, store.WriteSnapshots)
		store.Close()
		if err != nil {
			h.fail("redis store WriteSnapshots: %v", err)
		}
		runs["direct"] = append(runs["direct"], r)

		if r, err = h.brokerIngest(ctx, rdb, "broker_embedded", "embedded", "", h.p.Hosts, dur, fmt.Sprintf("emb%d", run)); err != nil {
			return err
		}
		runs["emb"] = append(runs["emb"], r)

		est, err := embedded.Open(filepath.Join(h.tmp, fmt.Sprintf("embedded-direct-%d", run)), embedded.Options{}, nil)
		if err != nil {
			return err
		}
		r, err = h.directRun(ctx, nil, p, 1, base, dur, est.WriteSnapshots)
		est.Close()
		if err != nil {
			h.fail("embedded store WriteSnapshots: %v", err)
		}
		runs["embDirect"] = append(runs["embDirect"], r)
	}
	col := func(key string, f func(ingestRun) float64) []float64 {
		var out []float64
		for _, r := range runs[key] {
			out = append(out, f(r))
		}
		return out
	}
	rate := func(r ingestRun) float64 { return r.rate }
	cmd := func(key string) string { return runs[key][len(runs[key])-1].cmd }
	shape := fmt.Sprintf("%d hosts × %d metrics, each with %d batches in flight, %s", h.p.Hosts, h.p.Metrics, 8, dur)
	rawCmd := fmt.Sprintf("go run ./bench (raw loop: MULTI/EXEC of %d snapshots, %d concurrent, %d hosts)", h.p.FlushSize, h.p.Workers, h.p.Hosts)
	storeCmd := fmt.Sprintf("go run ./bench (redisstore.WriteSnapshots, batches of %d, %d concurrent)", h.p.FlushSize, h.p.Workers)

	h.add(figure{Name: "ingest broker→redis, rollups off", Unit: "snapshots/s", Runs: col("off", rate), Command: cmd("off"),
		Note: "loadgen → broker → one Redis, the seed's keys only (" + shape + ")"})
	h.add(figure{Name: "ingest raw go-redis loop, same keys", Unit: "snapshots/s", Runs: col("raw", rate), Command: rawCmd,
		Note: "plain go-redis pipelines writing exactly the commands the Redis store sends with rollups off, with the broker's flush size and write concurrency"})
	h.add(figure{Name: "ratio broker/raw (rollups off)", Unit: "×", Value: h.figure("ingest broker→redis, rollups off") / h.figure("ingest raw go-redis loop, same keys"),
		Command: "the two lines above", Note: "aim ≥ 0.8; on a machine where loadgen, broker and Redis share the CPUs the ratio is the CPU cost ratio below"})
	h.add(figure{Name: "ingest broker→redis, rollups on", Unit: "snapshots/s", Runs: col("on", rate), Command: cmd("on"),
		Note: "as above with the default 1-minute and 1-hour rollups (" + shape + ")"})
	h.add(figure{Name: "ingest redis store WriteSnapshots, rollups on", Unit: "snapshots/s", Runs: col("direct", rate), Command: storeCmd,
		Note: "the storage layer alone, same batches as the broker's flushes"})
	h.add(figure{Name: "ratio broker/store (rollups on)", Unit: "×", Value: h.figure("ingest broker→redis, rollups on") / h.figure("ingest redis store WriteSnapshots, rollups on"),
		Command: "the two lines above"})
	h.add(figure{Name: "ingest broker→embedded", Unit: "snapshots/s", Runs: col("emb", rate), Command: cmd("emb"),
		Note: "loadgen → broker → bbolt (fsync per flush), rollups on (" + shape + ")"})
	h.add(figure{Name: "ingest embedded store WriteSnapshots", Unit: "snapshots/s", Runs: col("embDirect", rate),
		Command: fmt.Sprintf("go run ./bench (embedded.WriteSnapshots, batches of %d, 1 writer)", h.p.FlushSize)})

	// Where the CPU goes, per snapshot: stable where throughput is not
	// (other work on the machine), and the reason for the ratio.
	cpuNote := "CPU time (user+sys, from the process's rusage or Redis' INFO cpu) over snapshots acknowledged or written"
	for _, c := range []struct {
		name, key string
		f         func(ingestRun) float64
		cmd       string
	}{
		{"cpu/snapshot loadgen", "off", func(r ingestRun) float64 { return r.client }, cmd("off")},
		{"cpu/snapshot broker, rollups off", "off", func(r ingestRun) float64 { return r.broker }, cmd("off")},
		{"cpu/snapshot redis via broker, rollups off", "off", func(r ingestRun) float64 { return r.redis }, cmd("off")},
		{"cpu/snapshot raw loop client", "raw", func(r ingestRun) float64 { return r.client }, rawCmd},
		{"cpu/snapshot redis via raw loop", "raw", func(r ingestRun) float64 { return r.redis }, rawCmd},
		{"cpu/snapshot broker, rollups on", "on", func(r ingestRun) float64 { return r.broker }, cmd("on")},
		{"cpu/snapshot redis via broker, rollups on", "on", func(r ingestRun) float64 { return r.redis }, cmd("on")},
		{"cpu/snapshot store client, rollups on", "direct", func(r ingestRun) float64 { return r.client }, storeCmd},
		{"cpu/snapshot broker, embedded", "emb", func(r ingestRun) float64 { return r.broker }, cmd("emb")},
	} {
		h.add(figure{Name: c.name, Unit: "µs", Runs: col(c.key, c.f), Command: c.cmd, Note: cpuNote})
	}
	return h.latency(ctx, rdb)
}

// latency measures acknowledgement latency at a steady, unsaturated rate:
// the agent's view of the write path.
func (h *harness) latency(ctx context.Context, rdb *redis.Client) error {
	hosts, interval, dur := 2000, time.Second, 20*time.Second
	if h.res.Mode == "quick" {
		hosts, dur = 500, 3*time.Second
	}
	if err := h.flush(ctx, rdb); err != nil {
		return err
	}
	b, err := h.startBroker(ctx, "redis://"+h.redis.Addr, "")
	if err != nil {
		return err
	}
	g, err := loadgen.New(loadgen.Config{Brokers: []string{b.addr}, Hosts: hosts, Interval: interval, Duration: dur, Metrics: h.p.Metrics, Prefix: "lat"}, nil)
	if err != nil {
		b.kill()
		return err
	}
	res, err := g.Run(ctx)
	if serr := b.stop(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	h.res.Loadgen["steady_ack_latency"] = append(h.res.Loadgen["steady_ack_latency"], res)
	if res.Lost > 0 || res.Errors > 0 || res.Rejected > 0 || res.FlowControls > 0 {
		h.fail("steady load: %s", res)
	}
	cmd := fmt.Sprintf("%s; bin/loadgen -broker ADDR -hosts %d -interval %s -duration %s", b.args, hosts, interval, dur)
	note := fmt.Sprintf("%d hosts every %s = %.0f snapshots/s, not saturated", hosts, interval, res.SnapshotsPerS)
	h.add(figure{Name: "ack latency p50, steady load", Unit: "ms", Value: res.AckP50MS, Command: cmd, Note: note})
	h.add(figure{Name: "ack latency p99, steady load", Unit: "ms", Value: res.AckP99MS, Command: cmd, Note: note})
	return nil
}

// memory writes hosts × snapshots at a 5 s interval through the Redis
// store and divides the growth of INFO used_memory by the samples.
func (h *harness) memory(ctx context.Context) error {
	tpl, err := loadgen.NewTemplate(h.p.Metrics)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: h.redis.Addr, Protocol: 2})
	defer rdb.Close()
	for _, rollups := range []bool{false, true} {
		if err := h.flush(ctx, rdb); err != nil {
			return err
		}
		before, err := usedMemory(ctx, rdb)
		if err != nil {
			return err
		}
		store, err := redisstore.New(ctx, redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: h.redis.Addr}}, NoRollups: !rollups}, nil)
		if err != nil {
			return err
		}
		start := time.Now().Add(-time.Duration(h.p.MemPerHost)*5*time.Second - time.Minute).Truncate(time.Hour).Unix()
		var buf []storage.Snapshot
		n := 0
		for i := 0; i < h.p.MemPerHost; i++ {
			for k := 0; k < h.p.MemHosts; k++ {
				buf = append(buf, tpl.Snapshot(fmt.Sprintf("mem-%03d", k), start+int64(i)*5, uint64(n)))
				n++
				if len(buf) == h.p.FlushSize {
					if err := store.WriteSnapshots(ctx, buf); err != nil {
						store.Close()
						return fmt.Errorf("memory: write: %w", err)
					}
					buf = buf[:0]
				}
			}
		}
		if len(buf) > 0 {
			if err := store.WriteSnapshots(ctx, buf); err != nil {
				store.Close()
				return fmt.Errorf("memory: write: %w", err)
			}
		}
		store.Close()
		after, err := usedMemory(ctx, rdb)
		if err != nil {
			return err
		}
		samples := n * h.p.Metrics
		name, note := "redis bytes per sample, rollups off", "the seed's keys only"
		if rollups {
			name, note = "redis bytes per sample, rollups on", "raw keys plus 1-minute and 1-hour rollups"
		}
		h.add(figure{Name: name, Unit: "bytes", Value: float64(after-before) / float64(samples),
			Command: fmt.Sprintf("go run ./bench (INFO used_memory before/after redisstore.WriteSnapshots of %d hosts × %d snapshots at 5 s)", h.p.MemHosts, h.p.MemPerHost),
			Note:    fmt.Sprintf("%s; %d samples, used_memory +%d bytes", note, samples, after-before)})
	}
	return nil
}

// queries loads days of one host at 5 s straight into the store (rollups
// on, as a broker writes them) and times QueryRange through a broker.
func (h *harness) queries(ctx context.Context) error {
	tpl, err := loadgen.NewTemplate(h.p.Metrics)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: h.redis.Addr, Protocol: 2})
	defer rdb.Close()
	if err := h.flush(ctx, rdb); err != nil {
		return err
	}
	store, err := redisstore.New(ctx, redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: h.redis.Addr}}}, nil)
	if err != nil {
		return err
	}
	const host = "range-host"
	now := time.Now().Unix() / 5 * 5
	total := h.p.RangeDays * 86400 / 5
	loadStart := time.Now()
	buf := make([]storage.Snapshot, 0, 512)
	for i := 0; i < total; i++ {
		buf = append(buf, tpl.Snapshot(host, now-int64(total-1-i)*5, uint64(i)))
		if len(buf) == cap(buf) || i == total-1 {
			if err := store.WriteSnapshots(ctx, buf); err != nil {
				store.Close()
				return fmt.Errorf("queries: load %d days: %w", h.p.RangeDays, err)
			}
			buf = buf[:0]
		}
	}
	store.Close()
	h.log.Warn("loaded range data", "snapshots", total, "took", time.Since(loadStart).Round(time.Millisecond))

	b, err := h.startBroker(ctx, "redis://"+h.redis.Addr, "")
	if err != nil {
		return err
	}
	defer func() {
		if err := b.stop(); err != nil {
			h.fail("%v", err)
		}
	}()
	cc, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	defer cc.Close()
	client := monitorpb.NewMonitorServiceClient(cc)
	iters := map[bool]int{true: 10, false: 100}[h.res.Mode == "quick"]
	for _, q := range []struct {
		name string
		span time.Duration
	}{{"1 h", time.Hour}, {"24 h", 24 * time.Hour}, {"7 d", 7 * 24 * time.Hour}} {
		req := &monitorpb.QueryRangeRequest{HostId: host, From: now - int64(q.span/time.Second) + 1, To: now}
		var lat []float64
		var points, series int
		for i := 0; i <= iters; i++ {
			qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			t0 := time.Now()
			resp, err := client.QueryRange(qctx, req)
			el := time.Since(t0)
			cancel()
			if err != nil {
				h.fail("QueryRange %s: %v", q.name, err)
				break
			}
			if i == 0 {
				series = len(resp.GetSeries())
				for _, s := range resp.GetSeries() {
					points += len(s.GetPoints())
				}
				if series != h.p.Metrics || points == 0 {
					h.fail("QueryRange %s returned %d series and %d points, want %d series", q.name, series, points, h.p.Metrics)
				}
				continue // warm-up
			}
			lat = append(lat, float64(el)/float64(time.Millisecond))
		}
		if len(lat) == 0 {
			continue
		}
		slices.Sort(lat)
		cmd := fmt.Sprintf("go run ./bench (QueryRange host=%s from=now-%s to=now step=0, all series, %d times, via %s)", host, q.name, iters, b.args)
		note := fmt.Sprintf("%d days of one host at 5 s loaded with redisstore.WriteSnapshots; answer: %d series, %d points per series", h.p.RangeDays, series, points/max(series, 1))
		h.add(figure{Name: "query " + q.name + " p50", Unit: "ms", Value: lat[len(lat)/2], Command: cmd, Note: note})
		h.add(figure{Name: "query " + q.name + " p99", Unit: "ms", Value: lat[min(len(lat)-1, len(lat)*99/100)], Command: cmd, Note: note})
	}
	return nil
}
