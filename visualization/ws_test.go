package visualization_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/broker"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

// wsURL is the WebSocket URL of a running server.
func wsURL(r *running) string { return "ws" + strings.TrimPrefix(r.url, "http") + "/api/v1/ws" }

type wsMsg struct {
	Type    string `json:"type"`
	Host    string `json:"host"`
	TS      int64  `json:"ts"`
	Missed  uint64 `json:"missed"`
	Samples []struct {
		Series string  `json:"series"`
		Value  float64 `json:"value"`
	} `json:"samples"`
}

// dialWS opens a WebSocket with the token as subprotocol.
func dialWS(t testing.TB, u, token string, header http.Header, client *http.Client) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	protos := []string{"monitor.v1"}
	if token != "" {
		protos = append(protos, "bearer."+token)
	}
	return websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: protos, HTTPHeader: header, HTTPClient: client})
}

func readMsg(t testing.TB, c *websocket.Conn, timeout time.Duration) wsMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read WebSocket: %v", err)
	}
	var m wsMsg
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("message %s: %v", data, err)
	}
	return m
}

func subscribe(t testing.TB, c *websocket.Conn, cmd string) {
	t.Helper()
	if err := c.Write(context.Background(), websocket.MessageText, []byte(cmd)); err != nil {
		t.Fatalf("send %s: %v", cmd, err)
	}
	if m := readMsg(t, c, 10*time.Second); m.Type != "subscribed" {
		t.Fatalf("answer to %s = %+v, want subscribed", cmd, m)
	}
}

func TestWebSocketRefusals(t *testing.T) {
	b := brokertest.Start(t)
	cfg := testConfig(b)
	cfg.WebSocket.AllowedOrigins = []string{"dash.example.com"}
	r := start(t, cfg)
	u := wsURL(r)
	host := strings.TrimPrefix(r.url, "http://")
	foreign := hs256Token(t, "another-secret-that-is-long-enough-!!")

	cases := []struct {
		name   string
		url    string
		token  string
		origin string
		protos []string // instead of monitor.v1 + bearer.token
		code   int
	}{
		{name: "no token", url: u, code: http.StatusUnauthorized},
		{name: "bad token", url: u, token: "not-a-jwt", code: http.StatusUnauthorized},
		{name: "token of another key", url: u, token: foreign, code: http.StatusUnauthorized},
		{name: "token in the query", url: u + "?access_token=" + r.token, code: http.StatusBadRequest},
		{name: "token in the query beside a good one", url: u + "?token=" + r.token, token: r.token, code: http.StatusBadRequest},
		{name: "JWT under another query name", url: u + "?x=" + r.token, token: r.token, code: http.StatusBadRequest},
		{name: "foreign origin", url: u, token: r.token, origin: "https://evil.example.net", code: http.StatusForbidden},
		{name: "no monitor.v1", url: u, protos: []string{"bearer." + r.token}, code: http.StatusBadRequest},
		{name: "token as Authorization only", url: u, protos: []string{"monitor.v1"}, code: http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			if tc.protos != nil {
				h.Set("Authorization", "Bearer "+r.token) // not how a WebSocket authenticates
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			protos := tc.protos
			if protos == nil {
				protos = []string{"monitor.v1"}
				if tc.token != "" {
					protos = append(protos, "bearer."+tc.token)
				}
			}
			c, resp, err := websocket.Dial(ctx, tc.url, &websocket.DialOptions{Subprotocols: protos, HTTPHeader: h})
			if err == nil {
				c.CloseNow()
				t.Fatal("the WebSocket was accepted")
			}
			if resp == nil || resp.StatusCode != tc.code {
				t.Fatalf("dial = %v (response %v), want HTTP %d", err, resp, tc.code)
			}
		})
	}

	for _, origin := range []string{"", "http://" + host, "https://dash.example.com"} {
		t.Run("accepted origin "+origin, func(t *testing.T) {
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			c, resp, err := dialWS(t, u, r.token, h, nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			if c.Subprotocol() != "monitor.v1" || strings.Contains(resp.Header.Get("Sec-WebSocket-Protocol"), "bearer") {
				t.Fatalf("subprotocol %q, header %q: want monitor.v1 only, the token never echoed", c.Subprotocol(), resp.Header.Get("Sec-WebSocket-Protocol"))
			}
			if m := readMsg(t, c, 10*time.Second); m.Type != "hello" {
				t.Fatalf("first message = %+v, want hello", m)
			}
		})
	}

	t.Run("read limit", func(t *testing.T) {
		c, _, err := dialWS(t, u, r.token, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		readMsg(t, c, 10*time.Second) // hello
		big := `{"type":"subscribe","hosts":["` + strings.Repeat("a", cfg.WebSocket.ReadLimit) + `"]}`
		_ = c.Write(context.Background(), websocket.MessageText, []byte(big))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err = c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
			t.Fatalf("after an oversize message: %v, want close 1009 (message too big)", err)
		}
	})
}

// hs256Token is a well-formed access token signed with key.
func hs256Token(t *testing.T, key string) string {
	t.Helper()
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return strings.TrimRight(base64URL(b), "=")
	}
	now := time.Now().Unix()
	head := enc(map[string]string{"alg": "HS256", "typ": "JWT"})
	body := enc(map[string]any{"iss": "monitor", "aud": "monitor-api", "sub": "admin", "role": "admin", "use": "access", "iat": now, "exp": now + 600})
	return head + "." + body + "." + hmacSHA256(key, head+"."+body)
}

