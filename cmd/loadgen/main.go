// Command loadgen simulates a fleet of agents against one or more brokers
// and prints one summary line (DESIGN.md §4):
//
//	bin/loadgen -broker 127.0.0.1:9093 -hosts 10000 -interval 5s -duration 60s
//
// Every host has its own Ingest stream with its own sequence numbers and
// handles acks and flow control as the agent does (pkg/loadgen). -interval
// 0 makes every host send as fast as its window of unacknowledged batches
// allows (saturation). -json prints the result as a JSON object instead.
// The exit status is 1 when snapshots sent were never acknowledged (lost)
// or the run could not start, 2 on bad flags.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/loadgen"
)

func main() {
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	brokers := fs.String("broker", "127.0.0.1:9093", "broker gRPC address(es), comma-separated")
	hosts := fs.Int("hosts", 100, "simulated hosts, each with its own Ingest stream")
	interval := fs.Duration("interval", 5*time.Second, "snapshot interval per host; 0 = as fast as acks allow")
	duration := fs.Duration("duration", 30*time.Second, "how long to generate; 0 = until interrupted")
	metrics := fs.Int("metrics", 50, "metrics per snapshot")
	conns := fs.Int("conns", 0, "gRPC connections (0 = one per 1000 hosts, at most 64)")
	window := fs.Int("window", 8, "unacknowledged batches per host (the agent's max_inflight_batches)")
	drain := fs.Duration("drain", 10*time.Second, "wait for outstanding acks after generating")
	prefix := fs.String("prefix", "lg", "host id prefix (ids are PREFIX-00001, ...)")
	stamp := fs.Bool("stamp", false, "set cpu.usage_percent of every snapshot to its generation time in Unix ms (end-to-end latency probes)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (logs go to stderr)")
	_ = fs.Parse(os.Args[1:])

	logger, err := config.Logger(*logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: -log-level:", err)
		os.Exit(2)
	}
	g, err := loadgen.New(loadgen.Config{
		Brokers: config.SplitList(*brokers), Hosts: *hosts, Interval: *interval, Duration: *duration,
		Metrics: *metrics, Conns: *conns, Window: *window, Drain: *drain, Prefix: *prefix, Stamp: *stamp,
	}, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := g.Run(ctx)
	if err != nil {
		logger.Error("loadgen", "err", err)
		os.Exit(1)
	}
	if *asJSON {
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
	} else {
		fmt.Println("loadgen:", res)
	}
	if res.Lost > 0 {
		os.Exit(1)
	}
}
