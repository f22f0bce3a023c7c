package visualization

// The QUIC channel (issue 8): WebTransport for browsers and the native
// protocol for monitorctl watch on quic_listen, a second transport of the
// push hub (internal/quic over pkg/quic). New makes it when quic_listen is
// set; Run serves it and stops it after the hub is closed.

import (
	"context"
	"log/slog"
	"net"

	pq "github.com/monitorhq/monitor/pkg/quic"
	"github.com/monitorhq/monitor/visualization/internal/auth"
	"github.com/monitorhq/monitor/visualization/internal/push"
	vquic "github.com/monitorhq/monitor/visualization/internal/quic"
)

// QUICAddr returns the bound UDP address of the QUIC channel, or "" when
// quic_listen is empty.
func (s *Server) QUICAddr() string {
	if s.quic == nil {
		return ""
	}
	return s.quic.Addr().String()
}

// httpPort returns the port the HTTP listener is bound to (its pages are
// the server's own origin for WebTransport).
func (s *Server) httpPort() string {
	if s.ln == nil {
		return ""
	}
	_, port, _ := net.SplitHostPort(s.ln.Addr().String())
	return port
}

// newQUIC makes the QUIC channel's certificates — quic.cert_file, else
// the HTTPS certificate (tls), else self-signed — and binds its socket.
func (s *Server) newQUIC(cfg Config, hub *push.Hub, authn *auth.Authenticator, logger *slog.Logger) (*vquic.Server, error) {
	var certs *pq.Certs
	var err error
	switch {
	case cfg.QUIC.CertFile != "":
		certs, err = pq.LoadCerts(cfg.QUIC.CertFile, cfg.QUIC.KeyFile)
	case cfg.TLS.Enabled:
		// The HTTPS certificate: browsers that trust the page trust the
		// channel, with no hash to pin.
		certs, err = pq.LoadCerts(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	default:
		certs, err = pq.NewSelfSigned(pq.SelfSignedOptions{Validity: cfg.QUIC.CertValidity.D(),
			RotateBefore: cfg.QUIC.CertRotateBefore.D(), Hosts: cfg.QUIC.CertHosts})
	}
	if err != nil {
		return nil, err
	}
	return vquic.New(vquic.Options{
		Hub: hub, Addr: cfg.QUICListen, Certs: certs,
		Verify: func(token string) (vquic.Identity, error) {
			c, err := authn.Verify(token)
			if err != nil {
				return vquic.Identity{}, err
			}
			return vquic.Identity{User: c.Subject, Role: string(c.Role), Expires: c.ExpiresAt.Time}, nil
		},
		AllowedOrigins: cfg.WebSocket.AllowedOrigins,
		HTTPPort:       s.httpPort,
		WriteTimeout:   cfg.WebSocket.Heartbeat.D(),
		ReadLimit:      cfg.WebSocket.ReadLimit,
		Logger:         logger.With("component", "quic"),
	})
}

// releaseQUIC frees the QUIC socket of a server that will not run.
func (s *Server) releaseQUIC() {
	if s.quic != nil {
		s.quic.Release()
	}
}

// runQUIC serves the QUIC channel until stop is called; its result then
// comes on the channel (nil at once without a channel).
func (s *Server) runQUIC(ctx context.Context) (stop func(), result <-chan error) {
	res := make(chan error, 1)
	if s.quic == nil {
		res <- nil
		return func() {}, res
	}
	qctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.logger.Info("QUIC channel listening", "udp", s.quic.Addr().String(), "webtransport", pq.WebTransportPath, "native_alpn", pq.ALPNNative)
	go func() { res <- s.quic.Run(qctx) }()
	return cancel, res
}
