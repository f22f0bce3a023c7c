package broker

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/monitorhq/monitor/broker/internal/authz"
	"github.com/monitorhq/monitor/broker/internal/service"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/embedded"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

// Config is the broker's configuration; configs/broker.yaml documents every
// key. DefaultConfig holds the seed's numbers.
type Config struct {
	NodeID        string `yaml:"node_id"`
	GRPCListen    string `yaml:"grpc_listen"`
	GRPCAdvertise string `yaml:"grpc_advertise"`
	HTTPListen    string `yaml:"http_listen"`
	DataDir       string `yaml:"data_dir"`

	Storage StorageConfig `yaml:"storage"`
	Hash    HashConfig    `yaml:"hash"`
	Ingest  IngestConfig  `yaml:"ingest"`
	Hosts   HostsConfig   `yaml:"hosts"`
	Query   QueryConfig   `yaml:"query"`
	Raft    RaftConfig    `yaml:"raft"`
	Cluster ClusterConfig `yaml:"cluster"`

	// GRPCTLS is the gRPC listener's TLS (docs/configuration.md "TLS
	// blocks"); the brokers also use its certificate and ca_file when they
	// dial each other (Join, Forward) and, with raft.tls, for Raft.
	GRPCTLS tlsconfig.Config `yaml:"grpc_tls"`
	// HTTPTLS serves http_listen (/metrics, /federate, /healthz, /readyz)
	// as HTTPS; client_auth require lets only scrapers with a client
	// certificate signed by its ca_file in.
	HTTPTLS tlsconfig.Config `yaml:"http_tls"`
	Auth    AuthConfig       `yaml:"auth"`

	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes"`
	// MaxConcurrentStreams bounds the streams of one gRPC connection (a
	// load generator multiplexes up to 1000 hosts on one).
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
	// MaxConnections and MaxConnectionsPerIP bound the gRPC listener's open
	// connections (0: no limit); past them a new connection is closed at
	// once and counted.
	MaxConnections      int             `yaml:"max_connections"`
	MaxConnectionsPerIP int             `yaml:"max_connections_per_ip"`
	ShutdownTimeout     config.Duration `yaml:"shutdown_timeout"`
}

// AuthConfig is who may call the broker (docs/security.md "Agent
// identity"). With no agent secret and cert_identity none, agents are not
// authenticated and reads are open (a warning is logged at start).
type AuthConfig struct {
	// AgentSecrets sign agent tokens (pkg/grpcauth); any listed one is
	// accepted, so a secret is rotated by adding the new one first. Env
	// MONITOR_AGENT_SECRETS (comma-separated) overrides. Never logged.
	AgentSecrets []string `yaml:"agent_secrets"`
	// CertIdentity lets a verified client certificate name the agent's host
	// instead of a token: none, uri (URI SAN monitor://host/<id>) or cn.
	CertIdentity string `yaml:"cert_identity"`
	// RevokedHosts are refused even with a valid token or certificate.
	RevokedHosts []string `yaml:"revoked_hosts"`
}

// enabled reports whether agents must authenticate.
func (a AuthConfig) enabled() bool {
	return len(a.AgentSecrets) > 0 || (a.CertIdentity != "" && a.CertIdentity != authz.CertIdentityNone)
}

// StorageConfig selects and configures the storage backend.
type StorageConfig struct {
	Backend string `yaml:"backend"` // embedded | redis
	// Layout is the Redis backend's key layout: seed (the seed's HASH per
	// snapshot, default) or compact (compressed chunks, docs/storage.md).
	Layout     string          `yaml:"layout"`
	KeyPrefix  string          `yaml:"key_prefix"`
	TTL        config.Duration `yaml:"ttl"`
	DefaultTTL config.Duration `yaml:"default_ttl"`
	Rollups    RollupsConfig   `yaml:"rollups"`
	Redis      RedisConfig     `yaml:"redis"`
	Embedded   EmbeddedConfig  `yaml:"embedded"`
}

// RollupsConfig is the 1-minute and 1-hour aggregates kept as data arrives
// (both backends).
type RollupsConfig struct {
	Enabled   bool            `yaml:"enabled"`
	MinuteTTL config.Duration `yaml:"minute_ttl"`
	HourTTL   config.Duration `yaml:"hour_ttl"`
}

