// Command bench is the benchmark harness behind `make bench` and
// `make bench-quick` (DESIGN.md §7): end-to-end figures measured as ratios
// against the raw limit in the same run, on this machine, with the command
// that produced each.
//
//	go run ./bench [-quick] [-only phase,...] [-out bench/results.json] [-report BENCHMARKS.md] [-bin bin]
//
// It starts its own redis-servers on free loopback ports and runs the
// built binaries (bin/broker, bin/loadgen, bin/visualization, bin/agent;
// `make build` first). The phases, in order (-only names):
//
//   - ingest: snapshots/s through loadgen → broker → one Redis (rollups on
//     and off), against a raw go-redis pipeline loop writing the same keys
//     (the seed's layout, MULTI/EXEC, the broker's flush size and
//     concurrency) and against the Redis store's own WriteSnapshots;
//     through the broker onto the embedded backend, and that backend's own
//     write rate; CPU per snapshot of every process; ack latency;
//   - shards (shards.go): the same with three Redis shards, against the
//     raw loop routing hosts with the store's ring;
//   - memory: Redis bytes per stored sample (INFO used_memory delta over
//     the samples written at a 5 s interval), rollups on and off;
//   - queries: QueryRange p50/p99 through the broker for 1 h, 24 h and 7 d
//     of one host at a 5 s interval, every series;
//   - compact (compact.go): bytes per sample of the seed and compact layouts;
//   - e2e (e2e.go): agent send → WebSocket client receive, p50/p99, at 1k
//     and 10k simulated hosts every 5 s and 1k every 1 s (loadgen -stamp
//     → broker → Redis → visualization → WebSocket);
//   - fanout (e2e.go): 1,000 and 10,000 WebSocket clients of one
//     visualization server, delivery p50/p99;
//   - agent (agent.go): the real bin/agent's RSS and CPU per collection at
//     5 s and 1 s, from /proc;
//   - growth (growth.go): broker CPU per snapshot, broker RSS and Redis
//     used_memory at 1k → 10k → 50k hosts every 5 s (offered and achieved
//     rate); with -report, the table and docs/img/growth.png;
//   - quic (quic.go): WebSocket vs WebTransport through a lossy proxy;
//   - cluster (cluster.go): three bin/broker in a Raft cluster — control-
//     plane write latency at the leader and through a follower, the rate a
//     ring change moves hosts (a second Redis shard added), and election
//     time after kill -9 of the leader (median of several kills);
//   - micro (micro.go, not in -quick): go test -bench summaries.
//
// Throughput figures are medians of several runs. It prints a table and
// writes the JSON file; -report rewrites the generated part of
// BENCHMARKS.md. With -quick (CI, about 70 s) it runs everything once,
// short and small; it fails only on errors or lost samples, never on
// timing. A phase that fails is recorded and the others still run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/monitorhq/monitor/internal/redistest"
)

// figure is one measured number.
type figure struct {
	Name    string    `json:"name"`
	Value   float64   `json:"value"` // median of Runs
	Unit    string    `json:"unit"`
	Runs    []float64 `json:"runs,omitempty"`
	Command string    `json:"command"`
	Note    string    `json:"note,omitempty"`
	Phase   string    `json:"phase,omitempty"` // the phase (-only name) that measured it
	Run     string    `json:"run,omitempty"`   // when (UTC) the run that measured it started
}

type results struct {
	Machine  machine          `json:"machine"`
	Mode     string           `json:"mode"`
	Started  string           `json:"started"`
	Seconds  float64          `json:"seconds"`
	Params   params           `json:"params"`
	Figures  []figure         `json:"figures"`
	Loadgen  map[string][]any `json:"loadgen_runs"`
	Growth   []growthPoint    `json:"growth,omitempty"`
	Failures []string         `json:"failures,omitempty"`
}

// params are the knobs of one harness run.
type params struct {
	Runs       int    `json:"runs"`
	Duration   string `json:"duration"`
	Hosts      int    `json:"hosts"`
	Metrics    int    `json:"metrics"`
	FlushSize  int    `json:"flush_snapshots"`
	Workers    int    `json:"workers"`
	RangeDays  int    `json:"range_days"`
	MemHosts   int    `json:"memory_hosts"`
	MemPerHost int    `json:"memory_snapshots_per_host"`
}

type harness struct {
	p      params
	bin    string
	tmp    string
	redis  *redistest.Server
	log    *slog.Logger
	res    *results
	failed []string
	only   map[string]bool // phases to run; empty: all
	phase  string          // the phase running
}

