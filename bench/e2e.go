package main

// End-to-end latency and fan-out.
//
// e2e: bin/loadgen -stamp (every snapshot's cpu.usage_percent is its send
// time in Unix ms) → bin/broker → one Redis → bin/visualization → two
// WebSocket clients of this process subscribed to cpu.usage_percent of
// every host; a sample's latency is its receipt time minus its stamp: the
// whole way from the agent's send through storage, the broker's Subscribe
// fan-out, the visualization server's live feed and push hub, to a client.
//
// fanout: bin/visualization against a stand-in broker (quic.go's
// subscribeBroker, in this process) that publishes one snapshot every
// 500 ms; N WebSocket clients of this process receive it. Latency is from
// the publish to each client's read; p99 over every (client, message).

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	monitorpb "github.com/monitorhq/monitor/proto"
)

type e2eScenario struct {
	hosts    int
	interval time.Duration
	dur      time.Duration
}

// latencies is a concurrency-safe bag of millisecond figures.
type latencies struct {
	mu sync.Mutex
	ms []float64
}

func (l *latencies) add(v float64) {
	l.mu.Lock()
	l.ms = append(l.ms, v)
	l.mu.Unlock()
}

func (l *latencies) take() []float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.ms
	l.ms = nil
	slices.Sort(out)
	return out
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*q))]
}

func (h *harness) e2e(ctx context.Context) error {
	scenarios := []e2eScenario{{1000, 5 * time.Second, 15 * time.Second}, {10000, 5 * time.Second, 15 * time.Second}, {1000, time.Second, 15 * time.Second}}
	if h.res.Mode == "quick" {
		scenarios = []e2eScenario{{200, time.Second, 3 * time.Second}}
	}
	rdb := redis.NewClient(&redis.Options{Addr: h.redis.Addr, Protocol: 2})
	defer rdb.Close()
	for i, sc := range scenarios {
		if err := h.flush(ctx, rdb); err != nil {
			return err
		}
		b, err := h.startBroker(ctx, "redis://"+h.redis.Addr, "")
		if err != nil {
			return err
		}
		v, err := h.startViz(ctx, []string{b.addr}, 100)
		if err != nil {
			b.kill()
			return err
		}
		acked, cmd, err := h.e2eRun(ctx, b, v, sc, i)
		if verr := v.stop(); verr != nil && err == nil {
			err = verr
		}
		if berr := b.stop(); berr != nil && err == nil {
			err = berr
		}
		if err != nil {
			return err
		}
		label := fmt.Sprintf("%d hosts at %s", sc.hosts, sc.interval)
		note := "CPU time (user+sys) of the whole process over the run (start-up and stream set-up included) per acknowledged snapshot"
		h.add(figure{Name: "e2e cpu/snapshot broker, " + label, Unit: "µs", Value: perSnap(b.cpu().Seconds(), acked), Command: cmd, Note: note})
		h.add(figure{Name: "e2e cpu/snapshot visualization, " + label, Unit: "µs", Value: perSnap(v.cpu().Seconds(), acked), Command: cmd, Note: note})
	}
	return nil
}

func (h *harness) e2eRun(ctx context.Context, b *brokerProc, v *vizProc, sc e2eScenario, run int) (uint64, string, error) {
	var lat latencies
	var got atomic.Int64
	const clients = 2
	var per [clients]atomic.Int64
	var conns []*wsConn
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	sub := []byte(`{"type":"subscribe","metrics":["cpu.usage_percent"],"kinds":["sample"]}`)
	for k := range clients {
		c, err := dialWS(ctx, v.wsURL(), v.token, sub, func(data []byte, at time.Time) {
			now := float64(at.UnixMicro()) / 1000
			sampleValues(data, func(series []byte, val float64) {
				if string(series) == "cpu.usage_percent" && val > 1e12 {
					lat.add(now - val)
					got.Add(1)
					per[k].Add(1)
				}
			})
		})
		if err != nil {
			return 0, "", fmt.Errorf("e2e: websocket: %w", err)
		}
		conns = append(conns, c)
		if err := c.wait(c.subd, 10*time.Second); err != nil {
			return 0, "", fmt.Errorf("e2e: subscribe: %w", err)
		}
	}
	prefix := fmt.Sprintf("e2e%d", run)
	res, cmd, _, err := h.loadgenCmd(b.addr, []string{"-hosts", fmt.Sprint(sc.hosts), "-interval", sc.interval.String(), "-duration", sc.dur.String(),
		"-stamp", "-prefix", prefix, "-drain", "20s"})
	if err != nil {
		return 0, "", err
	}
	time.Sleep(time.Second) // the last samples' way to the clients
	label := fmt.Sprintf("%d hosts at %s", sc.hosts, sc.interval)
	h.res.Loadgen["e2e "+label] = append(h.res.Loadgen["e2e "+label], res)
	if res.Lost > 0 || res.Errors > 0 || res.Rejected > 0 || res.Acked == 0 {
		h.fail("e2e %s: %s", label, res)
	}
	ms := lat.take()
	delivered := float64(got.Load()) / float64(clients) / float64(max(res.Acked, 1))
	full := b.args + "; " + v.args + "; " + cmd + "; 2 WebSocket clients subscribed to cpu.usage_percent of every host"
	live := v.counters("live_snapshots_total", "live_broker_dropped_total", "live_catchups_total", "live_catchup_snapshots_total", "live_late_total")
	note := fmt.Sprintf("send (loadgen -stamp) → broker → Redis → Subscribe → visualization → WebSocket read; %d samples received by %d clients (%d and %d), %.1f%% of the %d acknowledged snapshots per client; %.0f snapshots/s; visualization live feed: %.0f snapshots delivered, %.0f batches dropped for it by the broker (too slow), %.0f catch-up pulls delivering %.0f snapshots, %.0f late",
		len(ms), clients, per[0].Load(), per[1].Load(), delivered*100, res.Acked, res.SnapshotsPerS,
		live["live_snapshots_total"], live["live_broker_dropped_total"], live["live_catchups_total"], live["live_catchup_snapshots_total"], live["live_late_total"])
	h.add(figure{Name: "e2e latency p50, " + label, Unit: "ms", Value: quantile(ms, 0.5), Command: full, Note: note})
	h.add(figure{Name: "e2e latency p99, " + label, Unit: "ms", Value: quantile(ms, 0.99), Command: full, Note: note})
	if len(ms) == 0 {
		h.fail("e2e %s: no sample reached the WebSocket clients", label)
	}
	return res.Acked, full, nil
}

