// Package quic is the QUIC transport of the push core
// (visualization/internal/push) on the QUIC port (quic_listen, default
// :8081): browsers connect with WebTransport over HTTP/3 at
// pkg/quic.WebTransportPath, Go clients (monitorctl watch) with the native
// protocol pkg/quic.ALPNNative on the same UDP socket (pkg/quic.Listener
// routes by ALPN). Both run the same session (see pkg/quic for the wire):
// the same hub, subscriptions, JWT check and slow-consumer policy as the
// WebSocket (visualization/internal/wspush), with sample messages sent as
// numbered datagrams — latest values, loss tolerated — and everything
// else (hello, subscribed, error, gap markers, events) in order on the
// stream.
//
// Slow consumers: the session copies what the hub's bounded queue holds
// to the peer; a stream write or a datagram that cannot leave (flow or
// congestion control) holds the copy back, the hub folds the client's
// messages into the latest values and a gap marker follows — exactly as
// for a WebSocket. A stream write stalled for WriteTimeout closes the
// session (CodeTimeout).
//
// Auth: the token is the first frame of the stream (browsers cannot set
// headers on a WebTransport session; a URL would end up in logs), checked
// by the same verifier as the WebSocket's; a missing or bad token gets an
// error frame and CodeUnauthorized, an expired one CodeTokenExpired. The
// WebTransport CONNECT also checks the Origin: the server's own (the HTTP
// port on the same host) or websocket.allowed_origins — webtransport-go's
// default would refuse the UI served from :8080.
//
// Concurrency: New binds the socket; Run serves until its context ends and
// then waits for every session (close the hub first so they end with
// CodeGoingAway). HandleInfo is safe for concurrent use.
package quic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"

	pq "github.com/monitorhq/monitor/pkg/quic"
	"github.com/monitorhq/monitor/visualization/internal/push"
)

// Identity is who a token belongs to.
type Identity struct {
	User    string
	Role    string
	Expires time.Time
}

// Options configure a Server.
type Options struct {
	Hub *push.Hub
	// Verify checks an access token (the WebSocket's verifier).
	Verify func(token string) (Identity, error)
	// Addr is the UDP listen address.
	Addr  string
	Certs *pq.Certs
	// AllowedOrigins are the origin patterns of websocket.allowed_origins.
	AllowedOrigins []string
	// HTTPPort returns the HTTP listener's port: a page served from it on
	// the same host is the server's own origin.
	HTTPPort func() string
	// WriteTimeout bounds a stalled stream write (websocket.heartbeat).
	WriteTimeout time.Duration
	// ReadLimit is the largest frame a client may send (websocket.read_limit).
	ReadLimit int
	// AuthTimeout bounds the wait for the auth frame (default 10 s).
	AuthTimeout time.Duration
	Logger      *slog.Logger
}

// Stats count the QUIC sessions and what they carried.
type Stats struct {
	Sessions  uint64 `json:"sessions"`   // sessions that passed auth
	Refused   uint64 `json:"refused"`    // sessions refused (token, origin, first frame)
	Active    int64  `json:"active"`     // sessions open now
	Datagrams uint64 `json:"datagrams"`  // sample datagrams sent
	Split     uint64 `json:"split"`      // sample messages split over several datagrams
	OnStream  uint64 `json:"on_stream"`  // samples too large for any datagram, sent on the stream
	Frames    uint64 `json:"frames"`     // stream frames sent
	CertHours int64  `json:"cert_hours"` // hours left on the current certificate
}

// Server serves the QUIC port.
type Server struct {
	opts Options
	log  *slog.Logger
	ln   *pq.Listener
	wt   *webtransport.Server

	sessions, refused, datagrams, split, onStream, frames atomic.Uint64
	active                                                atomic.Int64
}

// maxDatagram is the largest datagram payload we build: under the 1200
// bytes every QUIC path carries, less packet, frame and HTTP/3 overhead.
// A path with a larger MTU could take more; a smaller budget costs only a
// split.
const maxDatagram = 1100

