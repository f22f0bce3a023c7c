package quic

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// RefusedError is a session the server refused or closed, with its close
// code (CodeUnauthorized, CodeTokenExpired, ...) and reason.
type RefusedError struct {
	Code   uint64
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the server closed the session (code %d): %s", e.Code, e.Reason)
}

// DialOptions configure a native client.
type DialOptions struct {
	// Token is the access token (a JWT from POST /api/v1/auth/login).
	Token string
	// CertHashes pin the server's certificate: it must have one of these
	// sha-256 hashes (GET /api/v1/quic lists them). Empty: the
	// certificate is verified against the system roots and ServerName.
	CertHashes []CertHash
	// ServerName is the name verified without pins (default: the host of
	// the address).
	ServerName string
	// NoDatagrams asks for samples on the ordered stream instead of
	// datagrams.
	NoDatagrams bool
	// ReadLimit is the largest frame accepted from the server (default
	// 1 MiB).
	ReadLimit int
	// Buffer is how many messages are held for Recv (default 1024); when
	// it is full the stream backs up to the server (whose slow-consumer
	// policy applies) and datagrams wait in QUIC's own small queue.
	Buffer int
}

// Message is one message from the server.
type Message struct {
	// Data is the JSON object; a datagram's starts with its "seq".
	Data []byte
	// Datagram tells a datagram (latest value, may be lost) from a stream
	// frame (ordered, reliable).
	Datagram bool
	// Seq is a datagram's sequence number.
	Seq uint64
}

// ClientStats count what a client received.
type ClientStats struct {
	Stream    uint64 `json:"stream"`    // frames on the stream
	Datagrams uint64 `json:"datagrams"` // datagrams
	Lost      uint64 `json:"lost"`      // datagrams missing from the sequence
	Reordered uint64 `json:"reordered"` // datagrams that arrived after a later one
}

// Client is a native QUIC push client (ALPNNative).
//
// Concurrency: Recv is for one goroutine; Send, Stats and Close are safe
// for concurrent use. Two reader goroutines run until Close.
type Client struct {
	conn  *quicgo.Conn
	str   *quicgo.Stream
	hello []byte

	msgs chan Message
	done chan struct{} // closed when a reader stops
	err  error         // why, set before done is closed
	once sync.Once
	wg   sync.WaitGroup
	wmu  sync.Mutex

	stream, datagrams, lost, reordered atomic.Uint64
	lastSeq                            uint64 // datagram reader only
}

// Dial connects to addr (host:port of the QUIC port), authenticates with
// the token and waits for the hello message. A refused token is a
// *RefusedError with CodeUnauthorized.
func Dial(ctx context.Context, addr string, opts DialOptions) (*Client, error) {
	if opts.ReadLimit <= 0 {
		opts.ReadLimit = 1 << 20
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 1024
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{ALPNNative}, ServerName: opts.ServerName}
	if tlsConf.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial QUIC %s: %w", addr, err)
		}
		tlsConf.ServerName = host
	}
	if len(opts.CertHashes) > 0 {
		tlsConf = PinnedTLSConfig(opts.CertHashes, ALPNNative)
	}
	conn, err := quicgo.DialAddr(ctx, addr, tlsConf, QUICConfig())
	if err != nil {
		return nil, fmt.Errorf("dial QUIC %s: %w", addr, err)
	}
	c := &Client{conn: conn, msgs: make(chan Message, opts.Buffer), done: make(chan struct{})}
	if err := c.handshake(ctx, opts); err != nil {
		_ = conn.CloseWithError(quicgo.ApplicationErrorCode(CodeNormal), "")
		return nil, err
	}
	return c, nil
}

func (c *Client) handshake(ctx context.Context, opts DialOptions) error {
	str, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return c.closeErr(fmt.Errorf("open the session stream: %w", err))
	}
	c.str = str
	dg := !opts.NoDatagrams
	auth, _ := json.Marshal(Auth{Type: "auth", Token: opts.Token, Datagrams: &dg})
	if d, ok := ctx.Deadline(); ok {
		_ = str.SetDeadline(d)
	}
	if _, err := str.Write(AppendFrame(nil, auth)); err != nil {
		return c.closeErr(fmt.Errorf("send the token: %w", err))
	}
	fr := NewFrameReader(str, opts.ReadLimit)
	first, err := fr.Next()
	if err != nil {
		return c.closeErr(fmt.Errorf("read the hello message: %w", err))
	}
	var head struct {
		Type  string `json:"type"`
		Error string `json:"error"`
		Code  uint64 `json:"code"`
	}
	if err := json.Unmarshal(first, &head); err != nil {
		return fmt.Errorf("the server's first message %q is not JSON: %w", first, err)
	}
	if head.Type == "error" {
		// The server says why and with which code, then waits for us to
		// close.
		return &RefusedError{Code: head.Code, Reason: head.Error}
	}
	if head.Type != "hello" {
		return fmt.Errorf("the server's first message is %q, want hello", head.Type)
	}
	_ = str.SetDeadline(time.Time{})
	c.hello = bytes.Clone(first)
	c.wg.Go(func() { c.readStream(fr) })
	c.wg.Go(c.readDatagrams)
	return nil
}