func main() {
	quick := flag.Bool("quick", false, "short single runs for CI (fails only on errors or lost samples)")
	out := flag.String("out", "bench/results.json", "where to write the results")
	bin := flag.String("bin", "bin", "directory of the built broker and loadgen binaries")
	runs := flag.Int("runs", 3, "runs per throughput figure (the median is reported)")
	dur := flag.Duration("duration", 8*time.Second, "length of one throughput run")
	hosts := flag.Int("hosts", 500, "simulated hosts in the saturation runs")
	only := flag.String("only", "", "comma-separated phases to run ("+strings.Join(phaseNames, ", ")+"); empty: all; \"report\" alone: only rewrite -report from the -out file")
	report := flag.String("report", "", "after a full run, regenerate the generated part of this Markdown file (BENCHMARKS.md) and docs/img/growth.png from the results; with -only, the figures of the other phases are kept from the existing -out file")
	plot := flag.String("plot", "docs/img/growth.png", "where -report draws the growth plot")
	flag.Parse()

	p := params{Runs: *runs, Duration: dur.String(), Hosts: *hosts, Metrics: 50, FlushSize: 256, Workers: 2, RangeDays: 7, MemHosts: 50, MemPerHost: 720}
	if *quick {
		p.Runs, p.Duration, p.Hosts, p.RangeDays, p.MemHosts, p.MemPerHost = 1, "2s", 200, 1, 20, 360
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := time.Now()
	h := &harness{p: p, bin: *bin, log: logger, res: &results{Mode: map[bool]string{true: "quick", false: "full"}[*quick], Started: start.UTC().Format(time.RFC3339), Params: p, Loadgen: map[string][]any{}}}
	for _, p := range strings.Split(*only, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if h.only == nil {
				h.only = map[string]bool{}
			}
			h.only[p] = true
		}
	}
	if len(h.only) == 1 && h.only["report"] {
		// -only report: no measurement; the report from the -out file.
		var res results
		b, err := os.ReadFile(*out)
		if err == nil {
			err = json.Unmarshal(b, &res)
		}
		if err == nil {
			err = writeReport(*report, *plot, &res)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	code := 0
	if err := h.run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		h.failed = append(h.failed, err.Error())
	}
	h.res.Seconds = time.Since(start).Seconds()
	h.res.Failures = h.failed
	h.print(os.Stdout)
	final := h.res
	if len(h.only) > 0 && !*quick {
		final = mergeResults(*out, h.res, h.only)
	}
	if err := writeJSON(*out, final); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
	}
	if *report != "" && !*quick {
		if err := writeReport(*report, *plot, final); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			code = 1
		}
	}
	if len(h.failed) > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d failure(s):\n  %s\n", len(h.failed), strings.Join(h.failed, "\n  "))
		code = 1
	}
	os.Exit(code)
}

func (h *harness) run() error {
	for _, b := range []string{"broker", "loadgen"} {
		if _, err := os.Stat(filepath.Join(h.bin, b)); err != nil {
			return fmt.Errorf("%s/%s is missing; run make build first: %w", h.bin, b, err)
		}
	}
	var err error
	if h.tmp, err = os.MkdirTemp("", "monitor-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(h.tmp)
	h.res.Machine = facts()
	if h.redis, err = redistest.Launch(h.tmp); err != nil {
		return err
	}
	defer h.redis.Stop()
	h.res.Machine.Redis = redisVersion(h.redis.Addr)

	ctx := context.Background()
	phases := []struct {
		name string
		run  func(context.Context) error
	}{
		{"ingest", h.ingest},
		{"shards", h.shards}, // shards.go: three Redis shards against the raw loop
		{"memory", h.memory},
		{"queries", h.queries},
		{"compact", h.compactLayouts},
		{"e2e", h.e2e},       // e2e.go: loadgen → broker → visualization → WebSocket
		{"fanout", h.fanout}, // e2e.go: 1k and 10k WebSocket clients
		{"agent", h.agentFootprint},
		{"growth", h.growth}, // growth.go: 1k → 10k → 50k hosts
		// bench/quic.go: WebSocket vs WebTransport through a lossy proxy
		{"quic", func(ctx context.Context) error { h.quicFigures(ctx); return nil }},
		{"cluster", h.cluster},
		{"micro", h.micro}, // micro.go: go test -bench summaries (not in -quick)
	}
	for _, p := range phases {
		if len(h.only) > 0 && !h.only[p.name] {
			continue
		}
		if p.name == "micro" && h.res.Mode == "quick" {
			continue
		}
		h.phase = p.name
		t0 := time.Now()
		// A phase's error is a failure of the run; the other phases go on.
		if err := p.run(ctx); err != nil {
			h.fail("%s: %v", p.name, err)
		}
		h.log.Warn("phase done", "phase", p.name, "took", time.Since(t0).Round(time.Second))
	}
	return nil
}

// phaseNames are the -only names, in run order.
var phaseNames = []string{"ingest", "shards", "memory", "queries", "compact", "e2e", "fanout", "agent", "growth", "quic", "cluster", "micro"}

// fail records a correctness failure (errors, lost samples); the run goes on.
func (h *harness) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.log.Error(msg)
	h.failed = append(h.failed, msg)
}

func (h *harness) add(f figure) {
	if len(f.Runs) > 0 {
		f.Value = median(f.Runs)
	}
	f.Phase, f.Run = h.phase, h.res.Started
	h.res.Figures = append(h.res.Figures, f)
}

func (h *harness) figure(name string) float64 {
	for _, f := range h.res.Figures {
		if f.Name == name {
			return f.Value
		}
	}
	return 0
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (h *harness) print(w io.Writer) {
	m := h.res.Machine
	fmt.Fprintf(w, "monitor bench (%s) — %s, %d CPUs, %s, %s, %s, redis %s\n\n", h.res.Mode, m.CPU, m.CPUs, m.Memory, m.Kernel, m.Go, m.Redis)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmedian\tunit\truns\tcommand")
	for _, f := range h.res.Figures {
		runs := make([]string, len(f.Runs))
		for i, r := range f.Runs {
			runs[i] = trim(r)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Name, trim(f.Value), f.Unit, strings.Join(runs, " "), f.Command)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%.0f s; results in JSON with the notes of every figure\n", h.res.Seconds)
}

func trim(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
