package broker

// The broker's side of the cluster: its Raft member (broker/internal/control)
// and what follows the replicated state — the storage ring this broker
// writes by, the migrator on the leader, this broker's member record, and
// the host registry.
//
// Start-up: New starts the Raft member (bootstrapping a one-member cluster
// when raft.join is empty and the data dir holds no Raft state) and
// registers the ClusterService on the gRPC server; Run joins through
// raft.join and runs reconcile until the context ends. Ingest waits until
// the broker routes by the cluster's ring (service.Options.Ready).
// Shutdown: after the gRPC server has stopped (no more writes), Raft shuts
// down, then storage closes.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/broker/internal/control"
	"github.com/monitorhq/monitor/broker/internal/migrate"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// registryQueue bounds the registrations waiting to enter the Raft log;
// beyond it they are dropped and counted (the storage has them anyway).
const registryQueue = 4096

// registryRefresh is how old a registry record may get before a new
// registration of an unchanged host is written again.
const registryRefresh = time.Hour

type cluster struct {
	cfg   Config
	log   *slog.Logger
	node  *control.Node
	srv   *control.Server
	self  *monitorpb.Member
	redis *redisstore.Store // nil with the embedded backend

	ready     chan struct{} // closed once the store routes by the cluster's ring
	readyOnce sync.Once

	applyLatency prometheus.Histogram // control-plane writes applied on this node (leader)

	reg         chan *monitorpb.RegisteredHost
	regDropped  atomic.Uint64
	regWritten  atomic.Uint64
	regFailures atomic.Uint64

	topoKey string // the topology last given to the store

	dial []grpc.DialOption // to other brokers' gRPC (grpc_tls's client side)
}

// startCluster starts this broker's Raft member.
func startCluster(cfg Config, grpcAddr string, store storage.Store, logger *slog.Logger) (*cluster, error) {
	c := &cluster{cfg: cfg, log: logger.With("component", "cluster"), ready: make(chan struct{}),
		reg: make(chan *monitorpb.RegisteredHost, registryQueue),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "monitor_broker_raft_apply_seconds",
			Help:    "Control-plane writes on this member while it leads: time to replicate to a quorum and apply.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		})}
	if rs, ok := store.(*redisstore.Store); ok {
		c.redis = rs
	} else {
		close(c.ready) // one embedded store: there is no ring to wait for
	}
	grpcAdv := cfg.GRPCAdvertise
	if grpcAdv == "" {
		var err error
		if grpcAdv, err = advertise(grpcAddr); err != nil {
			return nil, fmt.Errorf("grpc_advertise: %w", err)
		}
	}
	raftAdv := cfg.Raft.Advertise
	host, _, err := net.SplitHostPort(cfg.Raft.Listen)
	if err != nil {
		return nil, fmt.Errorf("raft.listen %q: %w", cfg.Raft.Listen, err)
	}
	var raftServer, raftClient *tls.Config
	if cfg.Raft.TLS {
		srv := cfg.GRPCTLS
		srv.ClientAuth = tlsconfig.ClientAuthRequire
		if raftServer, err = srv.Server(); err != nil {
			return nil, fmt.Errorf("raft.tls: %w", err)
		}
		if raftClient, err = cfg.brokerClientTLS().Client(); err != nil {
			return nil, fmt.Errorf("raft.tls: %w", err)
		}
	}
	c.dial, err = grpcauth.Client{TLS: cfg.brokerClientTLS()}.DialOptions()
	if err != nil {
		return nil, fmt.Errorf("grpc_tls (dialing other brokers): %w", err)
	}
	node, err := control.Start(control.NodeConfig{
		ID: cfg.NodeID, BindAddr: cfg.Raft.Listen, Advertise: raftAdv, AdvertiseHost: advertiseHost(host),
		DataDir:           filepath.Join(cfg.DataDir, "raft"),
		HeartbeatTimeout:  cfg.Raft.HeartbeatTimeout.D(),
		ElectionTimeout:   cfg.Raft.ElectionTimeout.D(),
		SnapshotThreshold: uint64(cfg.Raft.SnapshotThreshold),
		SnapshotInterval:  cfg.Raft.SnapshotInterval.D(),
		TrailingLogs:      uint64(cfg.Raft.TrailingLogs),
		Bootstrap:         len(cfg.Raft.Join) == 0,
		RaftLog:           slogWriter{c.log},
		ObserveApply:      func(d time.Duration) { c.applyLatency.Observe(d.Seconds()) },
		ServerTLS:         raftServer,
		ClientTLS:         raftClient,
	}, c.log)
	if err != nil {
		return nil, err
	}
	c.node = node
	c.self = &monitorpb.Member{Id: cfg.NodeID, GrpcAddr: grpcAdv, RaftAddr: node.Addr()}
	c.srv = control.NewServer(node, c.self, control.Credentials{
		Secret: cfg.Cluster.Secret, AdminUser: cfg.Cluster.AdminUser, AdminPassword: cfg.Cluster.AdminPassword,
	}, control.ServerOptions{VirtualNodes: cfg.Hash.VirtualNodes, CheckShard: c.checkShard, DialOptions: c.dial}, c.log)
	return c, nil
}

// run joins the cluster (raft.join) and follows the replicated state until
// ctx ends.
func (c *cluster) run(ctx context.Context) {
	var wg sync.WaitGroup
	if len(c.cfg.Raft.Join) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.join(ctx)
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.registry(ctx)
	}()
	go func() {
		defer wg.Done()
		c.reconcile(ctx)
	}()
	wg.Wait()
}

