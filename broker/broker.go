// Package broker is the broker component: it receives agents' snapshot
// streams over gRPC, validates them, stores them through pkg/storage (Redis
// shards by consistent hash, or the embedded on-disk store), acknowledges
// only what is stored, and serves queries and a live Subscribe stream to the
// visualization server.
//
// Lifetime: New opens storage and binds the listeners; Run serves until its
// context ends, then shuts down in this order (reverse of start-up):
//  1. drain ingest: Ingest streams stop taking batches; the write queue
//     stops admitting, writes everything it holds at once and completes
//     every batch; each stream acks what was stored and ends with
//     Unavailable so agents fail over (what was not stored stays with the
//     agent); Subscribe streams end;
//  2. stop the gRPC server (graceful, bounded by shutdown_timeout);
//  3. stop the HTTP server;
//  4. stop following the cluster (migrator, registry) and shut Raft down;
//  5. close storage — after every write has returned, so nothing
//     acknowledged is lost.
//
// Every broker is a member of a Raft cluster holding the control plane
// (cluster.go): a lone broker is a cluster of one.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/monitorhq/monitor/broker/internal/authz"
	"github.com/monitorhq/monitor/broker/internal/ingest"
	"github.com/monitorhq/monitor/broker/internal/service"
	"github.com/monitorhq/monitor/pkg/connlimit"
	"github.com/monitorhq/monitor/pkg/queue"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/embedded"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Broker is one broker process.
type Broker struct {
	cfg      Config
	log      *slog.Logger
	store    storage.Store
	svc      *service.Service
	grpc     *grpc.Server
	grpcLis  net.Listener
	connLim  *connlimit.Listener // grpcLis with max_connections applied
	authz    *authz.Authorizer
	httpSrv  *http.Server
	httpLis  net.Listener
	cluster  *cluster
	shutdown time.Duration
	// seriesCap bounds distinct series per host and hour (nil: off).
	seriesCap *ingest.SeriesCap
}

// New validates cfg, opens storage and binds the listeners.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	store, err := openStorage(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, log: logger, store: store, shutdown: cfg.ShutdownTimeout.D()}
	serverTLS, err := cfg.GRPCTLS.Server()
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("grpc_tls: %w", err)
	}
	b.grpcLis, err = net.Listen("tcp", cfg.GRPCListen)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("listen gRPC on %s: %w", cfg.GRPCListen, err)
	}
	b.connLim = connlimit.Wrap(b.grpcLis, cfg.MaxConnections, cfg.MaxConnectionsPerIP, nil)
	b.authz = authz.New(authz.Config{
		AgentSecrets: cfg.Auth.AgentSecrets, RevokedHosts: cfg.Auth.RevokedHosts, CertIdentity: cfg.Auth.CertIdentity,
		ClusterSecret: cfg.Cluster.Secret, AdminUser: cfg.Cluster.AdminUser, AdminPassword: cfg.Cluster.AdminPassword,
	}, logger.With("component", "auth"))
	switch {
	case !b.authz.Enabled():
		logger.Warn("agents are not authenticated and reads are open: set auth.agent_secrets (or MONITOR_AGENT_SECRETS) to require agent tokens (docs/security.md)")
	case serverTLS == nil:
		logger.Warn("auth is on but grpc_tls is off: tokens and the cluster secret cross the network in clear text; enable grpc_tls unless every client is on this machine")
	}
	b.cluster, err = startCluster(cfg, b.grpcLis.Addr().String(), store, logger)
	if err != nil {
		b.grpcLis.Close()
		store.Close()
		return nil, fmt.Errorf("start the cluster member: %w", err)
	}
	b.seriesCap = ingest.NewSeriesCap(cfg.Ingest.MaxSeriesPerHost)
	b.svc = service.New(store, service.Options{
		Ready:      b.cluster.ready,
		OnRegister: b.cluster.onRegister,
		Limits: ingest.Limits{
			MaxBatchSnapshots:     cfg.Ingest.MaxBatchSnapshots,
			MaxSamplesPerSnapshot: cfg.Ingest.MaxSamplesPerSnapshot,
			MaxFutureSkew:         cfg.Ingest.MaxFutureSkew.D(),
			MaxAge:                cfg.Storage.TTL.D(),
			Series:                b.seriesCap,
		},
		WriteTimeout:       cfg.Ingest.WriteTimeout.D(),
		RetryAfter:         cfg.Ingest.RetryAfter.D(),
		MaxInflightBatches: cfg.Ingest.MaxInflightBatches,
		Queue: queue.Config{
			Capacity:       cfg.Ingest.Queue.Capacity,
			FlushSnapshots: cfg.Ingest.Queue.FlushSnapshots,
			FlushInterval:  cfg.Ingest.Queue.FlushInterval.D(),
			Workers:        cfg.Ingest.Queue.Workers,
			WriteTimeout:   cfg.Ingest.WriteTimeout.D(),
		},
		HeartbeatInterval: cfg.Hosts.HeartbeatInterval.D(),
		OfflineAfter:      cfg.Hosts.OfflineAfter.D(),
		MaxRange:          cfg.Query.MaxRange.D(),
		QueryTimeout:      cfg.Query.Timeout.D(),
		Query:             cfg.queryOptions(),
	}, logger)

	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)),
		grpc.ChainUnaryInterceptor(b.authz.Unary()),
		grpc.ChainStreamInterceptor(b.authz.Stream()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	if serverTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	b.grpc = grpc.NewServer(opts...)
	monitorpb.RegisterMonitorServiceServer(b.grpc, b.svc)
	monitorpb.RegisterClusterServiceServer(b.grpc, b.cluster.srv)

	if cfg.HTTPListen != "" {
		b.httpLis, err = net.Listen("tcp", cfg.HTTPListen)
		if err != nil {
			b.grpcLis.Close()
			b.svc.Drain()
			b.cluster.srv.Close()
			b.cluster.node.Shutdown()
			store.Close()
			return nil, fmt.Errorf("listen HTTP on %s: %w", cfg.HTTPListen, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", b.healthz)
		mux.HandleFunc("GET /readyz", b.readyz)
		mux.Handle("GET /metrics", b.metricsHandler())
		mux.HandleFunc("GET /federate", b.federate)
		// ErrorLog: the server's own complaints (a failed TLS handshake: a
		// scraper without a certificate) go to this broker's log.
		b.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn)}
		// http_tls: HTTPS, optionally requiring a scraper's client
		// certificate; Run serves it with ServeTLS (HTTP/2 offered).
		b.httpSrv.TLSConfig, err = cfg.HTTPTLS.Server()
		if err != nil {
			b.httpLis.Close()
			b.grpcLis.Close()
			b.svc.Drain()
			b.cluster.srv.Close()
			b.cluster.node.Shutdown()
			store.Close()
			return nil, fmt.Errorf("http_tls: %w", err)
		}
	}
	return b, nil
}

