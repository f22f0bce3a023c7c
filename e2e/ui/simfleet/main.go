// Command simfleet is the browser tests' controllable fleet: a few
// simulated agents that register with labels, heartbeat and stream a
// snapshot per interval over the real Ingest protocol, with values a test
// can pin from standard input.
//
//	simfleet -broker 127.0.0.1:9093 -hosts 4 -prefix sim -interval 1s [-backfill 15m]
//
// Commands on stdin, one per line:
//
//	cpu HOST VALUE   pin HOST's cpu.usage_percent (and its cores) at VALUE
//	cpu HOST auto    let it wander again
//
// Every host sends the agent's metric names (docs/metrics.md) for four
// cores, two mounts, one disk, two interfaces and three processes, labelled
// role=web (odd hosts) or role=db (even hosts) and zone=a|b. It prints
// "ready" once every host had a batch acknowledged, and "ok cpu HOST VALUE"
// after each command took effect (the next snapshot carries it).
//
// Concurrency: one goroutine per host (sender) plus one receiver per
// stream; the pinned values are guarded by a mutex.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	monitorpb "github.com/monitorhq/monitor/proto"
)

func main() {
	broker := flag.String("broker", "127.0.0.1:9093", "broker gRPC address")
	hosts := flag.Int("hosts", 4, "simulated hosts")
	prefix := flag.String("prefix", "sim", "host id prefix (ids are PREFIX-1, PREFIX-2, ...)")
	interval := flag.Duration("interval", time.Second, "snapshot interval")
	backfill := flag.Duration("backfill", 0, "send this much history (one snapshot per interval) before the live snapshots")
	flag.Parse()
	if *hosts < 1 || *interval < 100*time.Millisecond {
		fmt.Fprintln(os.Stderr, "simfleet: -hosts must be >= 1 and -interval >= 100ms")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *broker, *hosts, *prefix, *interval, *backfill); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "simfleet:", err)
		os.Exit(1)
	}
}

// pins holds the pinned CPU values by host.
type pins struct {
	mu  sync.Mutex
	cpu map[string]float64
}

func (p *pins) get(host string) (float64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.cpu[host]
	return v, ok
}

func (p *pins) set(host string, v float64, pinned bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pinned {
		p.cpu[host] = v
	} else {
		delete(p.cpu, host)
	}
}

func run(ctx context.Context, addr string, n int, prefix string, interval, backfill time.Duration) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial broker %s: %w", addr, err)
	}
	defer cc.Close()
	client := monitorpb.NewMonitorServiceClient(cc)
	p := &pins{cpu: map[string]float64{}}
	ready := make(chan string, n)
	errc := make(chan error, n)
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i+1)
		go func(i int) { errc <- simulate(ctx, client, ids[i], i, interval, backfill, p, ready) }(i)
	}
	go readCommands(ctx, p, ids)
	for range n {
		select {
		case <-ready:
		case err := <-errc:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fmt.Println("ready")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}

func readCommands(ctx context.Context, p *pins, ids []string) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() && ctx.Err() == nil {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "cpu" {
			fmt.Fprintf(os.Stderr, "simfleet: unknown command %q (want: cpu HOST VALUE|auto)\n", sc.Text())
			continue
		}
		known := false
		for _, id := range ids {
			known = known || id == f[1]
		}
		if !known {
			fmt.Fprintf(os.Stderr, "simfleet: unknown host %q\n", f[1])
			continue
		}
		if f[2] == "auto" {
			p.set(f[1], 0, false)
		} else {
			v, err := strconv.ParseFloat(f[2], 64)
			if err != nil || v < 0 || v > 100 {
				fmt.Fprintf(os.Stderr, "simfleet: cpu value %q is not a percentage\n", f[2])
				continue
			}
			p.set(f[1], v, true)
		}
		fmt.Printf("ok cpu %s %s\n", f[1], f[2])
	}
}

// walker is a value wandering inside [lo, hi].
type walker struct{ v, lo, hi, step float64 }

func (w *walker) next(r *rand.Rand) float64 {
	w.v += (r.Float64() - 0.5) * 2 * w.step * (w.hi - w.lo)
	w.v = math.Max(w.lo, math.Min(w.hi, w.v))
	return math.Round(w.v*100) / 100
}