// PinnedTLSConfig returns a client TLS configuration that trusts a server
// certificate by its sha-256 hash alone, as WebTransport's
// serverCertificateHashes does: names and chains are not checked.
func PinnedTLSConfig(pins []CertHash, protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         protos,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("the server sent no certificate")
			}
			got := HashOf(raw[0])
			for _, p := range pins {
				if p.Algorithm == got.Algorithm && subtle.ConstantTimeCompare(p.Value, got.Value) == 1 {
					return nil
				}
			}
			return errors.New("the server's certificate matches none of the pinned sha-256 hashes (fetch them again from /api/v1/quic)")
		},
	}
}

// closeErr turns the connection's close into a RefusedError when the
// server closed it with a code; otherwise it returns err.
func (c *Client) closeErr(err error) error {
	var ae *quicgo.ApplicationError
	if errors.As(context.Cause(c.conn.Context()), &ae) && ae.Remote {
		return &RefusedError{Code: uint64(ae.ErrorCode), Reason: ae.ErrorMessage}
	}
	if errors.As(err, &ae) && ae.Remote {
		return &RefusedError{Code: uint64(ae.ErrorCode), Reason: ae.ErrorMessage}
	}
	return err
}

// Hello returns the server's hello message.
func (c *Client) Hello() []byte { return c.hello }

// ConnectionState returns the QUIC connection's state (e.g. the
// certificate the server presented).
func (c *Client) ConnectionState() quicgo.ConnectionState { return c.conn.ConnectionState() }

func (c *Client) stop(err error) {
	c.once.Do(func() {
		c.err = c.closeErr(err)
		close(c.done)
	})
}

func (c *Client) readStream(fr *FrameReader) {
	for {
		f, err := fr.Next()
		if err != nil {
			c.stop(fmt.Errorf("read the session stream: %w", err))
			return
		}
		c.stream.Add(1)
		select {
		case c.msgs <- Message{Data: bytes.Clone(f)}:
		case <-c.done:
			return
		}
	}
}

func (c *Client) readDatagrams() {
	for {
		d, err := c.conn.ReceiveDatagram(context.Background())
		if err != nil {
			c.stop(fmt.Errorf("receive datagrams: %w", err))
			return
		}
		seq, err := DatagramSeq(d)
		if err != nil {
			continue // not ours
		}
		c.datagrams.Add(1)
		switch {
		case seq > c.lastSeq:
			c.lost.Add(seq - c.lastSeq - 1)
			c.lastSeq = seq
		default:
			c.reordered.Add(1)
			if c.lost.Load() > 0 {
				c.lost.Add(^uint64(0)) // counted as lost before it came
			}
		}
		select {
		case c.msgs <- Message{Data: d, Datagram: true, Seq: seq}:
		case <-c.done:
			return
		}
	}
}

// Recv returns the next message, from the stream or a datagram. After
// the session ends it returns the reason (a *RefusedError when the server
// closed it with a code, e.g. CodeTokenExpired or CodeGoingAway).
func (c *Client) Recv(ctx context.Context) (Message, error) {
	select {
	case m := <-c.msgs:
		return m, nil
	default:
	}
	select {
	case m := <-c.msgs:
		return m, nil
	case <-c.done:
		return Message{}, c.err
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// Send writes a command (e.g. {"type":"subscribe",...}) on the stream.
func (c *Client) Send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode a command: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		_ = c.str.SetWriteDeadline(d)
		defer func() { _ = c.str.SetWriteDeadline(time.Time{}) }()
	}
	if _, err := c.str.Write(AppendFrame(nil, b)); err != nil {
		return c.closeErr(fmt.Errorf("send a command: %w", err))
	}
	return nil
}

// Stats returns what the client received so far.
func (c *Client) Stats() ClientStats {
	return ClientStats{Stream: c.stream.Load(), Datagrams: c.datagrams.Load(), Lost: c.lost.Load(), Reordered: c.reordered.Load()}
}

// Close ends the session and waits for the readers.
func (c *Client) Close() error {
	err := c.conn.CloseWithError(quicgo.ApplicationErrorCode(CodeNormal), "client closed")
	c.stop(errors.New("client closed"))
	c.wg.Wait()
	return err
}