// RedisConfig lists the Redis shards.
type RedisConfig struct {
	Shards           []RedisShard `yaml:"shards"`
	ReadFromReplicas bool         `yaml:"read_from_replicas"`
	ReadChunk        int          `yaml:"read_chunk"`
}

// RedisShard is one shard: a primary with optional replicas, or a Redis
// Cluster (cluster: true, seed nodes in addrs).
type RedisShard struct {
	Name     string   `yaml:"name"`
	Addr     string   `yaml:"addr"`
	Replicas []string `yaml:"replicas"`
	Username string   `yaml:"username"`
	Password string   `yaml:"password"`
	DB       int      `yaml:"db"`
	TLS      RedisTLS `yaml:"tls"`
	Cluster  bool     `yaml:"cluster"`
	Addrs    []string `yaml:"addrs"`
}

// RedisTLS is a shard's TLS client configuration.
type RedisTLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// EmbeddedConfig tunes the on-disk store.
type EmbeddedConfig struct {
	SweepInterval config.Duration `yaml:"sweep_interval"`
}

// HashConfig is the consistent-hash ring.
type HashConfig struct {
	VirtualNodes int `yaml:"virtual_nodes"`
}

// IngestConfig bounds what one agent batch may carry and tunes the write
// path (the Ingest streams and the write queue, pkg/queue).
type IngestConfig struct {
	MaxBatchSnapshots     int `yaml:"max_batch_snapshots"`
	MaxSamplesPerSnapshot int `yaml:"max_samples_per_snapshot"`
	// MaxSeriesPerHost caps the distinct series one host may write per
	// clock hour (a cardinality bomb); samples of new series past it are
	// rejected and counted.
	MaxSeriesPerHost   int             `yaml:"max_series_per_host"`
	MaxFutureSkew      config.Duration `yaml:"max_future_skew"`
	WriteTimeout       config.Duration `yaml:"write_timeout"`
	RetryAfter         config.Duration `yaml:"retry_after"`
	MaxInflightBatches int             `yaml:"max_inflight_batches"`
	Queue              QueueConfig     `yaml:"queue"`
}

// QueueConfig is the write queue: one lane per storage shard, each flushed
// as one pipeline when it holds flush_snapshots or its oldest snapshot
// waited flush_interval.
type QueueConfig struct {
	Capacity       int             `yaml:"capacity"`
	FlushSnapshots int             `yaml:"flush_snapshots"`
	FlushInterval  config.Duration `yaml:"flush_interval"`
	Workers        int             `yaml:"workers"`
}

// HostsConfig is the host registry's liveness.
type HostsConfig struct {
	HeartbeatInterval config.Duration `yaml:"heartbeat_interval"`
	OfflineAfter      config.Duration `yaml:"offline_after"`
}

// QueryConfig bounds range queries.
type QueryConfig struct {
	MaxRange    config.Duration `yaml:"max_range"`
	Timeout     config.Duration `yaml:"timeout"`
	MaxPoints   int             `yaml:"max_points"`
	RawInterval config.Duration `yaml:"raw_interval"`
}

// RaftConfig is the control plane's Raft member: transport, timings (the
// seed's 500 ms heartbeat and 1 s election timeout), how it forms or joins
// a cluster, and snapshots.
type RaftConfig struct {
	Listen            string          `yaml:"listen"`
	Advertise         string          `yaml:"advertise"`
	HeartbeatTimeout  config.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout   config.Duration `yaml:"election_timeout"`
	Join              []string        `yaml:"join"`
	SnapshotThreshold int             `yaml:"snapshot_threshold"`
	SnapshotInterval  config.Duration `yaml:"snapshot_interval"`
	TrailingLogs      int             `yaml:"trailing_logs"`
	// TLS wraps Raft's TCP connections in mutual TLS with grpc_tls's
	// certificate, verified against grpc_tls.ca_file both ways.
	TLS bool `yaml:"tls"`
}

