package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

// ShardConfig is one shard: a Redis primary with optional read replicas,
// or (Cluster) a Redis Cluster reached through seed nodes. Its String and
// LogValue never show the password.
type ShardConfig struct {
	// Name is the shard's member on the hash ring. Default: Addr, with
	// "/db" appended when DB is not 0. A cluster shard must set it. Hosts
	// move when a name changes, so name shards whose address may change.
	Name string
	// Addr is the primary, host:port (not for a cluster shard).
	Addr string
	// Replicas are read replicas of the primary, host:port. History reads
	// (Range, RangeRollup) go to them when Config.ReadFromReplicas is set.
	Replicas []string
	// Username and Password authenticate (Redis 6 ACL user; an empty
	// Username is the default user). Used for every node of the shard.
	Username string
	Password string
	DB       int // 0 … 15; a cluster has only 0
	TLS      TLSConfig
	// Cluster makes the shard a Redis Cluster; ClusterAddrs are its seed
	// nodes. Keys then carry a hash tag on the host id (see the package
	// comment), so all of a host's keys share one slot. With
	// Config.ReadFromReplicas, history reads go to the cluster's replicas.
	Cluster      bool
	ClusterAddrs []string
}

// TLSConfig is a shard's TLS client configuration.
type TLSConfig struct {
	Enabled bool
	// CAFile is a PEM bundle of the roots that sign the servers'
	// certificates; empty: the system roots.
	CAFile string
	// CertFile and KeyFile are a client certificate and key (PEM), for
	// servers that require one (Redis tls-auth-clients yes, its default).
	CertFile string
	KeyFile  string
	// ServerName is the name checked in the server certificate; empty: the
	// host of the address dialed.
	ServerName string
	// InsecureSkipVerify accepts any server certificate. For tests only.
	InsecureSkipVerify bool
}

// name is the shard's ring member and the name used in errors and logs.
func (c ShardConfig) name() string {
	if c.Name != "" {
		return c.Name
	}
	if c.Cluster {
		return ""
	}
	if c.DB != 0 {
		return c.Addr + "/" + strconv.Itoa(c.DB)
	}
	return c.Addr
}

// String describes the shard without its password.
func (c ShardConfig) String() string {
	var b strings.Builder
	if c.Cluster {
		fmt.Fprintf(&b, "cluster %s %v", c.name(), c.ClusterAddrs)
	} else {
		b.WriteString(c.name())
		if len(c.Replicas) > 0 {
			fmt.Fprintf(&b, " replicas %v", c.Replicas)
		}
	}
	if c.Username != "" {
		fmt.Fprintf(&b, " user %s", c.Username)
	}
	if c.Password != "" {
		b.WriteString(" password ***")
	}
	if c.TLS.Enabled {
		b.WriteString(" tls")
	}
	return b.String()
}

// LogValue logs the shard without its password.
func (c ShardConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

func (c ShardConfig) validate(i int) error {
	what := fmt.Sprintf("shard %d", i+1)
	if c.Cluster {
		if c.Name == "" {
			return fmt.Errorf("%s is a cluster and has no name (set one: it is the shard's ring member)", what)
		}
		if c.Addr != "" || len(c.Replicas) > 0 {
			return fmt.Errorf("shard %s is a cluster: list its seed nodes in the cluster addresses, not as addr or replicas", c.Name)
		}
		if len(c.ClusterAddrs) == 0 {
			return fmt.Errorf("shard %s is a cluster with no seed addresses", c.Name)
		}
		if c.DB != 0 {
			return fmt.Errorf("shard %s is a cluster, which has only database 0 (db is %d)", c.Name, c.DB)
		}
		for _, a := range c.ClusterAddrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("shard %s: cluster address %q is not host:port", c.Name, a)
			}
		}
	} else {
		if c.Addr == "" {
			return fmt.Errorf("%s has no address", what)
		}
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return fmt.Errorf("%s address %q is not host:port", what, c.Addr)
		}
		if len(c.ClusterAddrs) > 0 {
			return fmt.Errorf("shard %s has cluster addresses but is not a cluster", c.name())
		}
		for _, a := range c.Replicas {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("shard %s: replica address %q is not host:port", c.name(), a)
			}
			if a == c.Addr {
				return fmt.Errorf("shard %s lists its primary as a replica", c.name())
			}
		}
	}
	if c.DB < 0 {
		return fmt.Errorf("shard %s: database %d is negative", c.name(), c.DB)
	}
	if c.TLS.Enabled && (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return fmt.Errorf("shard %s: TLS needs both a client certificate and its key, or neither", c.name())
	}
	return nil
}

