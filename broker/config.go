package broker

import (
	"fmt"
	"strings"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
)

// Config is the broker's configuration; configs/broker.yaml documents every
// key. DefaultConfig holds the seed's numbers.
type Config struct {
	NodeID     string `yaml:"node_id"`
	GRPCListen string `yaml:"grpc_listen"`
	HTTPListen string `yaml:"http_listen"`
	DataDir    string `yaml:"data_dir"`

	Storage StorageConfig `yaml:"storage"`
	Hash    HashConfig    `yaml:"hash"`
	Ingest  IngestConfig  `yaml:"ingest"`
	Hosts   HostsConfig   `yaml:"hosts"`
	Query   QueryConfig   `yaml:"query"`
	Raft    RaftConfig    `yaml:"raft"`

	MaxRecvMsgBytes int             `yaml:"max_recv_msg_bytes"`
	ShutdownTimeout config.Duration `yaml:"shutdown_timeout"`
}

// StorageConfig selects and configures the storage backend.
type StorageConfig struct {
	Backend    string          `yaml:"backend"` // embedded | redis
	KeyPrefix  string          `yaml:"key_prefix"`
	TTL        config.Duration `yaml:"ttl"`
	DefaultTTL config.Duration `yaml:"default_ttl"`
	Redis      RedisConfig     `yaml:"redis"`
	Embedded   EmbeddedConfig  `yaml:"embedded"`
}

// RedisConfig lists the Redis shards.
type RedisConfig struct {
	Shards    []RedisShard `yaml:"shards"`
	ReadChunk int          `yaml:"read_chunk"`
}

