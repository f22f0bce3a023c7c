// Package visualization is the visualization server: an HTTP JSON API, a
// status page and live push over WebSocket, behind JWT auth (DESIGN.md
// §4). It reads through the brokers over gRPC with failover, follows the
// cluster's member list (pkg/membership), and holds a Subscribe stream to
// every broker so each stored snapshot reaches the observers — the push
// core, and the Top-K, analysis and alerting engines — at once.
//
// Use it as a library like the command does: New binds the HTTP listener (so
// Addr is known before Run, also with port 0), Run serves until its context
// ends.
//
// Wiring an engine (Top-K, anomalies, alerts): in New, append it to
// observers (it then sees every stored snapshot, see live.Observer), add
// its HTTP routes to routes (served behind the same auth; Admin for
// changes), and give it s.hub.Publish to push events to WebSocket clients
// that subscribe to its kind.
//
// The QUIC channel (quic_listen, internal/quic over pkg/quic) is a second
// transport of the same push hub: WebTransport for browsers and a native
// protocol for monitorctl watch on one UDP socket; GET /api/v1/quic tells
// clients its URL and certificate hashes.
//
// Shutdown order, the reverse of start-up: stop accepting and drain HTTP
// requests (at most shutdownTimeout), close the push hub (every WebSocket
// and QUIC session gets a going-away close) and wait for the sessions,
// stop the QUIC listener, stop the broker
// streams and the membership watcher, then close the broker connections.
package visualization

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/monitorhq/monitor/pkg/connlimit"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/membership"
	"github.com/monitorhq/monitor/visualization/internal/api"
	"github.com/monitorhq/monitor/visualization/internal/auth"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
	"github.com/monitorhq/monitor/visualization/internal/live"
	"github.com/monitorhq/monitor/visualization/internal/push"
	vquic "github.com/monitorhq/monitor/visualization/internal/quic"
	"github.com/monitorhq/monitor/visualization/internal/wspush"
)

// HTTP server limits. Requests are small; the write timeout bounds a
// response including the broker calls behind it (a WebSocket clears both
// deadlines for itself).
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	// shutdownTimeout bounds the drain of in-flight requests at shutdown.
	shutdownTimeout = 10 * time.Second
	// healthTimeout caps the broker probe of /healthz, below the 5 s that
	// health checkers commonly allow a whole request.
	healthTimeout = 2 * time.Second
)

// Server is a visualization server.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	ln      net.Listener
	http    *http.Server
	brokers *brokerclient.Client
	members *membership.Watcher
	feed    *live.Feed
	hub     *push.Hub
	engines *engines
	ws      *wspush.Handler
	quic    *vquic.Server // nil when quic_listen is empty (issue 8)
	ops     *opsServer    // metrics_listen: /metrics, /healthz, /readyz (metrics.go)
	api     *api.API
	conns   *connlimit.Listener // the HTTP listener's limits
	tls     bool                // http_listen serves HTTPS
}

// Stats are the live path's and the push core's counters: what arrived,
// what was folded or dropped for slow clients, what the brokers dropped.
type Stats struct {
	Live live.Stats   `json:"live"`
	Push push.Stats   `json:"push"`
	QUIC *vquic.Stats `json:"quic,omitempty"`
	// HTTP is the HTTP listener's connections; Auth the refused logins.
	HTTP ConnStats     `json:"http"`
	Auth api.AuthStats `json:"auth"`
}

// ConnStats are the HTTP listener's connection figures (max_connections,
// max_connections_per_ip; pkg/connlimit).
type ConnStats struct {
	Open         int    `json:"open"`           // connections open now
	RefusedMax   uint64 `json:"refused_max"`    // closed at accept: max_connections reached
	RefusedPerIP uint64 `json:"refused_per_ip"` // closed at accept: max_connections_per_ip reached
}