// ClusterConfig holds the cluster API's credentials. The secret is shared
// by the brokers (joining, forwarding writes) and the visualization server
// (alert rules); the admin user runs monitorctl's changes.
type ClusterConfig struct {
	Secret        string `yaml:"secret"`
	AdminUser     string `yaml:"admin_user"`
	AdminPassword string `yaml:"admin_password"`
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
			Layout:     string(redisstore.LayoutSeed),
			KeyPrefix:  "monitor:",
			TTL:        config.Duration(7 * 24 * time.Hour),
			DefaultTTL: config.Duration(7 * 24 * time.Hour),
			Rollups: RollupsConfig{
				Enabled:   true,
				MinuteTTL: config.Duration(storage.DefaultMinuteRetention),
				HourTTL:   config.Duration(storage.DefaultHourRetention),
			},
			Redis:    RedisConfig{ReadChunk: 256},
			Embedded: EmbeddedConfig{SweepInterval: config.Duration(10 * time.Minute)},
		},
		Hash: HashConfig{VirtualNodes: 50},
		Ingest: IngestConfig{
			MaxBatchSnapshots:     1000,
			MaxSamplesPerSnapshot: 10000,
			MaxSeriesPerHost:      10000,
			MaxFutureSkew:         config.Duration(10 * time.Minute),
			WriteTimeout:          config.Duration(5 * time.Second),
			RetryAfter:            config.Duration(time.Second),
			MaxInflightBatches:    16,
			Queue: QueueConfig{
				Capacity:       20000,
				FlushSnapshots: 256,
				FlushInterval:  config.Duration(5 * time.Millisecond),
				Workers:        2,
			},
		},
		Hosts: HostsConfig{
			HeartbeatInterval: config.Duration(10 * time.Second),
			OfflineAfter:      config.Duration(30 * time.Second),
		},
		Query: QueryConfig{
			MaxRange:    config.Duration(7 * 24 * time.Hour),
			Timeout:     config.Duration(30 * time.Second),
			MaxPoints:   service.DefaultMaxPoints,
			RawInterval: config.Duration(service.DefaultRawInterval),
		},
		Raft: RaftConfig{
			Listen:            ":9094",
			HeartbeatTimeout:  config.Duration(500 * time.Millisecond),
			ElectionTimeout:   config.Duration(time.Second),
			SnapshotThreshold: 8192,
			SnapshotInterval:  config.Duration(2 * time.Minute),
			TrailingLogs:      10240,
		},
		Cluster:              ClusterConfig{AdminUser: "admin"},
		Auth:                 AuthConfig{CertIdentity: authz.CertIdentityNone},
		MaxRecvMsgBytes:      4 << 20,
		MaxConcurrentStreams: 4096,
		MaxConnections:       20000,
		ShutdownTimeout:      config.Duration(10 * time.Second),
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
		config.Addr("raft.listen", c.Raft.Listen, false),
		optAddr("grpc_advertise", c.GRPCAdvertise),
		optAddr("raft.advertise", c.Raft.Advertise),
		config.IntIn("raft.snapshot_threshold", c.Raft.SnapshotThreshold, 16, 10000000),
		config.DurationIn("raft.snapshot_interval", c.Raft.SnapshotInterval, time.Second, 24*time.Hour),
		config.IntIn("raft.trailing_logs", c.Raft.TrailingLogs, 0, 10000000),
		config.DurationIn("storage.ttl", c.Storage.TTL, time.Minute, 10*365*24*time.Hour),
		config.DurationIn("storage.default_ttl", c.Storage.DefaultTTL, time.Minute, 10*365*24*time.Hour),
		config.IntIn("storage.redis.read_chunk", c.Storage.Redis.ReadChunk, 1, 100000),
		config.DurationIn("storage.embedded.sweep_interval", c.Storage.Embedded.SweepInterval, time.Second, 24*time.Hour),
		config.IntIn("hash.virtual_nodes", c.Hash.VirtualNodes, 1, 10000),
		config.IntIn("ingest.max_batch_snapshots", c.Ingest.MaxBatchSnapshots, 1, 100000),
		config.IntIn("ingest.max_samples_per_snapshot", c.Ingest.MaxSamplesPerSnapshot, 1, 1000000),
		config.IntIn("ingest.max_series_per_host", c.Ingest.MaxSeriesPerHost, 1, 10000000),
		config.DurationIn("ingest.max_future_skew", c.Ingest.MaxFutureSkew, time.Second, 24*time.Hour),
		config.DurationIn("ingest.write_timeout", c.Ingest.WriteTimeout, 100*time.Millisecond, 5*time.Minute),
		config.DurationIn("ingest.retry_after", c.Ingest.RetryAfter, 10*time.Millisecond, 5*time.Minute),
		config.IntIn("ingest.max_inflight_batches", c.Ingest.MaxInflightBatches, 1, 1024),
		config.IntIn("ingest.queue.capacity", c.Ingest.Queue.Capacity, 1, 10000000),
		config.IntIn("ingest.queue.flush_snapshots", c.Ingest.Queue.FlushSnapshots, 1, 100000),
		config.DurationIn("ingest.queue.flush_interval", c.Ingest.Queue.FlushInterval, 100*time.Microsecond, 10*time.Second),
		config.IntIn("ingest.queue.workers", c.Ingest.Queue.Workers, 1, 64),
		config.DurationIn("hosts.heartbeat_interval", c.Hosts.HeartbeatInterval, time.Second, time.Hour),
		config.DurationIn("hosts.offline_after", c.Hosts.OfflineAfter, time.Second, 24*time.Hour),
		config.DurationIn("query.max_range", c.Query.MaxRange, time.Minute, 10*365*24*time.Hour),
		config.DurationIn("query.timeout", c.Query.Timeout, 100*time.Millisecond, 10*time.Minute),
		config.IntIn("query.max_points", c.Query.MaxPoints, 100, 1000000),
		config.DurationIn("query.raw_interval", c.Query.RawInterval, time.Second, time.Hour),
		config.DurationIn("storage.rollups.minute_ttl", c.Storage.Rollups.MinuteTTL, time.Hour, 10*365*24*time.Hour),
		config.DurationIn("storage.rollups.hour_ttl", c.Storage.Rollups.HourTTL, time.Hour, 10*365*24*time.Hour),
		config.DurationIn("raft.heartbeat_timeout", c.Raft.HeartbeatTimeout, 10*time.Millisecond, time.Minute),
		config.DurationIn("raft.election_timeout", c.Raft.ElectionTimeout, 10*time.Millisecond, time.Minute),
		config.IntIn("max_recv_msg_bytes", c.MaxRecvMsgBytes, 64<<10, 256<<20),
		config.IntIn("max_concurrent_streams", c.MaxConcurrentStreams, 1, 1<<20),
		config.IntIn("max_connections", c.MaxConnections, 0, 1<<24),
		config.IntIn("max_connections_per_ip", c.MaxConnectionsPerIP, 0, 1<<24),
		c.GRPCTLS.ValidateServer("grpc_tls"),
		c.validateHTTPTLS(),
		c.validateAuth(),
		config.DurationIn("shutdown_timeout", c.ShutdownTimeout, 100*time.Millisecond, 10*time.Minute),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if c.Ingest.Queue.FlushSnapshots > c.Ingest.Queue.Capacity {
		return config.Errorf("ingest.queue.flush_snapshots", "%d is larger than ingest.queue.capacity %d; a lane could never fill to it", c.Ingest.Queue.FlushSnapshots, c.Ingest.Queue.Capacity)
	}
	if c.Hosts.OfflineAfter < c.Hosts.HeartbeatInterval {
		return config.Errorf("hosts.offline_after", "%s is shorter than hosts.heartbeat_interval %s; a live host would flap offline", c.Hosts.OfflineAfter, c.Hosts.HeartbeatInterval)
	}
	for i, a := range c.Raft.Join {
		if err := config.Addr(fmt.Sprintf("raft.join[%d]", i), a, false); err != nil {
			return err
		}
	}
	if len(c.Raft.Join) > 0 && c.Storage.Backend == "embedded" {
		return config.Errorf("raft.join", "is set but storage.backend is embedded, which keeps data on this broker only; brokers of a cluster share Redis shards (storage.backend redis)")
	}
	if len(c.Raft.Join) > 0 && len(c.Cluster.Secret) < 16 {
		return config.Errorf("cluster.secret", "must be at least 16 characters to join a cluster (raft.join is set); set it, or MONITOR_CLUSTER_SECRET, to the same value on every broker")
	}
	if c.Cluster.Secret != "" && len(c.Cluster.Secret) < 16 {
		return config.Errorf("cluster.secret", "is %d characters; use at least 16 (e.g. openssl rand -hex 24)", len(c.Cluster.Secret))
	}
	if c.Cluster.AdminPassword != "" && (len(c.Cluster.AdminPassword) < 8 || c.Cluster.AdminUser == "") {
		return config.Errorf("cluster.admin_password", "needs cluster.admin_user and at least 8 characters")
	}
	if c.Raft.ElectionTimeout < c.Raft.HeartbeatTimeout {
		return config.Errorf("raft.election_timeout", "%s is shorter than raft.heartbeat_timeout %s", c.Raft.ElectionTimeout, c.Raft.HeartbeatTimeout)
	}
	if c.Storage.KeyPrefix == "" || strings.ContainsAny(c.Storage.KeyPrefix, " {}\t\r\n") {
		return config.Errorf("storage.key_prefix", "%q must be non-empty without spaces or braces, e.g. \"monitor:\"", c.Storage.KeyPrefix)
	}
	if _, err := redisstore.ParseLayout(c.Storage.Layout); err != nil {
		return config.Errorf("storage.layout", "%q is not a layout; allowed: seed, compact", c.Storage.Layout)
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
		names := map[string]int{}
		for i, s := range c.Storage.Redis.Shards {
			key := fmt.Sprintf("storage.redis.shards[%d]", i)
			if err := s.validate(key); err != nil {
				return err
			}
			name := s.storeConfig().Name
			if j, dup := names[name]; dup {
				what := key + ".addr"
				if s.Name != "" {
					what = key + ".name"
				}
				return config.Errorf(what, "%q is listed twice (also shards[%d]); each shard is one member of the hash ring", name, j)
			}
			names[name] = i
		}
	default:
		return config.Errorf("storage.backend", "%q is not a backend; allowed: embedded, redis", c.Storage.Backend)
	}
	return nil
}