// build returns the crypto/tls configuration (nil when TLS is off): the
// same client side as every other link's (pkg/tlsconfig), so a shard's
// client certificate is re-read when its files change. Files are read
// here, so a bad path fails New, not the first write.
func (t TLSConfig) build() (*tls.Config, error) {
	return tlsconfig.Config{
		Enabled: t.Enabled, CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify,
	}.Client()
}

// shard is one shard's clients and key names.
type shard struct {
	name string
	// client is the primary (or the cluster, routing to primaries): every
	// write, and the reads that must be fresh (Latest, Hosts).
	client redis.UniversalClient
	// replicas serve history reads when ReadFromReplicas is set, in turn;
	// for a cluster shard, one read-only cluster client.
	replicas []redis.UniversalClient
	next     atomic.Uint32
	keys     keyspace
	cluster  bool
	conf     ShardConfig
	// refs counts the topologies that hold the shard (topology.go); the
	// last one to let go closes it.
	refs atomic.Int64
}

// writePipeline is a MULTI/EXEC pipeline on a single server. A Redis
// Cluster runs a transaction only within one slot, so a cluster shard
// writes through a plain pipeline, which go-redis splits per node: writes
// are idempotent and the caller retries a failed call, so a call that
// failed half-way is completed by its retry.
func (sh *shard) writePipeline() redis.Pipeliner {
	if sh.cluster {
		return sh.client.Pipeline()
	}
	return sh.client.TxPipeline()
}

// openShard creates the shard's clients; it does not dial.
func openShard(sc ShardConfig, name, prefix string, readFromReplicas bool) (*shard, error) {
	tlsCfg, err := sc.TLS.build()
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", name, err)
	}
	sh := &shard{name: name, keys: keyspace{prefix: prefix, tag: sc.Cluster}, cluster: sc.Cluster, conf: sc}
	noMaint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if sc.Cluster {
		opts := func(readOnly bool) *redis.ClusterOptions {
			return &redis.ClusterOptions{
				Addrs:    sc.ClusterAddrs,
				Username: sc.Username,
				Password: sc.Password,
				// RESP2: HGETALL replies are flat arrays (see the package doc).
				Protocol:                 2,
				TLSConfig:                tlsCfg,
				ReadOnly:                 readOnly,
				RouteRandomly:            readOnly,
				DisableIdentity:          true,
				MaintNotificationsConfig: noMaint,
			}
		}
		sh.client = redis.NewClusterClient(opts(false))
		if readFromReplicas {
			sh.replicas = []redis.UniversalClient{redis.NewClusterClient(opts(true))}
		}
		return sh, nil
	}
	opts := func(addr string) *redis.Options {
		return &redis.Options{
			Addr:     addr,
			Username: sc.Username,
			Password: sc.Password,
			DB:       sc.DB,
			// RESP2: HGETALL replies are flat arrays (see the package doc).
			Protocol:                 2,
			TLSConfig:                tlsCfg,
			DisableIdentity:          true,
			MaintNotificationsConfig: noMaint,
		}
	}
	sh.client = redis.NewClient(opts(sc.Addr))
	if readFromReplicas {
		for _, a := range sc.Replicas {
			sh.replicas = append(sh.replicas, redis.NewClient(opts(a)))
		}
	}
	return sh, nil
}

func (sh *shard) close() error {
	var errs []error
	for _, c := range append([]redis.UniversalClient{sh.client}, sh.replicas...) {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close redis shard %s: %w", sh.name, err))
		}
	}
	return errors.Join(errs...)
}

// history runs a history read on a replica, in turn, when the shard has
// any, and on the primary when it has none or the replica fails (a
// replica that is down costs a warning, not the query).
func (s *Store) history(ctx context.Context, sh *shard, what string, read func(c redis.UniversalClient) error) error {
	if len(sh.replicas) == 0 {
		return read(sh.client)
	}
	c := sh.replicas[int(sh.next.Add(1))%len(sh.replicas)]
	err := read(c)
	if err == nil || ctx.Err() != nil {
		return err
	}
	s.logger.Warn("redis replica read failed; reading from the primary", "shard", sh.name, "read", what, "err", err)
	return read(sh.client)
}
