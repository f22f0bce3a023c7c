package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Connection timing on the QUIC port. The keep-alive keeps NAT bindings
// and the idle timer of a quiet session alive; a peer silent for
// IdleTimeout (a lost network) is dropped.
const (
	KeepAlivePeriod  = 10 * time.Second
	IdleTimeout      = 30 * time.Second
	handshakeTimeout = 10 * time.Second
)

// ConnHandler serves one accepted connection until it ends or ctx ends
// (the listener is closing); the listener closes the connection after it
// returns.
type ConnHandler func(ctx context.Context, conn *quicgo.Conn)

// ListenerOptions configure a Listener.
type ListenerOptions struct {
	// Addr is the UDP address, e.g. ":8081" or "127.0.0.1:0".
	Addr string
	// Certs serve the TLS certificate.
	Certs *Certs
	// Handlers by ALPN protocol; the handshake offers exactly these.
	Handlers map[string]ConnHandler
	Logger   *slog.Logger
}

// Listener is one UDP socket serving QUIC, routing each connection by its
// negotiated ALPN protocol (h3 for browsers' WebTransport, ALPNNative for
// Go clients).
//
// Concurrency: Serve runs once; Addr and Close are safe at any time.
// Every connection's handler runs on its own goroutine, all ended before
// Serve returns.
type Listener struct {
	opts ListenerOptions
	log  *slog.Logger
	udp  net.PacketConn
	tr   *quicgo.Transport
	ln   *quicgo.EarlyListener

	closeOnce sync.Once
	closed    chan struct{}
}

// QUICConfig returns the QUIC settings of the server and the clients:
// datagrams and partial-delivery stream resets (both required by
// WebTransport) and the keep-alive and idle timers.
func QUICConfig() *quicgo.Config {
	return &quicgo.Config{
		EnableDatagrams:                  true,
		EnableStreamResetPartialDelivery: true,
		KeepAlivePeriod:                  KeepAlivePeriod,
		MaxIdleTimeout:                   IdleTimeout,
		HandshakeIdleTimeout:             handshakeTimeout,
		MaxIncomingStreams:               16,
		MaxIncomingUniStreams:            16,
	}
}

// Listen binds the UDP socket, so Addr is known before Serve.
func Listen(opts ListenerOptions) (*Listener, error) {
	if opts.Certs == nil || len(opts.Handlers) == 0 {
		return nil, errors.New("quic listener: certificates and at least one protocol handler are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr, err := net.ResolveUDPAddr("udp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("resolve quic_listen %s: %w", opts.Addr, err)
	}
	udp, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on quic_listen %s (UDP): %w", opts.Addr, err)
	}
	protos := make([]string, 0, len(opts.Handlers))
	for p := range opts.Handlers {
		protos = append(protos, p)
	}
	tlsConf := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: opts.Certs.GetCertificate,
		NextProtos:     protos,
	}
	tr := &quicgo.Transport{Conn: udp}
	ln, err := tr.ListenEarly(tlsConf, QUICConfig())
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("start QUIC on %s: %w", udp.LocalAddr(), err)
	}
	return &Listener{opts: opts, log: log, udp: udp, tr: tr, ln: ln, closed: make(chan struct{})}, nil
}

// Addr returns the bound UDP address.
func (l *Listener) Addr() net.Addr { return l.udp.LocalAddr() }

// Serve accepts connections and runs their handlers until ctx ends or
// Close is called; then it stops accepting, cancels the handlers' context,
// closes every connection with CodeGoingAway, waits for the handlers and
// releases the socket. It returns nil after such a shutdown.
func (l *Listener) Serve(ctx context.Context) error {
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[*quicgo.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()

	var err error
	for {
		conn, aerr := l.ln.Accept(hctx)
		if aerr != nil {
			select {
			case <-l.closed:
			default:
				err = fmt.Errorf("accept QUIC connections on %s: %w", l.Addr(), aerr)
			}
			break
		}
		proto := conn.ConnectionState().TLS.NegotiatedProtocol
		h, ok := l.opts.Handlers[proto]
		if !ok {
			// TLS refuses unknown ALPN; this is a defence.
			_ = conn.CloseWithError(quicgo.ApplicationErrorCode(CodeBadRequest), "unknown protocol")
			continue
		}
		mu.Lock()
		conns[conn] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, conn)
				mu.Unlock()
				_ = conn.CloseWithError(quicgo.ApplicationErrorCode(CodeNormal), "")
			}()
			h(hctx, conn)
		})
	}
	cancel()
	mu.Lock()
	for c := range conns {
		_ = c.CloseWithError(quicgo.ApplicationErrorCode(CodeGoingAway), "server shutting down")
	}
	mu.Unlock()
	wg.Wait()
	if e := l.tr.Close(); e != nil && err == nil {
		err = fmt.Errorf("close the QUIC transport: %w", e)
	}
	_ = l.udp.Close()
	return err
}

// Close stops accepting; Serve then shuts down and returns. A Listener
// that is never served is freed with Release instead.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		_ = l.ln.Close()
	})
	return nil
}

// Release frees the socket of a Listener that was never served.
func (l *Listener) Release() {
	_ = l.Close()
	_ = l.tr.Close()
	_ = l.udp.Close()
}