func simulate(ctx context.Context, client monitorpb.MonitorServiceClient, id string, index int, interval, backfill time.Duration, p *pins, ready chan<- string) error {
	role, zone := "db", "a"
	if index%2 == 0 {
		role = "web"
	}
	if index%3 == 2 {
		zone = "b"
	}
	labels := map[string]string{"role": role, "zone": zone}
	info := &monitorpb.HostInfo{
		HostId: id, Hostname: id + ".example.internal", Os: "linux", Platform: "debian 12", Kernel: "6.1.0-sim",
		Arch: "x86_64", CpuCount: 4, MemoryBytes: 16 << 30, Labels: labels, AgentVersion: "simfleet",
		BootTime: time.Now().Add(-72 * time.Hour).Unix(),
	}
	if _, err := client.Register(ctx, &monitorpb.RegisterRequest{Host: info}); err != nil {
		return fmt.Errorf("register %s: %w", id, err)
	}
	stream, err := client.Ingest(ctx)
	if err != nil {
		return fmt.Errorf("open ingest stream for %s: %w", id, err)
	}
	if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: id, Version: "simfleet"}}}); err != nil {
		return fmt.Errorf("send hello for %s: %w", id, err)
	}
	acked := make(chan error, 1)
	go func() {
		first := true
		for {
			resp, err := stream.Recv()
			if err != nil {
				acked <- fmt.Errorf("ingest stream of %s: %w", id, err)
				return
			}
			if fc := resp.GetFlowControl(); fc != nil {
				fmt.Fprintf(os.Stderr, "simfleet: %s: flow control %s (the test fleet does not resend)\n", id, fc.GetReason())
			}
			if a := resp.GetAck(); a != nil && first {
				first = false
				ready <- id
			}
		}
	}()

	r := rand.New(rand.NewPCG(uint64(index)+1, 42))
	base := 10 + float64(index*7%50)
	cpu := &walker{v: base, lo: 1, hi: 60, step: 0.04}
	cores := make([]*walker, 4)
	for c := range cores {
		cores[c] = &walker{v: base, lo: 0, hi: 70, step: 0.08}
	}
	load := &walker{v: 1 + float64(index%3), lo: 0, hi: 8, step: 0.05}
	mem := &walker{v: 30 + float64(index*11%40), lo: 10, hi: 85, step: 0.01}
	swap := &walker{v: 2, lo: 0, hi: 20, step: 0.02}
	disk := []*walker{{v: 40 + float64(index*13%40), lo: 10, hi: 90, step: 0.001}, {v: 20 + float64(index*5%30), lo: 5, hi: 90, step: 0.001}}
	rd := &walker{v: 5e6, lo: 0, hi: 80e6, step: 0.1}
	wr := &walker{v: 3e6, lo: 0, hi: 60e6, step: 0.1}
	rx := []*walker{{v: 2e6 * float64(index+1), lo: 0, hi: 100e6, step: 0.1}, {v: 1e5, lo: 0, hi: 10e6, step: 0.1}}
	tx := []*walker{{v: 1e6 * float64(index+1), lo: 0, hi: 100e6, step: 0.1}, {v: 5e4, lo: 0, hi: 10e6, step: 0.1}}
	procs := []struct {
		pid, comm string
		cpu, rss  *walker
	}{
		{"1021", "postgres", &walker{v: 12, lo: 0, hi: 60, step: 0.1}, &walker{v: 900e6, lo: 500e6, hi: 2e9, step: 0.02}},
		{"877", "nginx", &walker{v: 4, lo: 0, hi: 30, step: 0.1}, &walker{v: 80e6, lo: 50e6, hi: 200e6, step: 0.02}},
		{"4410", "java", &walker{v: 20, lo: 0, hi: 80, step: 0.1}, &walker{v: 3e9, lo: 2e9, hi: 6e9, step: 0.02}},
	}

	const gib = float64(1 << 30)
	build := func(ts int64) *monitorpb.Snapshot {
		m := func(name, unit string, v float64, l ...string) *monitorpb.Metric {
			var labels map[string]string
			if len(l) > 0 {
				labels = map[string]string{}
				for i := 0; i+1 < len(l); i += 2 {
					labels[l[i]] = l[i+1]
				}
			}
			return &monitorpb.Metric{Name: name, Unit: unit, Value: v, Labels: labels}
		}
		c := cpu.next(r)
		pinned, isPinned := p.get(id)
		if isPinned {
			c = pinned
		}
		metrics := []*monitorpb.Metric{
			m("cpu.usage_percent", "%", c),
			m("cpu.user_percent", "%", math.Round(c*0.7*100)/100),
			m("cpu.system_percent", "%", math.Round(c*0.25*100)/100),
			m("cpu.iowait_percent", "%", math.Round(c*0.05*100)/100),
			m("cpu.idle_percent", "%", math.Round((100-c)*100)/100),
			m("load.1", "", load.next(r)),
			m("load.5", "", math.Round(load.v*90)/100),
			m("load.15", "", math.Round(load.v*80)/100),
		}
		for i, w := range cores {
			v := w.next(r)
			if isPinned {
				v = pinned
			}
			metrics = append(metrics, m("cpu.core_usage_percent", "%", v, "cpu", fmt.Sprintf("cpu%d", i)))
		}
		mp := mem.next(r)
		sp := swap.next(r)
		metrics = append(metrics,
			m("mem.total_bytes", "bytes", 16*gib),
			m("mem.used_bytes", "bytes", math.Round(16*gib*mp/100)),
			m("mem.available_bytes", "bytes", math.Round(16*gib*(100-mp)/100)),
			m("mem.used_percent", "%", mp),
			m("swap.total_bytes", "bytes", 2*gib),
			m("swap.used_bytes", "bytes", math.Round(2*gib*sp/100)),
			m("swap.used_percent", "%", sp),
		)
		for i, mount := range []string{"/", "/var"} {
			dp := disk[i].next(r)
			metrics = append(metrics,
				m("disk.total_bytes", "bytes", 200*gib, "mount", mount),
				m("disk.used_bytes", "bytes", math.Round(200*gib*dp/100), "mount", mount),
				m("disk.used_percent", "%", dp, "mount", mount))
		}
		metrics = append(metrics,
			m("disk.read_bytes_per_sec", "bytes/s", rd.next(r), "device", "sda"),
			m("disk.write_bytes_per_sec", "bytes/s", wr.next(r), "device", "sda"))
		for i, iface := range []string{"eth0", "eth1"} {
			metrics = append(metrics,
				m("net.rx_bytes_per_sec", "bytes/s", rx[i].next(r), "interface", iface),
				m("net.tx_bytes_per_sec", "bytes/s", tx[i].next(r), "interface", iface))
		}
		for _, pr := range procs {
			metrics = append(metrics,
				m("process.cpu_percent", "%", pr.cpu.next(r), "pid", pr.pid, "comm", pr.comm),
				m("process.rss_bytes", "bytes", math.Round(pr.rss.next(r)), "pid", pr.pid, "comm", pr.comm))
		}
		return &monitorpb.Snapshot{HostId: id, Timestamp: ts, Tags: labels, Metrics: metrics}
	}
	// Backfill: history from now-backfill up to now, a hundred snapshots
	// per batch, so charts and ranges have data at once.
	var seq uint64 = 1
	lastTS := int64(0)
	if backfill > 0 {
		step := max(int64(interval/time.Second), 1)
		now := time.Now().Unix()
		var batch []*monitorpb.Snapshot
		for ts := now - int64(backfill/time.Second); ts < now; ts += step {
			batch = append(batch, build(ts))
			lastTS = ts
			if len(batch) == 100 || ts+step >= now {
				err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: &monitorpb.Batch{Seq: seq, Snapshots: batch}}})
				if err != nil {
					return fmt.Errorf("send backfill batch %d for %s: %w", seq, id, err)
				}
				seq++
				batch = nil
			}
		}
	}
	hb := time.NewTicker(5 * time.Second)
	defer hb.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-acked:
			return err
		case <-hb.C:
			if _, err := client.Heartbeat(ctx, &monitorpb.HeartbeatRequest{HostId: id, Timestamp: time.Now().Unix()}); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "simfleet: heartbeat %s: %v\n", id, err)
			}
			continue
		case <-tick.C:
		}
		ts := max(time.Now().Unix(), lastTS+1)
		if interval < time.Second {
			ts = lastTS + 1
			if lastTS == 0 {
				ts = time.Now().Unix()
			}
		}
		lastTS = ts
		snap := build(ts)
		err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: &monitorpb.Batch{Seq: seq, Snapshots: []*monitorpb.Snapshot{snap}}}})
		if err != nil {
			return fmt.Errorf("send batch %d for %s: %w", seq, id, err)
		}
		seq++
	}
}