// validateHTTPTLS checks http_tls: a server block on an HTTP port that
// exists.
func (c *Config) validateHTTPTLS() error {
	if c.HTTPTLS.Enabled && c.HTTPListen == "" {
		return config.Errorf("http_tls.enabled", "is true but http_listen is empty; there is no HTTP port to serve over TLS")
	}
	if c.HTTPTLS.ServerName != "" || c.HTTPTLS.InsecureSkipVerify {
		return config.Errorf("http_tls", "server_name and insecure_skip_verify are client keys; the HTTPS listener uses cert_file, key_file, ca_file and client_auth")
	}
	return c.HTTPTLS.ValidateServer("http_tls")
}

// validateAuth checks auth.* and raft.tls against grpc_tls.
func (c *Config) validateAuth() error {
	a := c.Auth
	for i, s := range a.AgentSecrets {
		if len(s) < grpcauth.MinSecretLen {
			return config.Errorf(fmt.Sprintf("auth.agent_secrets[%d]", i), "is %d characters; use at least %d (e.g. openssl rand -hex 24)", len(s), grpcauth.MinSecretLen)
		}
	}
	switch a.CertIdentity {
	case "", authz.CertIdentityNone:
	case authz.CertIdentityURI, authz.CertIdentityCN:
		if !c.GRPCTLS.Enabled || (c.GRPCTLS.ClientAuth != tlsconfig.ClientAuthRequest && c.GRPCTLS.ClientAuth != tlsconfig.ClientAuthRequire) {
			return config.Errorf("auth.cert_identity", "is %q but grpc_tls does not verify client certificates; set grpc_tls.enabled and grpc_tls.client_auth request or require", a.CertIdentity)
		}
	default:
		return config.Errorf("auth.cert_identity", "%q is not a mode; allowed none, uri, cn", a.CertIdentity)
	}
	for i, h := range a.RevokedHosts {
		if err := storage.ValidateHostID(h); err != nil {
			return config.Errorf(fmt.Sprintf("auth.revoked_hosts[%d]", i), "%v", err)
		}
	}
	if a.enabled() && c.Cluster.Secret == "" && c.Cluster.AdminPassword == "" {
		return config.Errorf("cluster.secret", "is empty (and so is cluster.admin_password) but auth is on: reads need the cluster secret, so nobody could read; set it (or MONITOR_CLUSTER_SECRET)")
	}
	if c.Raft.TLS {
		if !c.GRPCTLS.Enabled || c.GRPCTLS.CAFile == "" {
			return config.Errorf("raft.tls", "needs grpc_tls.enabled with cert_file, key_file and ca_file: Raft uses that certificate both ways, verified against ca_file")
		}
	}
	return nil
}

