// Command loadgen simulates a fleet of agents against one or more brokers
// and prints one summary line (DESIGN.md §4):
//
//	bin/loadgen -broker 127.0.0.1:9093 -hosts 10000 -interval 5s -duration 60s
//
// Every host has its own Ingest stream with its own sequence numbers and
// handles acks and flow control as the agent does (pkg/loadgen). -interval
// 0 makes every host send as fast as its window of unacknowledged batches
// allows (saturation). -json prints the result as a JSON object instead.
//
// Against a secured broker: -tls (with -tls-ca, and -tls-cert/-tls-key for
// mTLS) and -agent-secret-file F (or MONITOR_AGENT_SECRET), from which every
// simulated host gets its own agent token (pkg/grpcauth), as a real agent
// would be given one. Tokens go in clear text only to loopback brokers.
// The exit status is 1 when snapshots sent were never acknowledged (lost)
// or the run could not start, 2 on bad flags.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
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
	useTLS := fs.Bool("tls", false, "connect to the brokers over TLS")
	tlsCA := fs.String("tls-ca", "", "PEM roots for the brokers' certificates (default: the system roots)")
	tlsCert := fs.String("tls-cert", "", "client certificate (PEM), for brokers that require mTLS")
	tlsKey := fs.String("tls-key", "", "the client certificate's key (PEM)")
	tlsServerName := fs.String("tls-server-name", "", "name checked in the brokers' certificates (default: the host dialed)")
	secretFile := fs.String("agent-secret-file", "", "file holding the brokers' agent secret: each simulated host sends its own token (default: env MONITOR_AGENT_SECRET, if set)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (logs go to stderr)")
	_ = fs.Parse(os.Args[1:])

	logger, err := config.Logger(*logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: -log-level:", err)
		os.Exit(2)
	}
	cfg := loadgen.Config{
		Brokers: config.SplitList(*brokers), Hosts: *hosts, Interval: *interval, Duration: *duration,
		Metrics: *metrics, Conns: *conns, Window: *window, Drain: *drain, Prefix: *prefix, Stamp: *stamp,
	}
	tc := tlsconfig.Config{Enabled: *useTLS, CAFile: *tlsCA, CertFile: *tlsCert, KeyFile: *tlsKey, ServerName: *tlsServerName}
	if err := secure(&cfg, tc, *secretFile); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	g, err := loadgen.New(cfg, logger)
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

// secure sets the TLS dial options and the per-host agent tokens.
func secure(cfg *loadgen.Config, tc tlsconfig.Config, secretFile string) error {
	if tc.Enabled {
		if err := tc.Validate("-tls"); err != nil {
			return err
		}
		dial, err := grpcauth.Client{TLS: tc}.DialOptions()
		if err != nil {
			return fmt.Errorf("-tls: %w", err)
		}
		cfg.DialOptions = dial
	} else if tc.CAFile != "" || tc.CertFile != "" || tc.KeyFile != "" || tc.ServerName != "" {
		return fmt.Errorf("-tls-ca, -tls-cert, -tls-key and -tls-server-name need -tls")
	}
	secret := []byte(os.Getenv("MONITOR_AGENT_SECRET"))
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return fmt.Errorf("-agent-secret-file: %w", err)
		}
		secret = bytes.TrimSpace(b)
	}
	if len(secret) == 0 {
		return nil
	}
	if !tc.Enabled {
		for _, b := range cfg.Brokers {
			if !grpcauth.IsLoopback(b) {
				return fmt.Errorf("agent tokens would cross the network in clear text to %s: use -tls (tokens go without TLS only to loopback brokers)", b)
			}
		}
	}
	if _, err := grpcauth.Mint(secret, "probe"); err != nil {
		return fmt.Errorf("agent secret: %w", err)
	}
	cfg.Token = func(host string) string {
		t, _ := grpcauth.Mint(secret, host) // the secret was checked above
		return t
	}
	return nil
}