func openStorage(ctx context.Context, cfg Config, logger *slog.Logger) (storage.Store, error) {
	switch cfg.Storage.Backend {
	case "redis":
		return redisstore.New(ctx, cfg.redisStoreConfig(), logger)
	default:
		return embedded.Open(filepath.Join(cfg.DataDir, "embedded"), cfg.embeddedOptions(), logger)
	}
}

// GRPCAddr is the bound gRPC address.
func (b *Broker) GRPCAddr() string { return b.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address ("" when disabled).
func (b *Broker) HTTPAddr() string {
	if b.httpLis == nil {
		return ""
	}
	return b.httpLis.Addr().String()
}

// Stats returns the ingest counters.
func (b *Broker) Stats() service.Stats { return b.svc.Stats() }

// Run serves until ctx ends, then shuts down in the documented order.
func (b *Broker) Run(ctx context.Context) error {
	b.log.Info("broker serving", "node", b.cfg.NodeID, "grpc", b.GRPCAddr(), "grpc_tls", b.cfg.GRPCTLS.Enabled,
		"client_auth", b.cfg.GRPCTLS.ClientAuth, "agent_auth", b.authz.Enabled(), "raft_tls", b.cfg.Raft.TLS,
		"http", b.HTTPAddr(), "http_tls", b.cfg.HTTPTLS.Enabled, "storage", b.cfg.Storage.Backend)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := b.grpc.Serve(b.connLim); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	if b.httpSrv != nil {
		g.Go(func() error {
			serve := func() error { return b.httpSrv.Serve(b.httpLis) }
			if b.httpSrv.TLSConfig != nil {
				serve = func() error { return b.httpSrv.ServeTLS(b.httpLis, "", "") }
			}
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve HTTP: %w", err)
			}
			return nil
		})
	}
	cctx, stopCluster := context.WithCancel(context.Background())
	clusterDone := make(chan struct{})
	go func() {
		defer close(clusterDone)
		b.cluster.run(cctx)
	}()
	g.Go(func() error {
		<-gctx.Done()
		b.stop()
		return nil
	})
	err := g.Wait()
	stopCluster()
	<-clusterDone
	b.cluster.srv.Close()
	if rerr := b.cluster.node.Shutdown(); rerr != nil && err == nil {
		err = fmt.Errorf("shut down raft: %w", rerr)
	}
	if cerr := b.store.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close storage: %w", cerr)
	}
	st := b.svc.Stats()
	b.log.Info("broker stopped", "batches_acked", st.BatchesAcked, "snapshots_stored", st.SnapshotsStored,
		"write_failures", st.WriteFailures, "queue_full", st.QueueFull, "flushes", st.Queue.Flushes,
		"mean_flush_snapshots", st.Queue.FlushSize.Mean())
	return err
}

func (b *Broker) stop() {
	b.log.Info("broker shutting down: draining ingest streams")
	b.svc.Drain()
	b.cluster.srv.Drain()
	done := make(chan struct{})
	go func() {
		b.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(b.shutdown):
		b.log.Warn("graceful gRPC stop timed out; closing remaining streams", "timeout", b.shutdown)
		b.grpc.Stop()
		<-done
	}
	if b.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.shutdown)
		defer cancel()
		_ = b.httpSrv.Shutdown(ctx)
	}
}

func (b *Broker) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	if err := b.store.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "unavailable", "error": "storage: " + err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok", "node": b.cfg.NodeID, "storage": b.cfg.Storage.Backend})
}
