package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/agent"
	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/config"
)

// TestSeedLayoutAfterRealAgentRun runs a real agent against a real broker on
// a real redis-server, then reads the raw keys with a plain client and finds
// exactly the seed's layout (DESIGN.md §6), TTLs included.
func TestSeedLayoutAfterRealAgentRun(t *testing.T) {
	defer goleak.VerifyNone(t) // every goroutine of broker and agent ends with Run
	rs := redistest.Start(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	bcfg := broker.DefaultConfig()
	bcfg.GRPCListen, bcfg.HTTPListen, bcfg.Raft.Listen, bcfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	if err := bcfg.SetStorageSpec("redis://" + rs.Addr); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(ctx, bcfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	bctx, stopBroker := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(bctx) }()

	acfg := agent.DefaultConfig()
	acfg.HostID = "layout-host"
	acfg.Labels = map[string]string{"role": "db"}
	acfg.Brokers = []string{b.GRPCAddr()}
	acfg.DataDir = t.TempDir()
	acfg.Interval = config.Duration(time.Second)
	acfg.CollectorTimeout = config.Duration(500 * time.Millisecond)
	a, err := agent.New(acfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	eventually(t, 20*time.Second, func() error {
		if n := b.Stats().SnapshotsStored; n < 3 {
			return fmt.Errorf("%d snapshots stored", n)
		}
		return nil
	})
	stopAgent()
	if err := <-adone; err != nil {
		t.Fatalf("agent: %v", err)
	}
	stopBroker()
	if err := <-bdone; err != nil {
		t.Fatalf("broker: %v", err)
	}

	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	keys, err := rdb.Keys(ctx, "*").Result() // our own throw-away Redis: KEYS is fine in a test
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 7 * 24 * time.Hour
	checkTTL := func(key string, want time.Duration) {
		d, err := rdb.TTL(ctx, key).Result()
		if err != nil || d <= want-time.Minute || d > want {
			t.Errorf("TTL of %s = %v (err %v), want about %v", key, d, err, want)
		}
	}
	index := "monitor:index:metrics:layout-host"
	var hashes []string
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "monitor:metrics:layout-host:"):
			hashes = append(hashes, k)
		case k == index, k == "monitor:hosts", k == "monitor:host:layout-host":
		case strings.HasPrefix(k, "monitor:rollup:1m:layout-host:"), strings.HasPrefix(k, "monitor:rollup:1h:layout-host:"),
			strings.HasPrefix(k, "monitor:rollup:seen:layout-host:"),
			k == "monitor:index:rollup:1m:layout-host", k == "monitor:index:rollup:1h:layout-host":
			// The rollups (docs/storage.md); pkg/storage/redisstore's
			// tests check their contents.
			if d := rdb.TTL(ctx, k).Val(); d <= 0 {
				t.Errorf("rollup key %s has TTL %v", k, d)
			}
		default:
			t.Errorf("undocumented key %q", k)
		}
	}
	if len(hashes) < 3 {
		t.Fatalf("found %d metric hashes: %v", len(hashes), keys)
	}
	members, err := rdb.ZRangeWithScores(ctx, index, 0, -1).Result()
	if err != nil || len(members) != len(hashes) {
		t.Fatalf("index has %d members (err %v), %d hashes exist", len(members), err, len(hashes))
	}
	checkTTL(index, ttl)
	for _, m := range members {
		key := m.Member.(string)
		ts, err := strconv.ParseInt(strings.TrimPrefix(key, "monitor:metrics:layout-host:"), 10, 64)
		if err != nil || float64(ts) != m.Score {
			t.Fatalf("index member %q score %v: member must be the full hash key and score its timestamp", key, m.Score)
		}
		if typ := rdb.Type(ctx, key).Val(); typ != "hash" {
			t.Fatalf("%s is a %s, want hash", key, typ)
		}
		checkTTL(key, ttl)
		fields, err := rdb.HGetAll(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if fields["host_id"] != "layout-host" || fields["timestamp"] != strconv.FormatInt(ts, 10) {
			t.Fatalf("%s: host_id=%q timestamp=%q", key, fields["host_id"], fields["timestamp"])
		}
		if fields["tag:role"] != "db" {
			t.Errorf("%s: tag:role = %q, want the agent's label as a tag", key, fields["tag:role"])
		}
		metrics := 0
		for f, v := range fields {
			switch {
			case f == "host_id" || f == "timestamp" || strings.HasPrefix(f, "tag:"):
			case strings.HasPrefix(f, "metric:"):
				metrics++
				var val map[string]json.RawMessage
				if err := json.Unmarshal([]byte(v), &val); err != nil || len(val) != 2 || val["value"] == nil || val["unit"] == nil {
					t.Fatalf("%s %s = %s: want exactly {\"value\":..,\"unit\":..}", key, f, v)
				}
				var num float64
				if err := json.Unmarshal(val["value"], &num); err != nil {
					t.Fatalf("%s %s: value %s is not a JSON number", key, f, val["value"])
				}
			default:
				t.Errorf("%s: undocumented field %q", key, f)
			}
		}
		for _, want := range []string{"metric:mem.used_percent", "metric:mem.used_bytes"} {
			if _, ok := fields[want]; !ok {
				t.Errorf("%s has no %s", key, want)
			}
		}
		if metrics < 10 {
			t.Errorf("%s has only %d metrics", key, metrics)
		}
	}
	if typ := rdb.Type(ctx, "monitor:host:layout-host").Val(); typ != "hash" {
		t.Errorf("host record is a %s", typ)
	}
	checkTTL("monitor:host:layout-host", 7*24*time.Hour)
}
