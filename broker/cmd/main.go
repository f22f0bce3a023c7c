// Command broker runs one broker: bin/broker -config configs/broker.yaml.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/pkg/config"
)

func main() {
	fs := flag.NewFlagSet("broker", flag.ExitOnError)
	cfgPath := fs.String("config", "", "YAML config file (configs/broker.yaml)")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	cfg := broker.DefaultConfig()
	flags := config.NewFlags(fs)
	cfg.BindFlags(flags)
	_ = fs.Parse(os.Args[1:])

	if err := load(*cfgPath, &cfg, flags); err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(2)
	}
	if *check {
		fmt.Println("config ok")
		return
	}
	logger, err := config.Logger(*logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker: -log-level:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := broker.New(ctx, cfg, logger)
	if err != nil {
		logger.Error("start broker", "err", err)
		os.Exit(1)
	}
	if err := b.Run(ctx); err != nil {
		logger.Error("broker", "err", err)
		os.Exit(1)
	}
}

func load(path string, cfg *broker.Config, flags *config.Flags) error {
	if err := config.Load(path, cfg); err != nil {
		return err
	}
	if err := flags.Apply(); err != nil {
		return err
	}
	cfg.ApplyEnv()
	return cfg.Validate()
}