// New binds the UDP socket.
func New(opts Options) (*Server, error) {
	if opts.Hub == nil || opts.Verify == nil || opts.Certs == nil {
		return nil, errors.New("quic: a hub, a token verifier and certificates are required")
	}
	if opts.WriteTimeout <= 0 || opts.ReadLimit <= 0 {
		return nil, fmt.Errorf("quic: write timeout %s and read limit %d must be positive", opts.WriteTimeout, opts.ReadLimit)
	}
	if opts.AuthTimeout <= 0 {
		opts.AuthTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc(pq.WebTransportPath, s.serveWebTransport)
	s.wt = &webtransport.Server{
		H3:          &http3.Server{Handler: mux, Logger: log},
		CheckOrigin: s.checkOrigin,
	}
	ln, err := pq.Listen(pq.ListenerOptions{
		Addr:  opts.Addr,
		Certs: opts.Certs,
		Handlers: map[string]pq.ConnHandler{
			pq.ALPNHTTP3: func(_ context.Context, conn *quicgo.Conn) {
				if err := s.wt.ServeQUICConn(conn); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Debug("HTTP/3 connection ended", "remote", conn.RemoteAddr(), "err", err)
				}
			},
			pq.ALPNNative: s.serveNative,
		},
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("quic: %w", err)
	}
	s.ln = ln
	return s, nil
}

// Addr returns the bound UDP address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Sessions: s.sessions.Load(), Refused: s.refused.Load(), Active: s.active.Load(),
		Datagrams: s.datagrams.Load(), Split: s.split.Load(), OnStream: s.onStream.Load(), Frames: s.frames.Load(),
		CertHours: int64(time.Until(s.opts.Certs.NotAfter()).Hours())}
}

// Release frees the socket of a Server that is never run.
func (s *Server) Release() { s.ln.Release() }

// Run serves until ctx ends, rotating self-signed certificates on time,
// then closes every connection and waits for the sessions.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.rotate(ctx) })
	err := s.ln.Serve(ctx)
	_ = s.wt.Close()
	wg.Wait()
	return err
}