// New validates cfg (Validate and Ready: a JWT secret and users are
// required), prepares the broker connections (connected on first use) and
// binds the HTTP listener. Run releases both; a Server that is never run
// keeps its listener open.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("visualization: %w", err)
	}
	if err := cfg.Ready(); err != nil {
		return nil, fmt.Errorf("visualization: %w", err)
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	for i, b := range cfg.Brokers {
		cfg.Brokers[i] = dialAddr(b) // ":9093" is this machine
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	users := make([]auth.User, len(cfg.Auth.Users))
	for i, u := range cfg.Auth.Users {
		users[i] = auth.User{Username: u.Username, PasswordHash: u.PasswordHash, Role: auth.Role(u.Role)}
	}
	authn, err := auth.New(auth.Config{
		Secret: []byte(cfg.Auth.JWTSecret), Issuer: cfg.Auth.Issuer, Audience: cfg.Auth.Audience,
		AccessTTL: cfg.Auth.AccessTTL.D(), RefreshTTL: cfg.Auth.RefreshTTL.D(), Users: users,
	})
	if err != nil {
		return nil, fmt.Errorf("visualization: %w", err)
	}
	rate := 1 / cfg.Auth.LoginInterval.D().Seconds()
	limiter := auth.NewLimiter(rate, cfg.Auth.LoginBurst, nil)
	userLimiter := auth.NewLimiter(rate, cfg.Auth.LoginBurst, nil)
	proxies, err := cfg.trustedProxies()
	if err != nil {
		return nil, fmt.Errorf("visualization: %w", err)
	}
	httpsCfg, err := cfg.TLS.Server()
	if err != nil {
		return nil, fmt.Errorf("visualization: tls: %w", err)
	}
	// The cluster secret goes only over broker_tls, or in clear text to
	// loopback brokers (Validate refuses non-loopback seeds without TLS).
	creds := grpcauth.Client{TLS: cfg.BrokerTLS, Token: string(cfg.ClusterSecret), AllowInsecureLoopback: !cfg.BrokerTLS.Enabled}
	brokers, err := brokerclient.New(cfg.Brokers, cfg.BrokerTimeout.D(), logger.With("component", "brokerclient"),
		brokerclient.WithAuth(creds))
	if err != nil {
		return nil, fmt.Errorf("visualization: %w", err)
	}
	members, err := membership.New(cfg.Brokers, membership.Options{DialOptions: brokers.DialOptions(), Logger: logger.With("component", "membership")})
	if err != nil {
		_ = brokers.Close()
		return nil, fmt.Errorf("visualization: %w", err)
	}
	hub := push.New(push.Options{
		QueueSize: cfg.WebSocket.QueueSize, MaxClients: cfg.WebSocket.MaxClients,
		Logger: logger.With("component", "push"),
	})

	// The engines plug in here (see the package doc and engines.go).
	eng, err := newEngines(cfg, brokers, hub.Publish, logger)
	if err != nil {
		_ = brokers.Close()
		return nil, fmt.Errorf("visualization: %w", err)
	}
	observers := append([]live.Observer{hub}, eng.observers()...)
	routes := eng.routes(brokers, cfg.BrokerTimeout.D())

	feed, err := live.New(live.Options{
		Source: brokers, Observers: observers,
		CatchupTimeout: cfg.BrokerTimeout.D(),
		Logger:         logger.With("component", "live"),
	})
	if err != nil {
		_ = brokers.Close()
		_ = eng.close()
		return nil, fmt.Errorf("visualization: %w", err)
	}
	feed.SetBrokers(cfg.Brokers)
	ws, err := wspush.New(wspush.Options{
		Hub: hub,
		Verify: func(token string) (wspush.Identity, error) {
			c, err := authn.Verify(token)
			if err != nil {
				return wspush.Identity{}, err
			}
			return wspush.Identity{User: c.Subject, Role: string(c.Role), Expires: c.ExpiresAt.Time}, nil
		},
		AllowedOrigins: cfg.WebSocket.AllowedOrigins,
		Heartbeat:      cfg.WebSocket.Heartbeat.D(),
		ReadLimit:      int64(cfg.WebSocket.ReadLimit),
		Logger:         logger.With("component", "websocket"),
	})
	if err != nil {
		_ = brokers.Close()
		_ = eng.close()
		return nil, fmt.Errorf("visualization: %w", err)
	}
	s := &Server{cfg: cfg, logger: logger, brokers: brokers, members: members, feed: feed, hub: hub, ws: ws, engines: eng}
	// --- QUIC channel (issue 8, quic.go): same hub, verifier and limits as the WebSocket.
	if cfg.QUICListen != "" {
		if s.quic, err = s.newQUIC(cfg, hub, authn, logger); err != nil {
			_ = brokers.Close()
			_ = eng.close()
			return nil, fmt.Errorf("visualization: %w", err)
		}
		routes = append(routes, api.Route{Method: http.MethodGet, Path: "/api/v1/quic", Handler: s.quic.HandleInfo})
	}
	// --- end QUIC channel.
	handler, err := api.New(api.Options{
		PullInterval:   cfg.PullInterval.D(),
		OfflineAfter:   cfg.OfflineAfter.D(),
		StaleAfter:     cfg.StaleAfter.D(),
		MaxRange:       cfg.MaxRange.D(),
		MaxPoints:      cfg.MaxPoints,
		HealthTimeout:  min(cfg.BrokerTimeout.D(), healthTimeout),
		Brokers:        brokers,
		Auth:           authn,
		LoginLimiter:   limiter,
		UserLimiter:    userLimiter,
		TrustedProxies: proxies,
		WebSocket:      ws,
		Members:        s.memberStates,
		Stats:          func() any { return s.Stats() },
		Routes:         routes,
	}, logger.With("component", "api"))
	if err != nil {
		_ = brokers.Close()
		_ = eng.close()
		s.releaseQUIC()
		return nil, fmt.Errorf("visualization: %w", err)
	}
	s.api = handler
	tcp, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		_ = brokers.Close()
		_ = eng.close()
		s.releaseQUIC()
		return nil, fmt.Errorf("visualization: listen on http_listen %s: %w", cfg.HTTPListen, err)
	}
	// Limits first: a connection over them is closed before its TLS
	// handshake costs anything; trusted proxies are not capped per IP.
	s.conns = connlimit.Wrap(tcp, cfg.MaxConnections, cfg.MaxConnectionsPerIP, func(ip netip.Addr) bool {
		return slices.ContainsFunc(proxies, func(p netip.Prefix) bool { return p.Contains(ip) })
	})
	var ln net.Listener = s.conns
	var h http.Handler = handler
	if httpsCfg != nil {
		httpsCfg.NextProtos = []string{"h2", "http/1.1"}
		ln = tls.NewListener(ln, httpsCfg)
		h = hsts(handler, cfg.HSTSMaxAge.D())
	}
	s.ln, s.tls = ln, httpsCfg != nil
	s.http = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		// A response may wait for every broker in turn.
		WriteTimeout:   time.Duration(len(cfg.Brokers))*cfg.BrokerTimeout.D() + 10*time.Second,
		IdleTimeout:    idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if s.ops, err = newOps(s); err != nil { // metrics.go
		_, _, _ = ln.Close(), brokers.Close(), eng.close()
		s.releaseQUIC()
		return nil, fmt.Errorf("visualization: %w", err)
	}
	return s, nil
}