// brokerClientTLS is how this broker dials other brokers' gRPC: trusting
// grpc_tls.ca_file (system roots when empty) and presenting its own
// certificate (for brokers that require client certificates).
func (c *Config) brokerClientTLS() tlsconfig.Config {
	g := c.GRPCTLS
	return tlsconfig.Config{Enabled: g.Enabled, CertFile: g.CertFile, KeyFile: g.KeyFile, CAFile: g.CAFile}
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
		c.Storage.Redis.Shards = append(c.Storage.Redis.Shards, RedisShard{
			Addr: s.Addr, Username: s.Username, Password: s.Password, DB: s.DB, TLS: RedisTLS{Enabled: s.TLS.Enabled},
		})
	}
	return nil
}

// validate checks one shard; key is its config key
// (storage.redis.shards[i]). Errors never contain the password.
func (s *RedisShard) validate(key string) error {
	if s.Cluster {
		if s.Name == "" {
			return config.Errorf(key+".name", "is empty; a cluster shard needs a name (its member on the hash ring), e.g. cluster-a")
		}
		if s.Addr != "" || len(s.Replicas) > 0 {
			return config.Errorf(key+".addr", "is set on a cluster shard; list the cluster's seed nodes in addrs (the cluster finds its replicas itself)")
		}
		if len(s.Addrs) == 0 {
			return config.Errorf(key+".addrs", "is empty; a cluster shard needs at least one seed node host:port")
		}
		for j, a := range s.Addrs {
			if err := config.Addr(fmt.Sprintf("%s.addrs[%d]", key, j), a, false); err != nil {
				return err
			}
		}
		if s.DB != 0 {
			return config.Errorf(key+".db", "%d on a cluster shard; a Redis Cluster has only database 0", s.DB)
		}
	} else {
		if err := config.Addr(key+".addr", s.Addr, false); err != nil {
			return err
		}
		if len(s.Addrs) > 0 {
			return config.Errorf(key+".addrs", "is set but cluster is false; use addr (and replicas) for a single primary, or set cluster: true")
		}
		for j, a := range s.Replicas {
			if err := config.Addr(fmt.Sprintf("%s.replicas[%d]", key, j), a, false); err != nil {
				return err
			}
			if a == s.Addr {
				return config.Errorf(fmt.Sprintf("%s.replicas[%d]", key, j), "%q is the shard's primary", a)
			}
		}
		if err := config.IntIn(key+".db", s.DB, 0, 15); err != nil {
			return err
		}
	}
	if s.Name != "" && strings.ContainsAny(s.Name, " \t\r\n") {
		return config.Errorf(key+".name", "%q has white space", s.Name)
	}
	t := s.TLS
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
		return config.Errorf(key+".tls.enabled", "is false but other tls keys are set; set enabled: true or remove them")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return config.Errorf(key+".tls.cert_file", "and tls.key_file go together: set both (a client certificate) or neither")
	}
	for _, f := range []struct{ key, path string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return config.Errorf(key+".tls."+f.key, "%v", err)
		}
	}
	return nil
}

