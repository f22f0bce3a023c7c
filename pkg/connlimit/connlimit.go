// Package connlimit bounds the connections a listener holds open: at most
// Max in all and at most PerIP from one remote IP (addresses an Exempt
// function names — trusted proxies — are not capped per IP). A connection
// past a limit is closed as soon as it is accepted, before a TLS handshake
// or any read (the client sees the connection reset and backs off), and
// counted by reason; Accept itself never fails because of a limit, so the
// server keeps serving the others. The broker's gRPC listener and the
// visualization server's HTTP listener use it.
//
// A Listener is safe for concurrent use; its connections release their
// slot on the first Close (a hijacked WebSocket connection too).
package connlimit

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Refusal reasons, the label of the components' *_connections_refused_total.
const (
	ReasonMax   = "max_connections"
	ReasonPerIP = "max_connections_per_ip"
)

// Listener wraps a net.Listener with the limits; 0 means no limit.
type Listener struct {
	net.Listener
	max, perIP int
	exempt     func(netip.Addr) bool

	mu            sync.Mutex
	open          int
	byIP          map[netip.Addr]int
	refMax, refIP atomic.Uint64
}

// Wrap returns l with at most max connections open and perIP from one IP;
// exempt (nil: none) names the addresses not capped per IP.
func Wrap(l net.Listener, max, perIP int, exempt func(netip.Addr) bool) *Listener {
	return &Listener{Listener: l, max: max, perIP: perIP, exempt: exempt, byIP: map[netip.Addr]int{}}
}

// Accept returns the next connection within the limits; others are closed
// and counted, and Accept waits for the next one.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerIP(c.RemoteAddr())
		if l.admit(ip) {
			return &conn{Conn: c, l: l, ip: ip}, nil
		}
		_ = c.Close()
	}
}

// admit counts a new connection from ip, or refuses it.
func (l *Listener) admit(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.open >= l.max {
		l.refMax.Add(1)
		return false
	}
	capped := l.perIP > 0 && ip.IsValid() && (l.exempt == nil || !l.exempt(ip))
	if capped && l.byIP[ip] >= l.perIP {
		l.refIP.Add(1)
		return false
	}
	l.open++
	if ip.IsValid() {
		l.byIP[ip]++
	}
	return true
}

func (l *Listener) release(ip netip.Addr) {
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

// peerIP is the IP of a TCP peer (the zero Addr for anything else, which
// is then not capped per IP).
func peerIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// conn gives its slot back when closed (once).
type conn struct {
	net.Conn
	l        *Listener
	ip       netip.Addr
	released atomic.Bool
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.released.CompareAndSwap(false, true) {
		c.l.release(c.ip)
	}
	return err
}
