package wspush

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// Corking. The WebSocket library writes and flushes every message on its
// own: one write(2) per message per client, which on the fan-out path
// (a snapshot to thousands of clients, each taking a batch of queued
// messages from the hub at a time) was half of the server's CPU in the
// profile (BENCHMARKS.md, "Profiling"). The session corks the connection
// while it writes a batch: the frames collect in a buffer and leave in one
// write when it uncorks.
//
// Write timeouts move here too: every write to the socket has the
// heartbeat as its deadline (net.Conn.SetWriteDeadline), so the session
// passes no context to the library's Write, sparing it a timer per
// message.

// corkMax bounds what a corked connection holds; past it, writes go out.
const corkMax = 256 << 10

// corkConn is the hijacked connection under the WebSocket library.
type corkConn struct {
	net.Conn
	timeout time.Duration

	mu     sync.Mutex
	corked bool
	buf    []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked && len(c.buf)+len(p) <= corkMax {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.writeLocked(p)
}

func (c *corkConn) writeLocked(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.writeLocked(c.buf)
	if cap(c.buf) > 64<<10 {
		c.buf = nil // a burst's buffer is not kept per idle client
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// cork holds writes until uncork.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork sends what was held, in one write.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

// corkingWriter hands the WebSocket library a corkConn when it hijacks
// the HTTP connection.
type corkingWriter struct {
	http.ResponseWriter
	timeout time.Duration
	conn    *corkConn
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The 101 response is flushed by the hijack; be sure nothing is left
	// behind in the old writer.
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: nc, timeout: w.timeout}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 4096)), nil
}

func (w *corkingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