// Addr returns the bound HTTP address, e.g. 127.0.0.1:8080.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL returns the server's base URL: https:// when tls is on.
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.Addr() + "/"
	}
	return "http://" + s.Addr() + "/"
}

// hsts adds Strict-Transport-Security to every response of an HTTPS
// server, so that browsers never try plaintext for it again.
func hsts(h http.Handler, maxAge time.Duration) http.Handler {
	if maxAge <= 0 {
		return h
	}
	v := "max-age=" + strconv.Itoa(int(maxAge.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", v)
		h.ServeHTTP(w, r)
	})
}

// Stats returns the live path's and the push core's counters.
func (s *Server) Stats() Stats {
	refused := s.conns.Refused()
	st := Stats{Live: s.feed.Stats(), Push: s.hub.Stats(), Auth: s.api.AuthStats(), HTTP: ConnStats{
		Open: s.conns.Open(), RefusedMax: refused[connlimit.ReasonMax], RefusedPerIP: refused[connlimit.ReasonPerIP]}}
	if s.quic != nil { // quic.go
		q := s.quic.Stats()
		st.QUIC = &q
	}
	return st
}

// memberStates is the broker list for /api/v1/cluster.
func (s *Server) memberStates() []api.Member {
	list := s.members.Brokers()
	out := make([]api.Member, len(list))
	for i, b := range list {
		out[i] = api.Member{ID: b.ID, Addr: b.Addr, Leader: b.Leader, Streaming: s.feed.Connected(b.Addr)}
	}
	return out
}