// fanout measures delivery to many WebSocket clients of one server.
func (h *harness) fanout(ctx context.Context) error {
	sizes, msgs, every := []int{1000, 10000}, 16, 500*time.Millisecond
	if h.res.Mode == "quick" {
		sizes, msgs = []int{200}, 6
	}
	br, err := startSubscribeBroker()
	if err != nil {
		return err
	}
	defer br.stop()
	for _, n := range sizes {
		if err := h.fanoutRun(ctx, br, n, msgs, every); err != nil {
			return err
		}
	}
	return nil
}

// fanClient records when each message index arrived.
type fanClient struct {
	recv []atomic.Int64 // unix nanos by message index; 0: not yet
}

func (h *harness) fanoutRun(ctx context.Context, br *subscribeBroker, n, msgs int, every time.Duration) error {
	v, err := h.startViz(ctx, []string{br.addr}, n+10)
	if err != nil {
		return err
	}
	defer func() {
		if err := v.stop(); err != nil {
			h.fail("fanout: %v", err)
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); br.subscribers() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("fanout: the visualization server never subscribed to the stand-in broker")
		}
	}
	clients := make([]*fanClient, n)
	conns := make([]*wsConn, n)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range conns {
			if c != nil {
				wg.Go(c.close)
			}
		}
		wg.Wait()
	}()
	// Dial with bounded concurrency; every client waits for its hello
	// (joined the hub, default filter: every host's samples).
	dialStart := time.Now()
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		clients[i] = &fanClient{recv: make([]atomic.Int64, msgs)}
		fc := clients[i]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := dialWS(ctx, v.wsURL(), v.token, nil, func(data []byte, at time.Time) {
				sampleValues(data, func(_ []byte, val float64) {
					if k := int(val); k >= 0 && k < msgs {
						fc.recv[k].CompareAndSwap(0, at.UnixNano())
					}
				})
			})
			if err == nil {
				err = c.wait(c.hello, 30*time.Second)
				conns[i] = c
			}
			if err != nil {
				once.Do(func() { firstErr = fmt.Errorf("fanout: client %d of %d: %w", i, n, err) })
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	dialS := time.Since(dialStart).Seconds()

	sent := make([]int64, msgs)
	ts := time.Now().Unix()
	tick := time.NewTicker(every)
	for i := range msgs {
		ts++
		sent[i] = time.Now().UnixNano()
		br.publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{{HostId: "bench-fanout", Timestamp: ts,
			Metrics: []*monitorpb.Metric{{Name: "cpu.usage_percent", Value: float64(i), Unit: "%"}}}}})
		<-tick.C
	}
	tick.Stop()
	// Wait for the stragglers (generously), then count.
	deadline := time.Now().Add(10 * time.Second)
	var ms []float64
	missing := 0
	for {
		ms, missing = ms[:0], 0
		for _, c := range clients {
			for k := range msgs {
				at := c.recv[k].Load()
				if at == 0 {
					missing++
					continue
				}
				ms = append(ms, float64(at-sent[k])/1e6)
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(ms)
	label := fmt.Sprintf("%d WebSocket clients", n)
	cmd := fmt.Sprintf("go run ./bench (stand-in broker publishing 1 snapshot every %s, %d times) + %s + %d WebSocket clients in the harness", every, msgs, v.args, n)
	note := fmt.Sprintf("publish at the stand-in broker → Subscribe → visualization live feed → push hub → every client's read; %d deliveries, %d missing; clients connected in %.1f s", len(ms), missing, dialS)
	h.add(figure{Name: "fan-out p50, " + label, Unit: "ms", Value: quantile(ms, 0.5), Command: cmd, Note: note})
	h.add(figure{Name: "fan-out p99, " + label, Unit: "ms", Value: quantile(ms, 0.99), Command: cmd, Note: note})
	h.add(figure{Name: "fan-out max, " + label, Unit: "ms", Value: quantile(ms, 1), Command: cmd, Note: note})
	if missing > 0 {
		h.fail("fanout %s: %d of %d deliveries missing", label, missing, n*msgs)
	}
	return nil
}