func (s *Server) rotate(ctx context.Context) {
	for {
		wait, err := s.opts.Certs.Tick()
		if err != nil {
			s.log.Error("cannot rotate the QUIC certificate", "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Info is the answer of GET /api/v1/quic: where and how to connect.
type Info struct {
	// URL is the WebTransport URL for browsers.
	URL string `json:"url"`
	// Addr is host:port of the QUIC port for native clients.
	Addr string `json:"addr"`
	// ALPN is the browsers' protocol (h3); NativeALPN the Go clients'.
	ALPN       string `json:"alpn"`
	NativeALPN string `json:"native_alpn"`
	// Certificate is "self-signed" (pin CertHashes) or "configured"
	// (verified the usual way; CertHashes is empty).
	Certificate string `json:"certificate"`
	// CertHashes are the sha-256 hashes (base64) for WebTransport's
	// serverCertificateHashes: the current certificate's and, while a
	// rotation is announced, the next one's.
	CertHashes []pq.CertHash `json:"cert_hashes"`
	NotAfter   time.Time     `json:"not_after"`
}

// HandleInfo serves GET /api/v1/quic (behind the API's auth). The host is
// the one the caller used for the API, the port the QUIC port's.
func (s *Server) HandleInfo(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	if host == "" {
		host = "localhost"
	}
	_, port, _ := net.SplitHostPort(s.Addr().String())
	addr := net.JoinHostPort(host, port)
	info := Info{URL: "https://" + addr + pq.WebTransportPath, Addr: addr, ALPN: pq.ALPNHTTP3, NativeALPN: pq.ALPNNative,
		Certificate: "configured", CertHashes: []pq.CertHash{}, NotAfter: s.opts.Certs.NotAfter()}
	if s.opts.Certs.SelfSigned() {
		info.Certificate = "self-signed"
		info.CertHashes = s.opts.Certs.Hashes()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(info)
}

// checkOrigin allows no Origin (not a browser: the token guards), the
// WebTransport origin itself, a page of our HTTP port on the same host,
// and websocket.allowed_origins (patterns as coder/websocket matches
// them: against host[:port], or scheme://host[:port] when they have a
// scheme).
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	reqHost := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		reqHost = h
	}
	if strings.EqualFold(u.Hostname(), reqHost) && s.opts.HTTPPort != nil && u.Port() == s.opts.HTTPPort() {
		return true
	}
	for _, p := range s.opts.AllowedOrigins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	s.log.Info("webtransport refused: foreign origin", "origin", origin, "remote", r.RemoteAddr)
	return false
}

// serveWebTransport upgrades the CONNECT and runs the session in the
// request's handler (the session lives on the request stream).
func (s *Server) serveWebTransport(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		s.refused.Add(1)
		http.Error(w, "no query parameters: send the token as the first frame of the session's stream", http.StatusBadRequest)
		return
	}
	if !s.checkOrigin(r) {
		s.refused.Add(1)
		http.Error(w, "origin not allowed: add it to websocket.allowed_origins", http.StatusForbidden)
		return
	}
	sess, err := s.wt.Upgrade(w, r)
	if err != nil {
		s.refused.Add(1)
		s.log.Info("webtransport upgrade failed", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "webtransport upgrade failed", http.StatusBadRequest)
		return
	}
	s.session(wtConn{sess}, "webtransport")
}

// serveNative runs a native session on a QUIC connection.
func (s *Server) serveNative(ctx context.Context, conn *quicgo.Conn) {
	stop := context.AfterFunc(ctx, func() {
		_ = conn.CloseWithError(quicgo.ApplicationErrorCode(pq.CodeGoingAway), "server shutting down")
	})
	defer stop()
	s.session(nativeConn{conn}, "quic")
}

// sessionConn is what a session needs from a WebTransport session or a
// native QUIC connection.
type sessionConn interface {
	acceptStream(ctx context.Context) (sessionStream, error)
	sendDatagram(b []byte) error
	close(code uint64, reason string)
	context() context.Context
	remote() string
}

type sessionStream interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

type wtConn struct{ s *webtransport.Session }

func (c wtConn) acceptStream(ctx context.Context) (sessionStream, error) {
	return c.s.AcceptStream(ctx)
}
func (c wtConn) sendDatagram(b []byte) error { return c.s.SendDatagram(b) }
func (c wtConn) close(code uint64, reason string) {
	_ = c.s.CloseWithError(webtransport.SessionErrorCode(code), reason)
}
func (c wtConn) context() context.Context { return c.s.Context() }
func (c wtConn) remote() string           { return c.s.RemoteAddr().String() }

type nativeConn struct{ c *quicgo.Conn }

func (c nativeConn) acceptStream(ctx context.Context) (sessionStream, error) {
	return c.c.AcceptStream(ctx)
}
func (c nativeConn) sendDatagram(b []byte) error { return c.c.SendDatagram(b) }
func (c nativeConn) close(code uint64, reason string) {
	_ = c.c.CloseWithError(quicgo.ApplicationErrorCode(code), reason)
}
func (c nativeConn) context() context.Context { return c.c.Context() }
func (c nativeConn) remote() string           { return c.c.RemoteAddr().String() }

var (
	errTokenExpired = errors.New("token expired")
	errWriteStalled = errors.New("write stalled")
)

// refuseGrace is how long a refused session stays open for its error
// frame to arrive (closing at once would reset the stream under it); a
// client closes as soon as it has read the frame.
const refuseGrace = time.Second

// refuse sends an error frame with the close code, waits for the client
// to close (at most refuseGrace) and closes the session with the code.
func (s *Server) refuse(conn sessionConn, str sessionStream, code uint64, msg string) {
	s.refused.Add(1)
	if str != nil {
		b, _ := json.Marshal(struct {
			Type  string `json:"type"`
			Error string `json:"error"`
			Code  uint64 `json:"code"`
		}{push.TypeError, msg, code})
		_ = str.SetWriteDeadline(time.Now().Add(refuseGrace))
		if _, err := str.Write(pq.AppendFrame(nil, b)); err == nil {
			if c, ok := str.(io.Closer); ok {
				_ = c.Close() // FIN after the frame
			}
			t := time.NewTimer(refuseGrace)
			select {
			case <-conn.context().Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	conn.close(code, msg)
}

// session authenticates the peer and copies its hub client's messages to
// it until either side ends.
func (s *Server) session(conn sessionConn, transport string) {
	actx, acancel := context.WithTimeout(conn.context(), s.opts.AuthTimeout)
	str, err := conn.acceptStream(actx)
	acancel()
	if err != nil {
		s.refuse(conn, nil, pq.CodeTimeout, "no session stream opened within "+s.opts.AuthTimeout.String())
		return
	}
	_ = str.SetReadDeadline(time.Now().Add(s.opts.AuthTimeout))
	fr := pq.NewFrameReader(str, s.opts.ReadLimit)
	first, err := fr.Next()
	if err != nil {
		code := uint64(pq.CodeTimeout)
		if errors.Is(err, pq.ErrFrameTooLong) {
			code = pq.CodeBadRequest
		}
		s.refuse(conn, str, code, "no auth frame: "+err.Error())
		return
	}
	var auth pq.Auth
	if err := json.Unmarshal(first, &auth); err != nil || auth.Type != "auth" {
		s.refuse(conn, str, pq.CodeBadRequest, `the first frame must be {"type":"auth","token":"<access token>"}`)
		return
	}
	if auth.Token == "" {
		s.refuse(conn, str, pq.CodeUnauthorized, "no access token in the auth frame")
		return
	}
	id, err := s.opts.Verify(auth.Token)
	if err != nil {
		s.refuse(conn, str, pq.CodeUnauthorized, err.Error())
		return
	}
	_ = str.SetReadDeadline(time.Time{})
	remote := conn.remote()
	c, err := s.opts.Hub.Join(push.Filter{}, push.ClientInfo{User: id.User, Role: id.Role, Transport: transport, Remote: remote})
	if err != nil {
		code := uint64(pq.CodeTryAgainLater)
		if errors.Is(err, push.ErrClosed) {
			code = pq.CodeGoingAway
		}
		s.refuse(conn, str, code, err.Error())
		return
	}
	defer c.Close()
	s.sessions.Add(1)
	s.active.Add(1)
	defer s.active.Add(-1)
	datagrams := auth.Datagrams == nil || *auth.Datagrams
	log := s.log.With("client", c.ID(), "user", id.User, "remote", remote, "transport", transport)
	log.Debug("quic session started", "datagrams", datagrams)

	ctx, cancel := context.WithCancelCause(conn.context())
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	wg.Go(func() { // reader: subscribe commands
		for {
			f, err := fr.Next()
			if err != nil {
				cancel(fmt.Errorf("read: %w", err))
				return
			}
			if err := c.Handle(f); err != nil {
				log.Debug("refused a client command", "err", err)
			}
		}
	})
	expiry := time.NewTimer(time.Until(id.Expires))
	defer expiry.Stop()
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-expiry.C:
			cancel(errTokenExpired)
		}
	})

	w := writer{s: s, conn: conn, str: str, datagrams: datagrams}
	for {
		msgs, err := c.Next(ctx)
		if err != nil {
			break
		}
		if err := w.write(msgs); err != nil {
			cancel(err)
			break
		}
	}
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errTokenExpired):
		conn.close(pq.CodeTokenExpired, "token expired; refresh it and reconnect")
	case errors.Is(cause, errWriteStalled):
		conn.close(pq.CodeTimeout, "write stalled")
	case cause == nil:
		// The client or the hub closed: the server is shutting down.
		conn.close(pq.CodeGoingAway, "server shutting down")
	default:
		log.Debug("quic session ended", "err", cause)
		conn.close(pq.CodeNormal, "")
	}
}

