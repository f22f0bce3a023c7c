// Package faultproxy is an in-process TCP proxy for fault-injection tests:
// put it between two parts (a broker and its Redis shard, two Raft members)
// and, while traffic flows, add latency, hold the bytes (a black hole: the
// sender's writes stall and its timeouts fire, as behind a dropping
// firewall), refuse new connections, or reset every open connection.
//
// Bytes are never lost or reordered inside a connection: Blackhole holds
// them until it is lifted (or the connection is reset), Delay shifts each
// chunk by the same latency. So a protocol never sees corruption, only
// what a real network does to it: stalls, timeouts and resets.
//
// Concurrency: every method is safe for concurrent use. A Proxy owns two
// goroutines per open connection plus its accept loop; Close stops them
// all and waits.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Stats are a proxy's counters since New.
type Stats struct {
	Accepted uint64 // connections accepted
	Refused  uint64 // connections closed at once because Refuse was on
	Resets   uint64 // connections reset by ResetAll
	Failed   uint64 // connections whose target could not be dialled
	Bytes    uint64 // bytes forwarded, both directions
	Open     int    // connections open now
}

// Proxy forwards connections accepted on Addr to a target address.
type Proxy struct {
	target string
	l      net.Listener

	mu      sync.Mutex
	conns   map[*link]struct{}
	delay   time.Duration
	hole    bool
	opened  chan struct{} // closed while the black hole is off
	refuse  bool
	closed  bool
	wg      sync.WaitGroup
	accDone chan struct{}

	accepted, refused, resets, failed, bytes atomic.Uint64
}

// link is one proxied connection: the accepted side and the dialled one.
type link struct {
	in, out  net.Conn
	dead     chan struct{} // closed when the link is reset or closed
	deadOnce sync.Once
	left     atomic.Int32 // directions still running
}

func (l *link) kill() { l.deadOnce.Do(func() { close(l.dead) }) }

// New listens on a free loopback port and forwards to target.
func New(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen for %s: %w", target, err)
	}
	p := &Proxy{target: target, l: l, conns: map[*link]struct{}{}, opened: make(chan struct{}), accDone: make(chan struct{})}
	close(p.opened)
	go p.accept()
	return p, nil
}

// Addr is where clients connect instead of the target.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Delay adds d of latency to every chunk in both directions from now on
// (0 removes it). Throughput is not limited, only shifted in time.
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Blackhole, when on, stops forwarding bytes on every connection, open or
// new: they are held (the sender's window fills and its timeouts fire) and
// flow again in order when it is turned off.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.hole {
		return
	}
	p.hole = on
	if on {
		p.opened = make(chan struct{})
	} else {
		close(p.opened)
	}
}

// Refuse, when on, closes new connections as soon as they are accepted
// (the client's dial succeeds, its first read sees EOF); open connections
// are left alone (see ResetAll).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Partition cuts the link: Refuse(true) and ResetAll. Heal undoes it.
func (p *Proxy) Partition() int {
	p.Refuse(true)
	return p.ResetAll()
}

// Heal lets connections through again (Refuse and Blackhole off, no delay).
func (p *Proxy) Heal() {
	p.Refuse(false)
	p.Blackhole(false)
	p.Delay(0)
}

// ResetAll aborts every open connection with a TCP reset on both sides and
// returns how many it reset.
func (p *Proxy) ResetAll() int {
	p.mu.Lock()
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
	p.resets.Add(uint64(len(ls)))
	return len(ls)
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	open := len(p.conns)
	p.mu.Unlock()
	return Stats{Accepted: p.accepted.Load(), Refused: p.refused.Load(), Resets: p.resets.Load(),
		Failed: p.failed.Load(), Bytes: p.bytes.Load(), Open: open}
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	if p.hole {
		p.hole = false
		close(p.opened)
	}
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	err := p.l.Close()
	<-p.accDone
	for _, l := range ls {
		l.kill()
		l.in.Close()
		l.out.Close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer close(p.accDone)
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if refuse || closed {
			p.refused.Add(1)
			abort(in)
			continue
		}
		out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			p.failed.Add(1)
			abort(in)
			continue
		}
		l := &link{in: in, out: out, dead: make(chan struct{})}
		l.left.Store(2)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		p.conns[l] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(l, out, in)
		go p.pipe(l, in, out)
	}
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst through the fault controls: a reader goroutine
// (this one) hands chunks to a writer that applies the delay and the black
// hole, so latency does not cut throughput.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	defer p.wg.Done()
	defer func() {
		if l.left.Add(-1) == 0 {
			p.mu.Lock()
			delete(p.conns, l)
			p.mu.Unlock()
		}
	}()
	ch := make(chan chunk, 64)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		for c := range ch {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d) // the injected latency itself
			}
			p.mu.Lock()
			gate := p.opened
			p.mu.Unlock()
			select {
			case <-gate:
			case <-l.dead:
			}
			if _, err := dst.Write(c.b); err != nil {
				for range ch { // drain so the reader is never stuck
				}
				return
			}
			p.bytes.Add(uint64(len(c.b)))
		}
	}()
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			d := p.delay
			p.mu.Unlock()
			select {
			case ch <- chunk{b: buf[:n], due: time.Now().Add(d)}:
			case <-l.dead:
			}
		}
		if err != nil {
			close(ch)
			<-wdone
			if errors.Is(err, io.EOF) {
				// Half-close: pass the FIN on and let the other direction
				// finish.
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			} else {
				l.kill()
				l.in.Close()
				l.out.Close()
			}
			return
		}
	}
}

// reset aborts both sides of the link with RST.
func (l *link) reset() {
	l.kill()
	abort(l.in)
	abort(l.out)
}

// abort closes c with a TCP reset (SO_LINGER 0) instead of a FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