// join asks the members in raft.join, in turn, to add this broker, until
// one does. A broker that is already a member is simply re-added.
func (c *cluster) join(ctx context.Context) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		addr := c.cfg.Raft.Join[attempt%len(c.cfg.Raft.Join)]
		jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := control.JoinCluster(jctx, addr, c.self, c.cfg.Cluster.Secret, c.dial...)
		cancel()
		if err == nil {
			c.log.Info("joined the cluster", "via", addr, "id", c.self.GetId())
			return
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("join failed; retrying", "via", addr, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// reconcile acts on every change of the replicated state or of leadership.
func (c *cluster) reconcile(ctx context.Context) {
	leadership := c.node.LeadershipChanges()
	var (
		migCancel    context.CancelFunc
		migDone      chan struct{}
		migFor       uint64
		migNotBefore time.Time // a migrator that stopped is restarted after a pause
	)
	stopMigrator := func() {
		if migCancel != nil {
			migCancel()
			<-migDone
			migCancel, migFor = nil, 0
		}
	}
	defer stopMigrator()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		changed := c.node.FSM().Changed()
		st := c.node.FSM().Cluster() // not the registry: this runs at every change
		leader := c.node.IsLeader()
		var again bool
		if leader {
			again = c.lead(ctx, st) || again
		} else {
			again = c.follow(ctx, st) || again
		}
		again = c.applyTopology(ctx, st) || again

		// The migrator runs on the leader while a ring change is moving hosts.
		if migDone != nil {
			select {
			case <-migDone:
				migCancel, migFor, migDone = nil, 0, nil
				migNotBefore = time.Now().Add(2 * time.Second)
			default:
			}
		}
		m := st.GetMigration()
		switch {
		case leader && control.Migrating(st) && migFor != m.GetRingVersion() && time.Now().Before(migNotBefore):
			again = true
		case leader && control.Migrating(st) && migFor != m.GetRingVersion():
			stopMigrator()
			mctx, cancel := context.WithCancel(ctx)
			migCancel, migFor, migDone = cancel, m.GetRingVersion(), make(chan struct{})
			go func(done chan struct{}) {
				defer close(done)
				if err := c.migrator().Run(mctx, m); err != nil && mctx.Err() == nil {
					c.log.Warn("migration stopped; retrying", "ring_version", m.GetRingVersion(), "err", err)
				}
			}(migDone)
		case !leader || !control.Migrating(st):
			stopMigrator()
		}
		if again {
			retry.Reset(2 * time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-leadership:
		case <-retry.C:
		case <-migDone: // nil (blocks) while no migrator runs
		}
	}
}

// lead does the leader's chores: its own member record, the first storage
// ring of a new cluster, and removing shards that finished draining. It
// reports whether something failed and should be tried again.
func (c *cluster) lead(ctx context.Context, st *monitorpb.ControlState) (again bool) {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	i := slices.IndexFunc(st.GetMembers(), func(m *monitorpb.Member) bool { return m.GetId() == c.self.GetId() })
	if i < 0 || !proto.Equal(st.GetMembers()[i], c.self) {
		if err := c.node.Apply(wctx, monitorpb.CommandType_COMMAND_TYPE_PUT_MEMBER, c.self); err != nil {
			c.log.Warn("record this broker as a member", "err", err)
			again = true
		}
	}
	if c.redis != nil && len(st.GetShards()) == 0 {
		init := &monitorpb.InitShards{}
		for _, sh := range c.cfg.Storage.Redis.Shards {
			init.Shards = append(init.Shards, shardRecord(sh.storeConfig()))
		}
		if err := c.node.Apply(wctx, monitorpb.CommandType_COMMAND_TYPE_INIT_SHARDS, init); err != nil {
			c.log.Warn("record the first storage ring", "err", err)
			again = true
		} else {
			c.log.Info("storage ring recorded in the cluster", "shards", control.RingOf(init.Shards))
		}
	}
	if !control.Migrating(st) {
		for _, sh := range st.GetShards() {
			if sh.GetDraining() {
				if err := c.node.Apply(wctx, monitorpb.CommandType_COMMAND_TYPE_REMOVE_SHARD, &monitorpb.RemoveShard{Id: sh.GetId()}); err != nil {
					c.log.Warn("remove drained shard", "shard", sh.GetId(), "err", err)
					again = true
				} else {
					c.log.Info("drained storage shard removed", "shard", sh.GetId())
				}
			}
		}
	}
	return again
}

// follow keeps a follower's member record current (its gRPC address may
// change across restarts), through the leader. A broker that is not in the
// Raft configuration (removed, or not joined yet) records nothing.
func (c *cluster) follow(ctx context.Context, st *monitorpb.ControlState) (again bool) {
	i := slices.IndexFunc(st.GetMembers(), func(m *monitorpb.Member) bool { return m.GetId() == c.self.GetId() })
	if i >= 0 && proto.Equal(st.GetMembers()[i], c.self) {
		return false
	}
	if id, _ := c.node.Leader(); id == "" {
		return true
	}
	rs, err := c.node.Status()
	if err != nil || !slices.ContainsFunc(rs.Servers, func(s control.RaftServer) bool { return s.ID == c.self.GetId() }) {
		return false
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.srv.Apply(wctx, monitorpb.CommandType_COMMAND_TYPE_PUT_MEMBER, c.self); err != nil {
		c.log.Warn("update this broker's member record", "err", err)
		return true
	}
	return false
}

// applyTopology gives the store the cluster's ring (and, while hosts move,
// the ring they move from). It reports whether that failed.
func (c *cluster) applyTopology(ctx context.Context, st *monitorpb.ControlState) (again bool) {
	if c.redis == nil || len(st.GetShards()) == 0 {
		return false
	}
	topo := redisstore.Topology{Version: st.GetRingVersion()}
	byID := map[string]*monitorpb.Shard{}
	for _, sh := range st.GetShards() {
		byID[sh.GetId()] = sh
	}
	var key strings.Builder
	key.WriteString(strconv.FormatUint(st.GetRingVersion(), 10))
	add := func(ids []string, out *[]redisstore.ShardConfig) bool {
		key.WriteString("|")
		for _, id := range ids {
			sh, ok := byID[id]
			if !ok {
				c.log.Error("storage ring names an unknown shard", "shard", id)
				return false
			}
			*out = append(*out, c.shardConfig(sh))
			key.WriteString(id + "=" + strings.Join(sh.GetAddrs(), ",") + ";")
		}
		return true
	}
	if !add(control.RingOf(st.GetShards()), &topo.Shards) {
		return true
	}
	if control.Migrating(st) {
		if !add(st.GetMigration().GetFromShards(), &topo.Previous) {
			return true
		}
	}
	if key.String() == c.topoKey {
		return false
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.redis.SetTopology(tctx, topo); err != nil {
		c.log.Error("apply the storage ring", "ring_version", topo.Version, "err", err)
		return true
	}
	c.topoKey = key.String()
	c.log.Info("storage ring applied", "ring_version", topo.Version, "shards", control.RingOf(st.GetShards()),
		"migrating_from", st.GetMigration().GetFromShards(), "migrating", control.Migrating(st))
	c.readyOnce.Do(func() { close(c.ready) })
	return false
}

func (c *cluster) migrator() *migrate.Migrator {
	return migrate.New(c.redis, func(ctx context.Context, m *monitorpb.Migration) error {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return c.node.Apply(wctx, monitorpb.CommandType_COMMAND_TYPE_PUT_MIGRATION, m)
	}, migrate.Options{VirtualNodes: c.cfg.Hash.VirtualNodes, Settle: 2 * c.cfg.Raft.HeartbeatTimeout.D()}, c.log)
}

// shardRecord is a configured shard as the cluster records it: no
// password and no file paths.
func shardRecord(sc redisstore.ShardConfig) *monitorpb.Shard {
	sh := &monitorpb.Shard{Id: sc.RingName(), Db: int32(sc.DB), Cluster: sc.Cluster, Username: sc.Username, Tls: sc.TLS.Enabled}
	if sc.Cluster {
		sh.Addrs = slices.Clone(sc.ClusterAddrs)
	} else {
		sh.Addrs = append([]string{sc.Addr}, sc.Replicas...)
	}
	return sh
}

// shardConfig is a recorded shard with this broker's credentials for it:
// those of the storage.redis.shards entry of the same name, if any.
func (c *cluster) shardConfig(sh *monitorpb.Shard) redisstore.ShardConfig {
	var sc redisstore.ShardConfig
	for _, s := range c.cfg.Storage.Redis.Shards {
		if cand := s.storeConfig(); cand.RingName() == sh.GetId() {
			sc = cand
			break
		}
	}
	sc.Name = sh.GetId()
	sc.DB = int(sh.GetDb())
	sc.Cluster = sh.GetCluster()
	if sh.GetUsername() != "" {
		sc.Username = sh.GetUsername()
	}
	sc.TLS.Enabled = sc.TLS.Enabled || sh.GetTls()
	if sc.Cluster {
		sc.Addr, sc.Replicas, sc.ClusterAddrs = "", nil, slices.Clone(sh.GetAddrs())
	} else if len(sh.GetAddrs()) > 0 {
		sc.Addr, sc.Replicas, sc.ClusterAddrs = sh.GetAddrs()[0], slices.Clone(sh.GetAddrs()[1:]), nil
	}
	return sc
}

// checkShard connects to a shard about to join the ring.
func (c *cluster) checkShard(ctx context.Context, sh *monitorpb.Shard) error {
	if c.redis == nil {
		return errors.New("this cluster's storage backend is embedded; storage shards need storage.backend redis")
	}
	sc := c.shardConfig(sh)
	probe, err := redisstore.New(ctx, redisstore.Config{Shards: []redisstore.ShardConfig{sc}, KeyPrefix: c.cfg.Storage.KeyPrefix}, nil)
	if err != nil {
		return err
	}
	return probe.Close()
}

// onRegister queues a registration for the cluster's registry, unless the
// registry already has it (same hostname and labels, recent).
func (c *cluster) onRegister(h storage.Host, at time.Time) {
	rec := &monitorpb.RegisteredHost{HostId: h.ID, Hostname: h.Hostname, Labels: h.Labels, LastRegistered: at.Unix()}
	if old := c.node.FSM().Host(h.ID); old != nil && old.GetHostname() == rec.GetHostname() &&
		maps.Equal(old.GetLabels(), rec.GetLabels()) && at.Unix()-old.GetLastRegistered() < int64(registryRefresh/time.Second) {
		return
	}
	select {
	case c.reg <- rec:
	default:
		c.regDropped.Add(1)
	}
}

// registry writes queued registrations through Raft (forwarded to the
// leader from a follower).
func (c *cluster) registry(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case rec := <-c.reg:
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.srv.Apply(wctx, monitorpb.CommandType_COMMAND_TYPE_REGISTER_HOST, rec)
			cancel()
			if err != nil {
				c.regFailures.Add(1)
				if ctx.Err() == nil {
					c.log.Warn("record host in the cluster registry", "host", rec.GetHostId(), "err", err)
				}
				continue
			}
			c.regWritten.Add(1)
		}
	}
}

// advertise turns a bound address into one other machines can dial.
func advertise(bound string) (string, error) {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(advertiseHost(host), port), nil
}

// advertiseHost is host, or for a wildcard bind the address of the
// interface that routes outwards (no packet is sent), else loopback.
func advertiseHost(host string) string {
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return host
	}
	conn, err := net.Dial("udp", "192.0.2.1:9") // TEST-NET-1: routing only
	if err != nil {
		return "127.0.0.1"
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String()
}

// slogWriter passes hashicorp/raft's own log lines (warnings and up) to
// the broker's logger.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)), "source", "raft")
	return len(p), nil
}
