// Package connlimit bounds the connections a listener holds open: at most
// Max in all and at most PerIP from one remote IP. A connection past a
// limit is closed as soon as it is accepted (the client sees the
// connection reset and backs off) and counted by reason; Accept itself
// never fails because of a limit, so the server keeps serving the others.
//
// A Listener is safe for concurrent use; its connections release their
// slot on the first Close.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
)

// Refusal reasons, the label of monitor_broker_grpc_connections_refused_total.
const (
	ReasonMax   = "max_connections"
	ReasonPerIP = "max_connections_per_ip"
)

// Listener wraps a net.Listener with the limits; 0 means no limit.
type Listener struct {
	net.Listener
	max, perIP int

	mu            sync.Mutex
	open          int
	byIP          map[string]int
	refMax, refIP atomic.Uint64
}

// Wrap returns l with at most max connections open, perIP from one IP.
func Wrap(l net.Listener, max, perIP int) *Listener {
	return &Listener{Listener: l, max: max, perIP: perIP, byIP: map[string]int{}}
}

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		switch {
		case l.max > 0 && l.open >= l.max:
			l.mu.Unlock()
			l.refMax.Add(1)
			c.Close()
			continue
		case l.perIP > 0 && l.byIP[ip] >= l.perIP:
			l.mu.Unlock()
			l.refIP.Add(1)
			c.Close()
			continue
		}
		l.open++
		l.byIP[ip]++
		l.mu.Unlock()
		return &conn{Conn: c, l: l, ip: ip}, nil
	}
}

// Open is the number of connections held now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Refused returns the connections refused so far by reason.
func (l *Listener) Refused() map[string]uint64 {
	return map[string]uint64{ReasonMax: l.refMax.Load(), ReasonPerIP: l.refIP.Load()}
}

func (l *Listener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

type conn struct {
	net.Conn
	l    *Listener
	ip   string
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() { c.l.release(c.ip) })
	return c.Conn.Close()
}
