// Command convert-layout moves a running cluster's Redis data from one key
// layout to the other (redisstore.Store.ConvertAll; docs/storage.md,
// "Changing the layout"):
//
//	convert-layout -config configs/broker.yaml -to compact [-storage redis://a:6379,redis://b:6379]
//
// First restart the brokers one by one with storage.layout set to the new
// layout (every broker reads both layouts, so nothing disappears while some
// still write the old one), then run this once; running it again is
// harmless. List every shard of the current ring (monitorctl shows it):
// each shard's hosts are converted in place on that shard. Do not run it
// while a ring change is moving hosts.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "convert-layout:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("convert-layout", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "the brokers' YAML configuration (storage.*)")
	spec := fs.String("storage", "", "redis://[user:pass@]host:port[/db][,redis://...]: the shards, overriding the file's")
	to := fs.String("to", "", "the layout to convert to: seed or compact")
	quiet := fs.Bool("q", false, "print only the summary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	layout, err := redisstore.ParseLayout(*to)
	if err != nil || *to == "" {
		return fmt.Errorf("-to must be seed or compact")
	}
	cfg := broker.DefaultConfig()
	if *cfgPath != "" {
		if err := config.Load(*cfgPath, &cfg); err != nil {
			return err
		}
	}
	if *spec != "" {
		if err := cfg.SetStorageSpec(*spec); err != nil {
			return err
		}
	}
	cfg.Storage.Layout = string(layout)
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Storage.Backend != "redis" {
		return fmt.Errorf("storage.backend is %q: only the redis backend has layouts", cfg.Storage.Backend)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	store, err := redisstore.New(ctx, cfg.RedisStoreConfig(), nil)
	if err != nil {
		return err
	}
	defer store.Close()
	start := time.Now()
	hosts := 0
	n, err := store.ConvertAll(ctx, func(shard, host string, snapshots int) {
		hosts++
		if !*quiet {
			fmt.Printf("%s %s: %d snapshots\n", shard, host, snapshots)
		}
	})
	fmt.Printf("converted %d snapshots of %d hosts to the %s layout in %s\n", n, hosts, layout, time.Since(start).Round(time.Millisecond))
	return err
}