// writer sends one session's messages: samples as datagrams, the rest
// as stream frames.
type writer struct {
	s         *Server
	conn      sessionConn
	str       sessionStream
	datagrams bool
	seq       uint64
	buf, dg   []byte
}

// samplePrefix starts every sample message of the push core (its
// sampleMsg encodes type first).
var samplePrefix = []byte(`{"type":"` + push.TypeSample + `",`)

func (w *writer) write(msgs [][]byte) error {
	w.buf = w.buf[:0]
	for _, m := range msgs {
		if w.datagrams && bytes.HasPrefix(m, samplePrefix) {
			// Frames before it (a gap marker) leave first.
			if err := w.flush(); err != nil {
				return err
			}
			if err := w.sendSample(m); err != nil {
				return err
			}
			continue
		}
		w.buf = pq.AppendFrame(w.buf, m)
		w.s.frames.Add(1)
	}
	return w.flush()
}

func (w *writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_ = w.str.SetWriteDeadline(time.Now().Add(w.s.opts.WriteTimeout))
	_, err := w.str.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errWriteStalled
		}
		return fmt.Errorf("write the stream: %w", err)
	}
	return nil
}

// sendSample sends a sample message as numbered datagrams, split when it
// is too large for one; a single sample too large for any datagram goes
// on the stream.
func (w *writer) sendSample(m []byte) error {
	parts := [][]byte{m}
	if len(m)+len(`{"seq":18446744073709551615,`) > maxDatagram {
		var rest [][]byte
		var err error
		if parts, rest, err = pq.SplitSamples(m, maxDatagram); err != nil {
			return err
		}
		w.s.split.Add(1)
		for _, r := range rest {
			w.buf = pq.AppendFrame(w.buf, r)
			w.s.onStream.Add(1)
		}
	}
	for _, p := range parts {
		w.seq++
		w.dg = pq.SeqDatagram(w.dg[:0], w.seq, p)
		err := w.conn.sendDatagram(w.dg)
		var tooLarge *quicgo.DatagramTooLargeError
		switch {
		case err == nil:
			w.s.datagrams.Add(1)
		case errors.As(err, &tooLarge):
			// The path is narrower than our budget: the stream carries it.
			w.buf = pq.AppendFrame(w.buf, p)
			w.s.onStream.Add(1)
		default:
			return fmt.Errorf("send a datagram: %w", err)
		}
	}
	return nil
}
