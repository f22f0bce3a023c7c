package faults

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/loadgen"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// startBroker runs an in-process broker over the Redis shard at addr.
func startBroker(t *testing.T, redisAddr string, mod func(*broker.Config)) *broker.Broker {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Ingest.RetryAfter = config.Duration(100 * time.Millisecond)
	cfg.Ingest.WriteTimeout = config.Duration(time.Second)
	if err := cfg.SetStorageSpec("redis://" + redisAddr); err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := broker.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("broker: %v", err)
		}
	})
	return b
}

// load runs a loadgen in the background; stop ends it and returns its result.
type load struct {
	g    *loadgen.Generator
	log  *ackLog
	mu   sync.Mutex
	fc   int
	stop context.CancelFunc
	done chan struct{}
	res  loadgen.Result
	err  error
}

func startLoad(t *testing.T, cfg loadgen.Config) *load {
	t.Helper()
	l := &load{log: newAckLog(), done: make(chan struct{})}
	cfg.OnAck = l.log.onAck
	cfg.OnFlowControl = func(string, *monitorpb.FlowControl) {
		l.mu.Lock()
		l.fc++
		l.mu.Unlock()
	}
	g, err := loadgen.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l.g = g
	ctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	go func() {
		defer close(l.done)
		l.res, l.err = g.Run(ctx)
	}()
	t.Cleanup(func() { l.finish() })
	return l
}

func (l *load) flowControls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fc
}

func (l *load) finish() (loadgen.Result, error) {
	l.stop()
	<-l.done
	return l.res, l.err
}

// progress waits until every host has n more acks than now.
func (l *load) progress(t *testing.T, n int, within time.Duration, what string) {
	t.Helper()
	before := l.log.counts()
	hosts := l.g.Hosts()
	eventually(t, within, func() error {
		if h := behind(l.log.counts(), before, hosts, n); h != "" {
			return fmt.Errorf("%s: host %s has fewer than %d new acks", what, h, n)
		}
		return nil
	})
}

// drain waits until the generator holds nothing unsent and at most one
// batch per host is in flight (its steady state), and returns how long that
// took.
func (l *load) drain(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	hosts := uint64(len(l.g.Hosts()))
	eventually(t, within, func() error {
		if s := l.g.Stats(); s.Unsent != 0 || s.Lost > hosts {
			return fmt.Errorf("backlog not drained: %d unsent, %d in flight", s.Unsent, s.Lost)
		}
		return nil
	})
	return time.Since(start)
}

// verifyStored checks every acknowledged snapshot in Redis (whole: fields =
// metrics + host_id, timestamp and extra) and returns how many it checked
// and how many were missing or partial.
func verifyStored(t *testing.T, redisAddr string, log *ackLog, fields int64) (checked, lost int) {
	t.Helper()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	log.mu.Lock()
	acked := map[string][]int64{}
	for h, ts := range log.acked {
		acked[h] = append([]int64(nil), ts...)
	}
	log.mu.Unlock()
	for h, tss := range acked {
		pipe := rdb.Pipeline()
		var cmds []*redis.IntCmd
		for _, ts := range tss {
			cmds = append(cmds, pipe.HLen(ctx, fmt.Sprintf("monitor:metrics:%s:%d", h, ts)))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("read back host %s: %v", h, err)
		}
		for i, c := range cmds {
			checked++
			if c.Val() != fields {
				lost++
				if lost <= 5 {
					t.Errorf("host %s: acknowledged snapshot %d has %d fields, want %d", h, tss[i], c.Val(), fields)
				}
			}
		}
	}
	return checked, lost
}
