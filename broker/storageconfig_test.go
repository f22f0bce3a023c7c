package broker

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
)

// TestRedisShardsConfig checks that every shard key of the YAML reaches the
// Redis backend's configuration.
func TestRedisShardsConfig(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not checked here"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := `
storage:
  backend: redis
  layout: compact
  ttl: 48h
  rollups:
    minute_ttl: 240h
    hour_ttl: 2000h
  redis:
    read_from_replicas: true
    read_chunk: 64
    shards:
      - addr: 10.0.0.1:6379
        replicas: [10.0.0.2:6379, 10.0.0.3:6379]
        username: monitor
        password: s3cret
        tls:
          enabled: true
          ca_file: ` + ca + `
          server_name: redis.internal
      - addr: 10.0.0.4:6379
        db: 2
      - name: cluster-a
        cluster: true
        addrs: [10.0.1.1:7000, 10.0.1.2:7000]
query:
  max_points: 5000
  raw_interval: 10s
`
	cfg := DefaultConfig()
	if err := config.Decode([]byte(yaml), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	got := cfg.redisStoreConfig()
	want := redisstore.Config{
		Shards: []redisstore.ShardConfig{
			{Name: "10.0.0.1:6379", Addr: "10.0.0.1:6379", Replicas: []string{"10.0.0.2:6379", "10.0.0.3:6379"}, Username: "monitor", Password: "s3cret",
				TLS: redisstore.TLSConfig{Enabled: true, CAFile: ca, ServerName: "redis.internal"}},
			{Name: "10.0.0.4:6379/2", Addr: "10.0.0.4:6379", DB: 2},
			{Name: "cluster-a", Cluster: true, ClusterAddrs: []string{"10.0.1.1:7000", "10.0.1.2:7000"}},
		},
		KeyPrefix:        "monitor:",
		Retention:        48 * time.Hour,
		HostTTL:          7 * 24 * time.Hour,
		Rollups:          storage.RollupRetention{Minute: 240 * time.Hour, Hour: 2000 * time.Hour},
		ReadFromReplicas: true,
		VirtualNodes:     50,
		ReadChunk:        64,
		Layout:           redisstore.LayoutCompact,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("redisStoreConfig =\n%#v\nwant\n%#v", got, want)
	}
	q := cfg.queryOptions()
	if q.MaxPoints != 5000 || q.RawInterval != 10*time.Second || q.RawRetention != 48*time.Hour || q.Rollups != want.Rollups || q.NoRollups {
		t.Fatalf("queryOptions = %+v", q)
	}

	cfg.Storage.Rollups.Enabled = false
	if !cfg.redisStoreConfig().NoRollups || !cfg.embeddedOptions().NoRollups || !cfg.queryOptions().NoRollups {
		t.Fatal("storage.rollups.enabled: false does not reach the stores and the queries")
	}
}

// TestShardErrorsHidePassword: a bad shard is named by its key, never by
// its password.
func TestShardErrorsHidePassword(t *testing.T) {
	for _, shard := range []string{
		"{addr: 10.0.0.1:6379, password: s3cret-pw, db: 99}",
		"{addr: 10.0.0.1:6379, password: s3cret-pw, replicas: [10.0.0.2]}",
		"{addr: 10.0.0.1:6379, password: s3cret-pw, tls: {enabled: true, cert_file: x}}",
		"{cluster: true, password: s3cret-pw, addrs: [10.0.0.1:7000]}",
	} {
		cfg := DefaultConfig()
		if err := config.Decode([]byte("storage: {backend: redis, redis: {shards: ["+shard+"]}}"), &cfg); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "storage.redis.shards[0]") {
			t.Fatalf("Validate(%s) = %v, want an error naming the shard", shard, err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("Validate(%s) = %v: shows the password", shard, err)
		}
	}
}

// TestStorageLayoutDefault: without storage.layout the Redis backend keeps
// the seed's layout.
func TestStorageLayoutDefault(t *testing.T) {
	cfg := DefaultConfig()
	if err := config.Decode([]byte("storage: {backend: redis, redis: {shards: [{addr: 10.0.0.1:6379}]}}"), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.redisStoreConfig().Layout; got != redisstore.LayoutSeed {
		t.Fatalf("default layout = %q, want seed", got)
	}
}