// followMembers applies every change of the broker list to the broker
// client and the live feed until ctx ends.
func (s *Server) followMembers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case list := <-s.members.Updates():
			addrs := make([]string, len(list))
			for i, b := range list {
				addrs[i] = b.Addr
			}
			if len(addrs) == 0 {
				continue
			}
			if err := s.brokers.SetBrokers(addrs); err != nil {
				s.logger.Warn("cannot apply the new broker list", "brokers", addrs, "err", err)
				continue
			}
			s.feed.SetBrokers(addrs)
		}
	}
}

// Run serves HTTP and follows the brokers until ctx ends, then shuts down
// in the order of the package doc. It returns nil after a shutdown asked
// for by ctx, or the error that stopped serving. Call it once.
func (s *Server) Run(ctx context.Context) error {
	if !s.tls && !isLoopback(s.cfg.HTTPListen) {
		s.logger.Warn("serving plaintext HTTP on a non-loopback address: passwords and tokens cross the network unencrypted; set tls or put a TLS proxy in front", "http_listen", s.cfg.HTTPListen)
	}
	s.logger.Info("visualization server listening", "url", s.URL(), "tls", s.tls, "client_auth", s.cfg.TLS.ClientAuth,
		"brokers", s.cfg.Brokers, "broker_tls", s.cfg.BrokerTLS.Enabled)

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.members.Run(bg) })
	wg.Go(func() { _ = s.feed.Run(bg) })
	wg.Go(func() { s.followMembers(bg) })
	wg.Go(func() { s.engines.run(bg) })
	wg.Go(func() { s.ops.serve(bg) }) // metrics.go

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.http.Serve(s.ln) }()
	stopQUIC, quicErr := s.runQUIC(ctx) // quic.go

	var err error
	select {
	case <-ctx.Done():
		s.logger.Info("visualization server shutting down")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		if e := s.http.Shutdown(sctx); e != nil {
			err = fmt.Errorf("shut down HTTP server: %w", e)
			_ = s.http.Close()
		}
		cancel()
		<-serveErr // http.ErrServerClosed
	case e := <-serveErr:
		err = fmt.Errorf("serve HTTP on %s: %w", s.Addr(), e)
	}
	// WebSockets are hijacked: Shutdown does not wait for them.
	s.hub.Close()
	s.ws.Wait()
	stopQUIC() // after the hub: its sessions have sent their going-away close
	if e := <-quicErr; e != nil {
		err = errors.Join(err, fmt.Errorf("serve QUIC: %w", e))
	}
	stopBG()
	wg.Wait()
	if e := s.engines.close(); e != nil {
		err = errors.Join(err, fmt.Errorf("close the top-k engine: %w", e))
	}
	if e := s.brokers.Close(); e != nil {
		err = errors.Join(err, e)
	}
	return err
}

// RandomSecret returns a JWT secret of 48 random bytes (standalone makes
// one per start when none is configured).
func RandomSecret() Secret {
	b := make([]byte, 48)
	_, _ = rand.Read(b) // never fails (Go ≥1.24)
	return Secret(b)
}

// HashPassword returns the bcrypt hash of password for a UserConfig
// (standalone's admin user).
func HashPassword(password string) (string, error) { return auth.HashPassword(password) }