// storeConfig is the shard as pkg/storage/redisstore takes it.
func (s *RedisShard) storeConfig() redisstore.ShardConfig {
	sc := redisstore.ShardConfig{
		Name: s.Name, Addr: s.Addr, Replicas: s.Replicas, Username: s.Username, Password: s.Password, DB: s.DB,
		TLS: redisstore.TLSConfig{
			Enabled: s.TLS.Enabled, CAFile: s.TLS.CAFile, CertFile: s.TLS.CertFile, KeyFile: s.TLS.KeyFile,
			ServerName: s.TLS.ServerName, InsecureSkipVerify: s.TLS.InsecureSkipVerify,
		},
		Cluster: s.Cluster, ClusterAddrs: s.Addrs,
	}
	if sc.Name == "" && !sc.Cluster {
		sc.Name = sc.Addr
		if sc.DB != 0 {
			sc.Name = fmt.Sprintf("%s/%d", sc.Addr, sc.DB)
		}
	}
	return sc
}

// rollups is storage.rollups as the backends take it.
func (c *Config) rollups() storage.RollupRetention {
	return storage.RollupRetention{Minute: c.Storage.Rollups.MinuteTTL.D(), Hour: c.Storage.Rollups.HourTTL.D()}
}

// redisStoreConfig is the Redis backend's configuration (storage.backend
// redis).
func (c *Config) redisStoreConfig() redisstore.Config {
	shards := make([]redisstore.ShardConfig, len(c.Storage.Redis.Shards))
	for i := range c.Storage.Redis.Shards {
		shards[i] = c.Storage.Redis.Shards[i].storeConfig()
	}
	return redisstore.Config{
		Shards:           shards,
		KeyPrefix:        c.Storage.KeyPrefix,
		Retention:        c.Storage.TTL.D(),
		HostTTL:          c.Storage.DefaultTTL.D(),
		Rollups:          c.rollups(),
		NoRollups:        !c.Storage.Rollups.Enabled,
		ReadFromReplicas: c.Storage.Redis.ReadFromReplicas,
		VirtualNodes:     c.Hash.VirtualNodes,
		ReadChunk:        c.Storage.Redis.ReadChunk,
		Layout:           redisstore.Layout(c.Storage.Layout),
	}
}