// TestWebSocketGetsStoredSampleWithin1s runs a real broker with embedded
// storage: a snapshot an agent stream sends is on the WebSocket within a
// second of the broker acknowledging it (acknowledged = stored).
func TestWebSocketGetsStoredSampleWithin1s(t *testing.T) {
	bcfg := broker.DefaultConfig()
	bcfg.NodeID = "ws-test"
	bcfg.GRPCListen, bcfg.HTTPListen, bcfg.Raft.Listen, bcfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	br, err := broker.New(context.Background(), bcfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	bctx, stopBroker := context.WithCancel(context.Background())
	bdone := make(chan error, 1)
	go func() { bdone <- br.Run(bctx) }()
	defer func() {
		stopBroker()
		if err := <-bdone; err != nil {
			t.Errorf("broker: %v", err)
		}
	}()

	cfg := testConfig()
	cfg.Brokers = []string{br.GRPCAddr()}
	r := start(t, cfg)
	defer func() { _ = r.stop(t) }()
	ws, _, err := dialWS(t, wsURL(r), r.token, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	readMsg(t, ws, 10*time.Second) // hello
	subscribe(t, ws, `{"type":"subscribe","hosts":["ws-host"],"metrics":["cpu."],"kinds":["sample"]}`)

	conn, err := grpc.NewClient(br.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := monitorpb.NewMonitorServiceClient(conn).Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: "ws-host"}}}); err != nil {
		t.Fatal(err)
	}
	// The live feed must be subscribed before the sample is stored, or it
	// would arrive through the catch-up instead.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, v := get(t, r.url+"/api/v1/stats", r.token)
		if v["live"].(map[string]any)["connected"] == 1.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the live feed never connected to the broker")
		}
		time.Sleep(10 * time.Millisecond)
	}

	for seq := uint64(1); seq <= 3; seq++ {
		ts := time.Now().Unix() + int64(seq) // unique per snapshot
		batch := &monitorpb.Batch{Seq: seq, Snapshots: []*monitorpb.Snapshot{{HostId: "ws-host", Timestamp: ts, Metrics: []*monitorpb.Metric{
			{Name: "cpu.usage_percent", Value: float64(seq), Unit: "%"},
			{Name: "mem.used_percent", Value: 50, Unit: "%"},
		}}}}
		if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: batch}}); err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if ack := resp.GetAck(); ack != nil && ack.GetAckedSeq() >= seq {
				if ack.GetStoredSnapshots() != 1 {
					t.Fatalf("ack = %v", ack)
				}
				break
			}
		}
		stored := time.Now()
		m := readMsg(t, ws, time.Second)
		took := time.Since(stored)
		if m.Type != "sample" || m.Host != "ws-host" || m.TS != ts || len(m.Samples) != 1 || m.Samples[0].Series != "cpu.usage_percent" || m.Samples[0].Value != float64(seq) {
			t.Fatalf("message = %+v, want the cpu sample at %d only", m, ts)
		}
		t.Logf("snapshot %d on the WebSocket %s after its ack", seq, took)
	}
}

