package main

// QUIC figures (issue 8): delivery ratio and latency p50/p99 of live
// samples over the WebSocket, WebTransport streams and WebTransport
// datagrams, each through an in-process proxy that drops and delays, at
// 0, 2 and 10 % loss with 50 ms one-way delay.
//
// Set-up, all in this process: a stand-in broker (a gRPC Subscribe stream
// we publish snapshots on), the real visualization server (push hub,
// WebSocket, QUIC channel) and three clients, one per transport, each
// behind its own proxy. Every 20 ms (full) or 25 ms (quick) one snapshot
// is stored whose sample value is its index; a client's figure counts the
// distinct indices it received within a second of the last send, and the
// time from publish to receipt.
//
// Proxies: the UDP proxy drops each datagram (both ways) with
// probability p and delays the rest by 50 ms — QUIC's own loss recovery
// runs on real losses. A user-space TCP proxy cannot drop segments, so it
// models TCP's answer to loss: each chunk is delayed 50 ms, and with
// probability p by another retransmission timeout (200 ms, Linux's
// minimum RTO), holding back everything behind it (in-order delivery).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/quic-go/webtransport-go"
	"google.golang.org/grpc"

	pq "github.com/monitorhq/monitor/pkg/quic"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization"
)

const (
	proxyDelay = 50 * time.Millisecond
	tcpRTO     = 200 * time.Millisecond
)

// quicFigures measures the three transports at each loss rate; an error
// is recorded as a failure and the other figures go on.
func (h *harness) quicFigures(ctx context.Context) {
	if err := h.quicTransports(ctx); err != nil {
		h.fail("quic bench: %v", err)
	}
}

func (h *harness) quicTransports(ctx context.Context) error {
	n, every := 1000, 20*time.Millisecond
	if h.res.Mode == "quick" {
		n, every = 60, 25*time.Millisecond
	}
	br, err := startSubscribeBroker()
	if err != nil {
		return err
	}
	defer br.stop()
	const password = "bench-password"
	hash, err := visualization.HashPassword(password)
	if err != nil {
		return err
	}
	cfg := visualization.DefaultConfig()
	cfg.HTTPListen, cfg.QUICListen, cfg.Brokers = "127.0.0.1:0", "127.0.0.1:0", []string{br.addr}
	cfg.Auth.JWTSecret = visualization.RandomSecret()
	cfg.Auth.Users = []visualization.UserConfig{{Username: "bench", PasswordHash: hash, Role: "viewer"}}
	cfg.TopK.ShmName = ""
	srv, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	defer func() { stop(); <-done }()
	base := "http://" + srv.Addr()
	token, info, err := benchLogin(base, password)
	if err != nil {
		return err
	}
	// Wait for the live feed's stream to the stand-in broker.
	for deadline := time.Now().Add(10 * time.Second); br.subscribers() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("quic bench: the visualization server never subscribed to the stand-in broker")
		}
	}

	type result struct{ ratio, p50, p99 float64 }
	names := []string{"WebSocket (TCP)", "WebTransport stream", "WebTransport datagrams"}
	// Timestamps grow across the levels: the live path drops a snapshot
	// not newer than its host's last one.
	ts := time.Now().Unix()
	for _, loss := range []float64{0, 0.02, 0.10} {
		var clients []*latencyClient
		var closers []func()
		fail := func(err error) error {
			for _, c := range closers {
				c()
			}
			return err
		}
		tp, err := newTCPProxy(srv.Addr(), loss)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, tp.close)
		ws, err := dialWSClient(ctx, "ws://"+tp.addr()+"/api/v1/ws", token)
		if err != nil {
			return fail(fmt.Errorf("websocket through the proxy: %w", err))
		}
		clients, closers = append(clients, ws), append(closers, ws.close)
		for _, dg := range []bool{false, true} {
			up, err := newUDPProxy(srv.QUICAddr(), loss)
			if err != nil {
				return fail(err)
			}
			closers = append(closers, up.close)
			c, err := dialWTClient(ctx, "https://"+up.addr()+pq.WebTransportPath, info.CertHashes, token, dg)
			if err != nil {
				return fail(fmt.Errorf("webtransport (datagrams %v) through the proxy at %.0f%% loss: %w", dg, loss*100, err))
			}
			clients, closers = append(clients, c), append(closers, c.close)
		}
		sent := make([]time.Time, n)
		tick := time.NewTicker(every)
		for i := range n {
			sent[i] = time.Now()
			ts++
			br.publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{{HostId: "bench-quic", Timestamp: ts,
				Metrics: []*monitorpb.Metric{{Name: "cpu.usage_percent", Value: float64(i), Unit: "%"}}}}})
			<-tick.C
		}
		tick.Stop()
		time.Sleep(time.Second) // the last samples' way through the proxies
		for i, c := range clients {
			ratio, p50, p99 := c.figures(sent)
			r := result{ratio, p50, p99}
			label := fmt.Sprintf("%s, %.0f%% loss, 50 ms delay", names[i], loss*100)
			cmd := "go run ./bench (bench/quic.go)"
			h.add(figure{Name: "push delivery " + label, Unit: "%", Value: r.ratio * 100, Command: cmd,
				Note: fmt.Sprintf("%d samples at %s intervals; distinct samples received within 1 s of the last send", n, every)})
			h.add(figure{Name: "push latency p50 " + label, Unit: "ms", Value: r.p50, Command: cmd})
			h.add(figure{Name: "push latency p99 " + label, Unit: "ms", Value: r.p99, Command: cmd})
			if loss == 0 && r.ratio < 1 {
				h.fail("quic bench: %s lost samples without any loss (%.1f%% delivered)", names[i], r.ratio*100)
			}
		}
		for _, c := range closers {
			c()
		}
	}
	return nil
}