// embeddedOptions are the embedded backend's options (storage.backend
// embedded).
func (c *Config) embeddedOptions() embedded.Options {
	return embedded.Options{
		Retention:     c.Storage.TTL.D(),
		SweepInterval: c.Storage.Embedded.SweepInterval.D(),
		HostTTL:       c.Storage.DefaultTTL.D(),
		Rollups:       c.rollups(),
		NoRollups:     !c.Storage.Rollups.Enabled,
	}
}

// queryOptions are the range queries' resolution choice: the query section
// and the retention of each resolution.
func (c *Config) queryOptions() service.QueryOptions {
	return service.QueryOptions{
		MaxPoints:    c.Query.MaxPoints,
		RawInterval:  c.Query.RawInterval.D(),
		RawRetention: c.Storage.TTL.D(),
		Rollups:      c.rollups(),
		NoRollups:    !c.Storage.Rollups.Enabled,
	}
}

// BindFlags binds the command-line flags of DESIGN.md §4.
func (c *Config) BindFlags(f *config.Flags) {
	f.String("grpc", "gRPC listen address (agents, visualization), e.g. :9093", func(v string) error { c.GRPCListen = v; return nil })
	f.String("raft", "Raft listen address, e.g. :9094", func(v string) error { c.Raft.Listen = v; return nil })
	f.String("http", "HTTP listen address for /healthz, e.g. :9095", func(v string) error { c.HTTPListen = v; return nil })
	f.String("data", "data directory (embedded storage)", func(v string) error { c.DataDir = v; return nil })
	f.String("node-id", "this broker's id", func(v string) error { c.NodeID = v; return nil })
	f.String("storage", "embedded, or redis://[user:pass@]host:port[/db][,redis://...]", c.SetStorageSpec)
	f.String("join", "gRPC address of any member of the cluster to join (comma-separated for several)", func(v string) error {
		c.Raft.Join = config.SplitList(v)
		return nil
	})
}

// ApplyEnv takes the cluster's credentials from the environment when set:
// MONITOR_CLUSTER_SECRET, MONITOR_ADMIN_PASSWORD and MONITOR_AGENT_SECRETS
// (comma-separated) (so they need not be written in the YAML).
func (c *Config) ApplyEnv() {
	if v := config.Env("MONITOR_CLUSTER_SECRET"); v != "" {
		c.Cluster.Secret = v
	}
	if v := config.Env("MONITOR_ADMIN_PASSWORD"); v != "" {
		c.Cluster.AdminPassword = v
	}
	if v := config.Env("MONITOR_AGENT_SECRETS"); v != "" {
		c.Auth.AgentSecrets = config.SplitList(v)
	}
}

// optAddr checks an optional host:port.
func optAddr(key, v string) error {
	if v == "" {
		return nil
	}
	return config.Addr(key, v, false)
}

// RedisStoreConfig is the Redis backend's configuration as the broker
// builds it from storage.* (for tools that open the same store, such as
// cmd/convert-layout).
func (c *Config) RedisStoreConfig() redisstore.Config { return c.redisStoreConfig() }