// smallReadBuffer dials with a 4 KiB receive buffer (no autotuning), so a
// client that does not read fills its socket, then the server's, quickly.
func smallReadBuffer() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestSlowWebSocketClientDoesNotDelayOthers: one client never reads while
// snapshots stream in; the others get every snapshot (their latency is
// logged), the slow one, when it finally reads, finds a gap marker and the
// latest values.
func TestSlowWebSocketClientDoesNotDelayOthers(t *testing.T) {
	b := brokertest.Start(t)
	cfg := testConfig(b)
	cfg.WebSocket.QueueSize = 8
	r := start(t, cfg)

	slow, _, err := dialWS(t, wsURL(r), r.token, nil, smallReadBuffer())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	// Samples only: the engines' events (Top-K of 400 metrics, anomalies)
	// would otherwise share the queues this test measures.
	onlySamples := `{"type":"subscribe","kinds":["sample"]}`
	if err := slow.Write(context.Background(), websocket.MessageText, []byte(onlySamples)); err != nil {
		t.Fatal(err)
	}
	const fastN = 3
	var fast []*websocket.Conn
	for range fastN {
		c, _, err := dialWS(t, wsURL(r), r.token, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		readMsg(t, c, 10*time.Second) // hello
		subscribe(t, c, onlySamples)
		fast = append(fast, c)
	}
	for deadline := time.Now().Add(10 * time.Second); b.Subscribers() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the live feed never subscribed")
		}
	}

	// 300 snapshots of 400 series (~20 KB each as JSON): more than the slow
	// client's socket buffers and queue hold. Published in lockstep with the
	// fast clients (the next once each has the last), so they never fall
	// behind themselves: their progress is proof the slow one holds nothing
	// up. The first value is the publish time in ns, for their latency.
	const n, series = 300, 400
	var wg sync.WaitGroup
	lat := make([][]time.Duration, fastN)
	got := make(chan error, fastN)
	for i, c := range fast {
		wg.Go(func() {
			for seen := 0; seen < n; {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, data, err := c.Read(ctx)
				cancel()
				if err != nil {
					got <- fmt.Errorf("fast client %d after %d snapshots: %w", i, seen, err)
					return
				}
				var m wsMsg
				if err := json.Unmarshal(data, &m); err != nil {
					got <- fmt.Errorf("fast client %d: unexpected message %.200s", i, data)
					return
				}
				if m.Type == "topk" || m.Type == "anomaly" || m.Type == "alert" {
					continue // the engines' events ride along
				}
				if m.Type != "sample" || len(m.Samples) != series {
					got <- fmt.Errorf("fast client %d: unexpected message %.200s", i, data)
					return
				}
				lat[i] = append(lat[i], time.Since(time.Unix(0, int64(m.Samples[0].Value))))
				seen++
				got <- nil
			}
		})
	}
	for i := range n {
		s := &monitorpb.Snapshot{HostId: "web-1", Timestamp: int64(1000 + i)}
		now := float64(time.Now().UnixNano())
		for j := range series {
			v := now
			if j > 0 {
				v = float64(i)
			}
			s.Metrics = append(s.Metrics, &monitorpb.Metric{Name: fmt.Sprintf("cpu.core_%03d", j), Value: v, Unit: "%"})
		}
		b.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{s}})
		for range fastN {
			if err := <-got; err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	t.Logf("fast clients: %d snapshots each; latency p50 %s p99 %s max %s", n, all[len(all)/2], all[len(all)*99/100], all[len(all)-1])

	// Now the slow client reads: somewhere a gap marker, and the last
	// message carries the last values.
	gap := false
	var last wsMsg
	for {
		m := readMsg(t, slow, 10*time.Second)
		if m.Type == "gap" {
			gap = true
			if m.Missed == 0 {
				t.Fatalf("gap marker %+v counts nothing", m)
			}
		}
		if m.Type == "sample" {
			last = m
			if m.TS == int64(1000+n-1) {
				break
			}
		}
	}
	if !gap {
		t.Fatal("the slow client got every message: no gap marker (buffers too large for the test?)")
	}
	if len(last.Samples) != series || last.Samples[1].Value != float64(n-1) {
		t.Fatalf("last message for the slow client has %d samples, value %v; want the latest %d series", len(last.Samples), last.Samples[1].Value, series)
	}
	_, v := get(t, r.url+"/api/v1/stats", r.token)
	if p := v["push"].(map[string]any); p["folded"] == 0.0 || p["gaps"] == 0.0 {
		t.Fatalf("push stats = %v, want folded messages and a gap", p)
	}
}

