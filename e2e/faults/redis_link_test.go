package faults

import (
	"testing"
	"time"

	"github.com/monitorhq/monitor/internal/faultproxy"
	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/loadgen"
)

// TestRedisLinkLatencyResetsBlackhole puts an in-process TCP proxy between
// a broker and its Redis shard and, under load, adds latency, resets every
// connection several times, then black-holes the link for longer than the
// broker's write timeout. Writes that fail become flow control (streams
// stay up), the agents resend, and after the link heals every acknowledged
// snapshot is in Redis, whole.
func TestRedisLinkLatencyResetsBlackhole(t *testing.T) {
	noLeaks(t)
	hosts, outage, resets := 30, 3*time.Second, 5
	if long() {
		hosts, outage, resets = 200, 20*time.Second, 20
	}
	const metrics = 20
	rs := redistest.Start(t)
	px, err := faultproxy.New(rs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	b := startBroker(t, px.Addr(), nil)
	l := startLoad(t, loadgen.Config{Brokers: []string{b.GRPCAddr()}, Hosts: hosts, Interval: 100 * time.Millisecond,
		Conns: 2, Metrics: metrics, Prefix: "link", Drain: 30 * time.Second})
	l.progress(t, 3, 30*time.Second, "warm-up")

	// Latency: every Redis round trip takes 50 ms longer.
	px.Delay(50 * time.Millisecond)
	l.progress(t, 5, 60*time.Second, "with 50ms latency")
	px.Delay(0)

	// Resets: every broker→Redis connection aborted, several times.
	tick := time.NewTicker(200 * time.Millisecond)
	reset := 0
	for i := 0; i < resets; i++ {
		<-tick.C // pacing of the fault itself
		reset += px.ResetAll()
	}
	tick.Stop()
	l.progress(t, 3, 60*time.Second, "after resets")

	// Black hole longer than the write timeout: writes fail, flow control.
	fcBefore := l.flowControls()
	px.Blackhole(true)
	blackholed := time.Now()
	eventually(t, 30*time.Second, func() error {
		if l.flowControls() == fcBefore {
			return errNoFlowControl
		}
		return nil
	})
	if d := outage - time.Since(blackholed); d > 0 {
		time.Sleep(d) // the outage's length is the fault, not a wait for a condition
	}
	px.Heal()
	healed := l.log.setMark()
	l.progress(t, 3, 60*time.Second, "after the link healed")
	var recover []time.Duration
	l.log.mu.Lock()
	for _, h := range l.g.Hosts() {
		recover = append(recover, l.log.first[h].Sub(healed))
	}
	l.log.mu.Unlock()
	drained := l.drain(t, 60*time.Second+10*outage)

	res, err := l.finish()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loadgen: %s", res)
	st := b.Stats()
	checked, lost := verifyStored(t, rs.Addr, l.log, metrics+3)
	figure(t, "redislink_agent_streams", hosts, "streams")
	figure(t, "redislink_connections_reset", reset, "connections")
	figure(t, "redislink_blackhole_ms", outage.Milliseconds(), "ms")
	figure(t, "redislink_write_failures", st.WriteFailures, "batches")
	figure(t, "redislink_flow_control", st.FlowControlSent, "messages")
	figure(t, "redislink_recovery_p99_ms", quantile(recover, 0.99).Milliseconds(), "ms")
	figure(t, "redislink_drain_ms", drained.Milliseconds(), "ms")
	figure(t, "redislink_ack_p99_ms", int64(res.AckP99MS), "ms")
	figure(t, "redislink_acked_snapshots", checked, "snapshots")
	figure(t, "redislink_lost", lost, "snapshots")
	figure(t, "redislink_unacked_at_end", res.Lost, "snapshots")
	if res.Lost != 0 || res.Rejected != 0 || res.Dropped != 0 {
		t.Fatalf("load generator: lost %d, rejected %d, dropped %d", res.Lost, res.Rejected, res.Dropped)
	}
	if lost != 0 || uint64(checked) != res.Acked {
		t.Fatalf("%d of %d acknowledged snapshots missing (loadgen acked %d)", lost, checked, res.Acked)
	}
	if st.WriteFailures == 0 || st.FlowControlSent == 0 {
		t.Fatalf("the faults caused no failed write or flow control: %+v", st)
	}
}
