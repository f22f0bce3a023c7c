package visualization

// The HTTP listener's connection limits (max_connections,
// max_connections_per_ip): a connection over either is closed as soon as
// it is accepted — before the TLS handshake and before any byte is read —
// and counted. WebSockets are connections like any other: a hijacked
// connection is released when it is closed.

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// ConnStats are the HTTP listener's connection figures.
type ConnStats struct {
	Open         int    `json:"open"`           // connections open now
	RefusedMax   uint64 `json:"refused_max"`    // closed at accept: max_connections reached
	RefusedPerIP uint64 `json:"refused_per_ip"` // closed at accept: max_connections_per_ip reached
}

// connLimiter is a net.Listener that admits at most max connections, and
// at most perIP (0: no cap) from one address unless exempt says the
// address is a trusted proxy.
type connLimiter struct {
	net.Listener
	max, perIP int
	exempt     func(netip.Addr) bool

	mu   sync.Mutex
	open int
	byIP map[netip.Addr]int

	refusedMax, refusedPerIP atomic.Uint64
}

func newConnLimiter(ln net.Listener, max, perIP int, exempt func(netip.Addr) bool) *connLimiter {
	return &connLimiter{Listener: ln, max: max, perIP: perIP, exempt: exempt, byIP: map[netip.Addr]int{}}
}

// Accept returns the next connection within the limits; others are closed
// and counted, and Accept waits for the next one.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerIP(c.RemoteAddr())
		if l.admit(ip) {
			return &limitedConn{Conn: c, l: l, ip: ip}, nil
		}
		_ = c.Close()
	}
}

// admit counts a new connection from ip, or refuses it.
func (l *connLimiter) admit(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.max {
		l.refusedMax.Add(1)
		return false
	}
	capped := l.perIP > 0 && ip.IsValid() && (l.exempt == nil || !l.exempt(ip))
	if capped && l.byIP[ip] >= l.perIP {
		l.refusedPerIP.Add(1)
		return false
	}
	l.open++
	if ip.IsValid() {
		l.byIP[ip]++
	}
	return true
}

func (l *connLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if !ip.IsValid() {
		return
	}
	if n := l.byIP[ip] - 1; n > 0 {
		l.byIP[ip] = n
	} else {
		delete(l.byIP, ip)
	}
}

// Stats returns the connection figures.
func (l *connLimiter) Stats() ConnStats {
	l.mu.Lock()
	open := l.open
	l.mu.Unlock()
	return ConnStats{Open: open, RefusedMax: l.refusedMax.Load(), RefusedPerIP: l.refusedPerIP.Load()}
}

// limitedConn gives its slot back when closed (once).
type limitedConn struct {
	net.Conn
	l        *connLimiter
	ip       netip.Addr
	released atomic.Bool
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	if c.released.CompareAndSwap(false, true) {
		c.l.release(c.ip)
	}
	return err
}

// peerIP is the IP of a TCP peer (the zero Addr for anything else).
func peerIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
