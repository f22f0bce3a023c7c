// Command agent collects this host's metrics and streams them to a broker:
// bin/agent -config configs/agent.yaml. With -once it prints one snapshot
// as JSON and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/monitorhq/monitor/agent"
	"github.com/monitorhq/monitor/pkg/config"
)

func main() {
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	cfgPath := fs.String("config", "", "YAML config file (configs/agent.yaml)")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	once := fs.Bool("once", false, "print one snapshot as JSON and exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	cfg := agent.DefaultConfig()
	flags := config.NewFlags(fs)
	cfg.BindFlags(flags)
	_ = fs.Parse(os.Args[1:])

	if err := load(*cfgPath, &cfg, flags); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(2)
	}
	if *check {
		fmt.Println("config ok")
		return
	}
	logger, err := config.Logger(*logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent: -log-level:", err)
		os.Exit(2)
	}
	if cfg.GoMaxProcs > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(cfg.GoMaxProcs)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *once {
		snap, err := agent.CollectOnce(ctx, cfg, logger)
		if err != nil {
			logger.Error("collect", "err", err)
			os.Exit(1)
		}
		out, err := protojson.MarshalOptions{Multiline: true, EmitDefaultValues: true}.Marshal(snap)
		if err != nil {
			logger.Error("encode snapshot", "err", err)
			os.Exit(1)
		}
		fmt.Println(string(out))
		return
	}
	a, err := agent.New(cfg, logger)
	if err != nil {
		logger.Error("start agent", "err", err)
		os.Exit(1)
	}
	if err := a.Run(ctx); err != nil {
		logger.Error("agent", "err", err)
		os.Exit(1)
	}
}

func load(path string, cfg *agent.Config, flags *config.Flags) error {
	if err := config.Load(path, cfg); err != nil {
		return err
	}
	if err := flags.Apply(); err != nil {
		return err
	}
	return cfg.Validate()
}