// BenchmarkPush1000WebSockets measures publish → receive latency to 1,000
// WebSocket clients of one server: each iteration publishes one snapshot on
// a stand-in broker's stream and waits until every client received it.
// Reports p50 and p99 over every (snapshot, client) pair.
func BenchmarkPush1000WebSockets(b *testing.B) {
	const clients = 1000
	bk := brokertest.Start(b)
	cfg := testConfig(bk)
	cfg.WebSocket.MaxClients = clients
	srv, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	r := &running{url: "http://" + srv.Addr()}
	token := login(b, r.url, "viewer")

	var (
		mu   sync.Mutex
		lats []time.Duration
		wg   sync.WaitGroup
	)
	recv := make(chan struct{}, clients)
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		c, _, err := dialWS(b, wsURL(r), token, nil, nil)
		if err != nil {
			b.Fatalf("client %d: %v", i, err)
		}
		c.SetReadLimit(1 << 20)
		readMsg(b, c, 10*time.Second) // hello
		conns[i] = c
	}
	rctx, stopReaders := context.WithCancel(context.Background())
	for _, c := range conns {
		wg.Go(func() {
			for {
				_, data, err := c.Read(rctx)
				if err != nil {
					return
				}
				var m wsMsg
				if json.Unmarshal(data, &m) != nil || m.Type != "sample" {
					continue
				}
				d := time.Since(time.Unix(0, int64(m.Samples[0].Value)))
				mu.Lock()
				lats = append(lats, d)
				mu.Unlock()
				recv <- struct{}{}
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); bk.Subscribers() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the live feed never subscribed")
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		bk.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{{HostId: "web-1", Timestamp: int64(1000 + i), Metrics: []*monitorpb.Metric{
			{Name: "cpu.usage_percent", Value: float64(time.Now().UnixNano()), Unit: "%"},
			{Name: "mem.used_percent", Value: 50, Unit: "%"},
		}}}})
		for range clients {
			<-recv
		}
	}
	b.StopTimer()
	stopReaders()
	for _, c := range conns {
		c.CloseNow()
	}
	wg.Wait()
	slices.Sort(lats)
	if len(lats) > 0 {
		b.ReportMetric(float64(lats[len(lats)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lats[int(math.Min(float64(len(lats)-1), float64(len(lats))*0.99))].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(clients), "clients")
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func hmacSHA256(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return base64URL(m.Sum(nil))
}