func benchLogin(base, password string) (string, struct {
	CertHashes []pq.CertHash `json:"cert_hashes"`
}, error) {
	var info struct {
		CertHashes []pq.CertHash `json:"cert_hashes"`
	}
	resp, err := http.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"username":"bench","password":"`+password+`"}`))
	if err != nil {
		return "", info, err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || tok.AccessToken == "" {
		return "", info, fmt.Errorf("quic bench login: %s %v", resp.Status, err)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/quic", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return "", info, err
	}
	defer resp.Body.Close()
	return tok.AccessToken, info, json.NewDecoder(resp.Body).Decode(&info)
}

// latencyClient collects which sample indices arrived and when.
type latencyClient struct {
	mu    sync.Mutex
	got   map[int]time.Time
	close func()
}

func newLatencyClient() *latencyClient { return &latencyClient{got: map[int]time.Time{}} }

// handle records the samples of one message.
func (c *latencyClient) handle(data []byte) {
	now := time.Now()
	var m struct {
		Type    string `json:"type"`
		Samples []struct {
			Value float64 `json:"value"`
		} `json:"samples"`
	}
	if json.Unmarshal(data, &m) != nil || m.Type != "sample" {
		return
	}
	c.mu.Lock()
	for _, s := range m.Samples {
		if _, ok := c.got[int(s.Value)]; !ok {
			c.got[int(s.Value)] = now
		}
	}
	c.mu.Unlock()
}

func (c *latencyClient) figures(sent []time.Time) (ratio, p50, p99 float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lat []float64
	for i, at := range c.got {
		if i >= 0 && i < len(sent) {
			lat = append(lat, float64(at.Sub(sent[i]).Microseconds())/1000)
		}
	}
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	return float64(len(lat)) / float64(len(sent)), lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
}

func subscribeCmd() []byte {
	return []byte(`{"type":"subscribe","hosts":["bench-quic"],"kinds":["sample"]}`)
}

func dialWSClient(ctx context.Context, url, token string) (*latencyClient, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{Subprotocols: []string{"monitor.v1", "bearer." + token}})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	if err := conn.Write(dctx, websocket.MessageText, subscribeCmd()); err != nil {
		conn.CloseNow()
		return nil, err
	}
	c := newLatencyClient()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			_, data, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			c.handle(data)
		}
	})
	c.close = func() { conn.CloseNow(); wg.Wait() }
	// Until the subscribe command lands the default filter (everything)
	// is in force, so no sample is missed.
	return c, nil
}

func dialWTClient(ctx context.Context, url string, hashes []pq.CertHash, token string, datagrams bool) (*latencyClient, error) {
	d := &webtransport.Transport{TLSClientConfig: pq.PinnedTLSConfig(hashes, pq.ALPNHTTP3), QUICConfig: pq.QUICConfig()}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, sess, err := d.Dial(dctx, url, nil)
	if err != nil {
		return nil, err
	}
	str, err := sess.OpenStreamSync(dctx)
	if err != nil {
		_ = sess.CloseWithError(0, "")
		return nil, err
	}
	auth, _ := json.Marshal(pq.Auth{Type: "auth", Token: token, Datagrams: &datagrams})
	if _, err := str.Write(pq.AppendFrame(pq.AppendFrame(nil, auth), subscribeCmd())); err != nil {
		_ = sess.CloseWithError(0, "")
		return nil, err
	}
	fr := pq.NewFrameReader(str, 1<<20)
	// hello and subscribed, in order.
	for _, want := range []string{`"type":"hello"`, `"type":"subscribed"`} {
		_ = str.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := fr.Next()
		if err != nil || !strings.Contains(string(f), want) {
			_ = sess.CloseWithError(0, "")
			return nil, fmt.Errorf("want %s: %s %v", want, f, err)
		}
	}
	_ = str.SetReadDeadline(time.Time{})
	c := newLatencyClient()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			f, err := fr.Next()
			if err != nil {
				return
			}
			c.handle(f)
		}
	})
	wg.Go(func() {
		for {
			d, err := sess.ReceiveDatagram(context.Background())
			if err != nil {
				return
			}
			c.handle(d)
		}
	})
	c.close = func() { _ = sess.CloseWithError(0, ""); wg.Wait() }
	return c, nil
}

// udpProxy forwards one client's datagrams to the server and back,
// dropping with probability loss and delaying the rest by proxyDelay.
type udpProxy struct {
	conn   *net.UDPConn
	server *net.UDPAddr
	loss   float64
	mu     sync.Mutex
	client *net.UDPAddr
	wg     sync.WaitGroup
	up     *net.UDPConn // our socket towards the server
}

func newUDPProxy(server string, loss float64) (*udpProxy, error) {
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	up, err := net.DialUDP("udp", nil, sa)
	if err != nil {
		conn.Close()
		return nil, err
	}
	p := &udpProxy{conn: conn, server: sa, loss: loss, up: up}
	p.wg.Go(func() { // client → server
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.client = from
			p.mu.Unlock()
			p.later(buf[:n], func(b []byte) { _, _ = up.Write(b) })
		}
	})
	p.wg.Go(func() { // server → client
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			to := p.client
			p.mu.Unlock()
			if to != nil {
				p.later(buf[:n], func(b []byte) { _, _ = conn.WriteToUDP(b, to) })
			}
		}
	})
	return p, nil
}

func (p *udpProxy) later(b []byte, send func([]byte)) {
	if rand.Float64() < p.loss {
		return
	}
	c := slices.Clone(b)
	time.AfterFunc(proxyDelay, func() { send(c) })
}

func (p *udpProxy) addr() string { return p.conn.LocalAddr().String() }
func (p *udpProxy) close()       { p.conn.Close(); p.up.Close(); p.wg.Wait() }

// tcpProxy forwards TCP connections, delaying each chunk by proxyDelay
// and, with probability loss, by another tcpRTO, in order.
type tcpProxy struct {
	ln     net.Listener
	target string
	loss   float64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newTCPProxy(target string, loss float64) (*tcpProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &tcpProxy{ln: ln, target: target, loss: loss}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Go(func() { p.pipe(s, c) })
			p.wg.Go(func() { p.pipe(c, s) })
		}
	})
	return p, nil
}

// pipe copies src to dst with the delays, keeping order.
func (p *tcpProxy) pipe(dst, src net.Conn) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, 4096)
	var wg sync.WaitGroup
	wg.Go(func() {
		for c := range q {
			time.Sleep(time.Until(c.at))
			if _, err := dst.Write(c.b); err != nil {
				return
			}
		}
	})
	buf := make([]byte, 32<<10)
	last := time.Time{}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			at := time.Now().Add(proxyDelay)
			if rand.Float64() < p.loss {
				at = at.Add(tcpRTO)
			}
			if at.Before(last) {
				at = last // in order: nothing overtakes a delayed chunk
			}
			last = at
			q <- chunk{slices.Clone(buf[:n]), at}
		}
		if err != nil {
			break
		}
	}
	close(q)
	wg.Wait()
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }
func (p *tcpProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// subscribeBroker is a stand-in broker serving only Subscribe.
type subscribeBroker struct {
	monitorpb.UnimplementedMonitorServiceServer
	addr string
	srv  *grpc.Server
	mu   sync.Mutex
	subs map[chan *monitorpb.StoredBatch]struct{}
}

func startSubscribeBroker() (*subscribeBroker, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &subscribeBroker{addr: ln.Addr().String(), srv: grpc.NewServer(), subs: map[chan *monitorpb.StoredBatch]struct{}{}}
	monitorpb.RegisterMonitorServiceServer(b.srv, b)
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

func (b *subscribeBroker) Subscribe(_ *monitorpb.SubscribeRequest, stream monitorpb.MonitorService_SubscribeServer) error {
	ch := make(chan *monitorpb.StoredBatch, 4096)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case batch := <-ch:
			if err := stream.Send(batch); err != nil {
				return err
			}
		}
	}
}

func (b *subscribeBroker) subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

func (b *subscribeBroker) publish(batch *monitorpb.StoredBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- batch:
		default:
		}
	}
}

func (b *subscribeBroker) stop() { b.srv.Stop() }
