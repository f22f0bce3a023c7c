// Package visualization is the visualization server: an HTTP JSON API and a
// status page over the brokers, which it reads through gRPC with failover
// (DESIGN.md §4). Later issues add JWT auth, WebSocket and QUIC push, Top-K,
// anomaly analysis and the Chart.js UI.
//
// Use it as a library like the command does: New binds the HTTP listener (so
// Addr is known before Run, also with port 0), Run serves until its context
// ends. Shutdown order, the reverse of start-up: stop accepting and drain
// HTTP requests (at most shutdownTimeout), then close the broker
// connections.
package visualization

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/monitorhq/monitor/visualization/internal/api"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
)

// HTTP server limits. Requests are small GETs; the write timeout bounds a
// response including the broker calls behind it.
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
}

// New validates cfg, prepares the broker connections (connected on first
// use) and binds the HTTP listener. Run releases both; a Server that is
// never run keeps its listener open.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("visualization: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	brokers, err := brokerclient.New(cfg.Brokers, cfg.BrokerTimeout.D(), logger.With("component", "brokerclient"))
	if err != nil {
		return nil, fmt.Errorf("visualization: %w", err)
	}
	handler, err := api.New(api.Config{
		PullInterval:  cfg.PullInterval.D(),
		OfflineAfter:  cfg.OfflineAfter.D(),
		StaleAfter:    cfg.StaleAfter.D(),
		MaxRange:      cfg.MaxRange.D(),
		MaxPoints:     cfg.MaxPoints,
		HealthTimeout: min(cfg.BrokerTimeout.D(), healthTimeout),
	}, brokers, logger.With("component", "api"))
	if err != nil {
		_ = brokers.Close()
		return nil, fmt.Errorf("visualization: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		_ = brokers.Close()
		return nil, fmt.Errorf("visualization: listen on http_listen %s: %w", cfg.HTTPListen, err)
	}
	s := &Server{
		cfg:     cfg,
		logger:  logger,
		ln:      ln,
		brokers: brokers,
		http: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			// A response may wait for every broker in turn.
			WriteTimeout:   time.Duration(len(cfg.Brokers))*cfg.BrokerTimeout.D() + 10*time.Second,
			IdleTimeout:    idleTimeout,
			MaxHeaderBytes: maxHeaderBytes,
			ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}
	return s, nil
}

// Addr returns the bound HTTP address, e.g. 127.0.0.1:8080.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves HTTP until ctx ends, then shuts down: in-flight requests get
// shutdownTimeout to finish, then the broker connections close. It returns
// nil after a shutdown asked for by ctx, or the error that stopped serving.
// Call it once.
func (s *Server) Run(ctx context.Context) error {
	s.logger.Info("visualization server listening", "http", "http://"+s.Addr()+"/", "brokers", s.cfg.Brokers)
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.http.Serve(s.ln) }()

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
	if e := s.brokers.Close(); e != nil {
		err = errors.Join(err, e)
	}
	return err
}