// RedisShard is one Redis primary.
type RedisShard struct {
	Addr     string `yaml:"addr"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	DB       int    `yaml:"db"`
	TLS      bool   `yaml:"tls"`
}

// EmbeddedConfig tunes the on-disk store.
type EmbeddedConfig struct {
	SweepInterval config.Duration `yaml:"sweep_interval"`
}

// HashConfig is the consistent-hash ring.
type HashConfig struct {
	VirtualNodes int `yaml:"virtual_nodes"`
}

// IngestConfig bounds what one agent batch may carry.
type IngestConfig struct {
	MaxBatchSnapshots     int             `yaml:"max_batch_snapshots"`
	MaxSamplesPerSnapshot int             `yaml:"max_samples_per_snapshot"`
	MaxFutureSkew         config.Duration `yaml:"max_future_skew"`
	WriteTimeout          config.Duration `yaml:"write_timeout"`
	RetryAfter            config.Duration `yaml:"retry_after"`
}

// HostsConfig is the host registry's liveness.
type HostsConfig struct {
	HeartbeatInterval config.Duration `yaml:"heartbeat_interval"`
	OfflineAfter      config.Duration `yaml:"offline_after"`
}

// QueryConfig bounds range queries.
type QueryConfig struct {
	MaxRange config.Duration `yaml:"max_range"`
	Timeout  config.Duration `yaml:"timeout"`
}

// RaftConfig holds the seed's Raft timings. The Raft control plane lands
// with the cluster issue; until then these keys are validated only.
type RaftConfig struct {
	Listen           string          `yaml:"listen"`
	HeartbeatTimeout config.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout  config.Duration `yaml:"election_timeout"`
}

// DefaultConfig returns the defaults: the seed's numbers.
func DefaultConfig() Config {
	return Config{
		NodeID:     "broker-1",
		GRPCListen: ":9093",
		HTTPListen: ":9095",
		DataDir:    "data/broker",
		Storage: StorageConfig{
			Backend:    "embedded",
			KeyPrefix:  "monitor:",
			TTL:        config.Duration(7 * 24 * time.Hour),
			DefaultTTL: config.Duration(7 * 24 * time.Hour),
			Redis:      RedisConfig{ReadChunk: 256},
			Embedded:   EmbeddedConfig{SweepInterval: config.Duration(10 * time.Minute)},
		},
		Hash: HashConfig{VirtualNodes: 50},
		Ingest: IngestConfig{
			MaxBatchSnapshots:     1000,
			MaxSamplesPerSnapshot: 10000,
			MaxFutureSkew:         config.Duration(10 * time.Minute),
			WriteTimeout:          config.Duration(5 * time.Second),
			RetryAfter:            config.Duration(time.Second),
		},
		Hosts: HostsConfig{
			HeartbeatInterval: config.Duration(10 * time.Second),
			OfflineAfter:      config.Duration(30 * time.Second),
		},
		Query: QueryConfig{
			MaxRange: config.Duration(7 * 24 * time.Hour),
			Timeout:  config.Duration(30 * time.Second),
		},
		Raft: RaftConfig{
			Listen:           ":9094",
			HeartbeatTimeout: config.Duration(500 * time.Millisecond),
			ElectionTimeout:  config.Duration(time.Second),
		},
		MaxRecvMsgBytes: 4 << 20,
		ShutdownTimeout: config.Duration(10 * time.Second),
	}
}

// Validate checks every key and names the first bad one.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		return config.Errorf("node_id", "is empty; want a name unique in the cluster such as broker-1")
	}
	checks := []error{
		config.Addr("grpc_listen", c.GRPCListen, false),
		config.Addr("http_listen", c.HTTPListen, true),
		config.Addr("raft.listen", c.Raft.Listen, true),
		config.DurationIn("storage.ttl", c.Storage.TTL, time.Minute, 10*365*24*time.Hour),
		config.DurationIn("storage.default_ttl", c.Storage.DefaultTTL, time.Minute, 10*365*24*time.Hour),
		config.IntIn("storage.redis.read_chunk", c.Storage.Redis.ReadChunk, 1, 100000),
		config.DurationIn("storage.embedded.sweep_interval", c.Storage.Embedded.SweepInterval, time.Second, 24*time.Hour),
		config.IntIn("hash.virtual_nodes", c.Hash.VirtualNodes, 1, 10000),
		config.IntIn("ingest.max_batch_snapshots", c.Ingest.MaxBatchSnapshots, 1, 100000),
		config.IntIn("ingest.max_samples_per_snapshot", c.Ingest.MaxSamplesPerSnapshot, 1, 1000000),
		config.DurationIn("ingest.max_future_skew", c.Ingest.MaxFutureSkew, time.Second, 24*time.Hour),
		config.DurationIn("ingest.write_timeout", c.Ingest.WriteTimeout, 100*time.Millisecond, 5*time.Minute),
		config.DurationIn("ingest.retry_after", c.Ingest.RetryAfter, 10*time.Millisecond, 5*time.Minute),
		config.DurationIn("hosts.heartbeat_interval", c.Hosts.HeartbeatInterval, time.Second, time.Hour),
		config.DurationIn("hosts.offline_after", c.Hosts.OfflineAfter, time.Second, 24*time.Hour),
		config.DurationIn("query.max_range", c.Query.MaxRange, time.Minute, 10*365*24*time.Hour),
		config.DurationIn("query.timeout", c.Query.Timeout, 100*time.Millisecond, 10*time.Minute),
		config.DurationIn("raft.heartbeat_timeout", c.Raft.HeartbeatTimeout, 10*time.Millisecond, time.Minute),
		config.DurationIn("raft.election_timeout", c.Raft.ElectionTimeout, 10*time.Millisecond, time.Minute),
		config.IntIn("max_recv_msg_bytes", c.MaxRecvMsgBytes, 64<<10, 256<<20),
		config.DurationIn("shutdown_timeout", c.ShutdownTimeout, 100*time.Millisecond, 10*time.Minute),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if c.Hosts.OfflineAfter < c.Hosts.HeartbeatInterval {
		return config.Errorf("hosts.offline_after", "%s is shorter than hosts.heartbeat_interval %s; a live host would flap offline", c.Hosts.OfflineAfter, c.Hosts.HeartbeatInterval)
	}
	if c.Raft.ElectionTimeout < c.Raft.HeartbeatTimeout {
		return config.Errorf("raft.election_timeout", "%s is shorter than raft.heartbeat_timeout %s", c.Raft.ElectionTimeout, c.Raft.HeartbeatTimeout)
	}
	if c.Storage.KeyPrefix == "" || strings.ContainsAny(c.Storage.KeyPrefix, " {}\t\r\n") {
		return config.Errorf("storage.key_prefix", "%q must be non-empty without spaces or braces, e.g. \"monitor:\"", c.Storage.KeyPrefix)
	}
	switch c.Storage.Backend {
	case "embedded":
		if c.DataDir == "" {
			return config.Errorf("data_dir", "is empty; the embedded backend keeps its file there")
		}
	case "redis":
		if len(c.Storage.Redis.Shards) == 0 {
			return config.Errorf("storage.redis.shards", "is empty; list at least one shard (addr: host:port) or use -storage redis://host:port")
		}
		seen := map[string]bool{}
		for i, s := range c.Storage.Redis.Shards {
			key := fmt.Sprintf("storage.redis.shards[%d]", i)
			if err := config.Addr(key+".addr", s.Addr, false); err != nil {
				return err
			}
			if seen[s.Addr] {
				return config.Errorf(key+".addr", "%q is listed twice", s.Addr)
			}
			seen[s.Addr] = true
			if err := config.IntIn(key+".db", s.DB, 0, 15); err != nil {
				return err
			}
		}
	default:
		return config.Errorf("storage.backend", "%q is not a backend; allowed: embedded, redis", c.Storage.Backend)
	}
	return nil
}

// SetStorageSpec applies the -storage flag: "embedded", or a comma-separated
// list of redis://[user:pass@]host:port[/db] shards.
func (c *Config) SetStorageSpec(spec string) error {
	if spec == "embedded" {
		c.Storage.Backend = "embedded"
		return nil
	}
	shards, err := redisstore.ParseSpec(spec)
	if err != nil {
		return err
	}
	c.Storage.Backend = "redis"
	c.Storage.Redis.Shards = c.Storage.Redis.Shards[:0]
	for _, s := range shards {
		c.Storage.Redis.Shards = append(c.Storage.Redis.Shards, RedisShard{Addr: s.Addr, Username: s.Username, Password: s.Password, DB: s.DB, TLS: s.TLS})
	}
	return nil
}

// BindFlags binds the command-line flags of DESIGN.md §4.
func (c *Config) BindFlags(f *config.Flags) {
	f.String("grpc", "gRPC listen address (agents, visualization), e.g. :9093", func(v string) error { c.GRPCListen = v; return nil })
	f.String("raft", "Raft listen address, e.g. :9094", func(v string) error { c.Raft.Listen = v; return nil })
	f.String("http", "HTTP listen address for /healthz, e.g. :9095", func(v string) error { c.HTTPListen = v; return nil })
	f.String("data", "data directory (embedded storage)", func(v string) error { c.DataDir = v; return nil })
	f.String("node-id", "this broker's id", func(v string) error { c.NodeID = v; return nil })
	f.String("storage", "embedded, or redis://[user:pass@]host:port[/db][,redis://...]", c.SetStorageSpec)
}
