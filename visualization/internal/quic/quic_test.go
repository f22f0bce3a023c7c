package quic

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/webtransport-go"
	"go.uber.org/goleak"

	pq "github.com/monitorhq/monitor/pkg/quic"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/visualization/internal/push"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const goodToken = "good-token"

type fixture struct {
	srv   *Server
	hub   *push.Hub
	certs *pq.Certs
	addr  string
}

// start serves a hub on 127.0.0.1:0 until the test ends. Tokens: goodToken
// for an hour; "expiring" for 300 ms; anything else is refused.
func start(t *testing.T, tune ...func(*Options)) *fixture {
	t.Helper()
	certs, err := pq.NewSelfSigned(pq.SelfSignedOptions{Validity: 24 * time.Hour, RotateBefore: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	hub := push.New(push.Options{QueueSize: 64})
	opts := Options{
		Hub: hub, Addr: "127.0.0.1:0", Certs: certs, HTTPPort: func() string { return "8080" },
		AllowedOrigins: []string{"dash.example.com"},
		WriteTimeout:   5 * time.Second, ReadLimit: 16 << 10,
		Verify: func(token string) (Identity, error) {
			switch token {
			case goodToken:
				return Identity{User: "ann", Role: "viewer", Expires: time.Now().Add(time.Hour)}, nil
			case "expiring":
				return Identity{User: "ann", Role: "viewer", Expires: time.Now().Add(300 * time.Millisecond)}, nil
			}
			return Identity{}, errors.New("token is malformed")
		},
	}
	for _, f := range tune {
		f(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		hub.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &fixture{srv: srv, hub: hub, certs: certs, addr: srv.Addr().String()}
}

func dial(t *testing.T, f *fixture, opts pq.DialOptions) (*pq.Client, error) {
	t.Helper()
	if opts.CertHashes == nil {
		opts.CertHashes = f.certs.Hashes()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pq.Dial(ctx, f.addr, opts)
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

type msg struct {
	Seq     uint64          `json:"seq"`
	Type    string          `json:"type"`
	Host    string          `json:"host"`
	Missed  uint64          `json:"missed"`
	Data    json.RawMessage `json:"data"`
	Samples []struct {
		Series string  `json:"series"`
		Value  float64 `json:"value"`
	} `json:"samples"`
}

func recv(t *testing.T, c *pq.Client) (msg, pq.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.Recv(ctx)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	var out msg
	if err := json.Unmarshal(m.Data, &out); err != nil {
		t.Fatalf("message %s: %v", m.Data, err)
	}
	return out, m
}

// subscribed sends a subscribe command and waits for its answer.
func subscribed(t *testing.T, c *pq.Client, cmd map[string]any) {
	t.Helper()
	cmd["type"] = "subscribe"
	if err := c.Send(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	if m, _ := recv(t, c); m.Type != "subscribed" {
		t.Fatalf("answer = %+v, want subscribed", m)
	}
}

// TestNativeClientGetsSamplesAsDatagramsAndEventsOnTheStream: the same
// hello, subscribe and messages as the WebSocket; samples numbered.
func TestNativeClientGetsSamplesAsDatagramsAndEventsOnTheStream(t *testing.T) {
	f := start(t)
	c, err := dial(t, f, pq.DialOptions{Token: goodToken})
	if err != nil {
		t.Fatal(err)
	}
	var hello struct {
		Type, User, Transport string
	}
	if err := json.Unmarshal(c.Hello(), &hello); err != nil || hello.Type != "hello" || hello.User != "ann" || hello.Transport != "quic" {
		t.Fatalf("hello = %s", c.Hello())
	}
	subscribed(t, c, map[string]any{"hosts": []string{"web-*"}, "metrics": []string{"cpu."}})

	for i := 1; i <= 3; i++ {
		f.hub.Observe("db-1", nil, int64(i), []storage.Sample{{Series: "cpu.usage_percent", Value: 1}})
		f.hub.Observe("web-1", nil, int64(i), []storage.Sample{{Series: "cpu.usage_percent", Value: float64(i)}, {Series: "mem.used_percent", Value: 5}})
		m, raw := recv(t, c)
		if !raw.Datagram || raw.Seq != uint64(i) || m.Type != "sample" || m.Host != "web-1" || len(m.Samples) != 1 || m.Samples[0].Value != float64(i) {
			t.Fatalf("message %d = %+v (datagram %v seq %d), want web-1's cpu sample as datagram %d", i, m, raw.Datagram, raw.Seq, i)
		}
	}
	f.hub.Publish("alert", map[string]string{"rule": "hot"})
	if m, raw := recv(t, c); raw.Datagram || m.Type != "alert" || !strings.Contains(string(m.Data), "hot") {
		t.Fatalf("event = %+v (datagram %v), want the alert on the stream", m, raw.Datagram)
	}
	if st := f.srv.Stats(); st.Sessions != 1 || st.Datagrams != 3 || st.Active != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestNativeClientWithoutDatagramsGetsSamplesInOrderOnTheStream(t *testing.T) {
	f := start(t)
	c, err := dial(t, f, pq.DialOptions{Token: goodToken, NoDatagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 50; i++ {
		f.hub.Observe("web-1", nil, int64(i), []storage.Sample{{Series: "cpu.usage_percent", Value: float64(i)}})
	}
	for i := 1; i <= 50; i++ {
		m, raw := recv(t, c)
		if raw.Datagram || m.Type != "sample" || m.Samples[0].Value != float64(i) {
			t.Fatalf("message %d = %+v (datagram %v)", i, m, raw.Datagram)
		}
	}
}

// TestLargeSnapshotIsSplitOverDatagrams: a host with many series does not
// fit one datagram; every sample still arrives.
func TestLargeSnapshotIsSplitOverDatagrams(t *testing.T) {
	f := start(t)
	c, err := dial(t, f, pq.DialOptions{Token: goodToken})
	if err != nil {
		t.Fatal(err)
	}
	var samples []storage.Sample
	for i := range 200 {
		samples = append(samples, storage.Sample{Series: "disk.used_percent{mount=/srv/volume-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "}", Value: float64(i)})
	}
	f.hub.Observe("web-1", nil, 1, samples)
	got := 0
	for got < len(samples) {
		m, raw := recv(t, c)
		if !raw.Datagram || m.Type != "sample" {
			t.Fatalf("message = %+v", m)
		}
		got += len(m.Samples)
	}
	if got != len(samples) || f.srv.Stats().Split != 1 {
		t.Fatalf("%d samples arrived, stats %+v", got, f.srv.Stats())
	}
}

func TestNativeClientRefusedWithoutAGoodToken(t *testing.T) {
	f := start(t)
	for _, tc := range []struct{ name, token string }{{"missing", ""}, {"wrong", "not-a-jwt"}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dial(t, f, pq.DialOptions{Token: tc.token})
			var re *pq.RefusedError
			if !errors.As(err, &re) || re.Code != pq.CodeUnauthorized {
				t.Fatalf("Dial = %v, want a refusal with code %d", err, pq.CodeUnauthorized)
			}
		})
	}
	if st := f.srv.Stats(); st.Refused != 2 || st.Sessions != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestExpiredTokenClosesWith4001(t *testing.T) {
	f := start(t)
	c, err := dial(t, f, pq.DialOptions{Token: "expiring"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := c.Recv(ctx)
		if err == nil {
			continue
		}
		var re *pq.RefusedError
		if !errors.As(err, &re) || re.Code != pq.CodeTokenExpired {
			t.Fatalf("session ended with %v, want code %d", err, pq.CodeTokenExpired)
		}
		return
	}
}

// TestRotationKeepsConnectedClients: after a rotation the open session
// still receives; a client with the old pin is refused and one with the
// hashes fetched again connects.
func TestRotationKeepsConnectedClients(t *testing.T) {
	f := start(t)
	old := f.certs.Hashes()
	c, err := dial(t, f, pq.DialOptions{Token: goodToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.certs.Rotate(); err != nil {
		t.Fatal(err)
	}
	f.hub.Observe("web-1", nil, 1, []storage.Sample{{Series: "cpu.usage_percent", Value: 7}})
	if m, _ := recv(t, c); m.Type != "sample" || m.Samples[0].Value != 7 {
		t.Fatalf("after rotation the open session got %+v", m)
	}
	if _, err := dial(t, f, pq.DialOptions{Token: goodToken, CertHashes: old}); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("dial with the old pin = %v, want a pin mismatch", err)
	}
	if _, err := dial(t, f, pq.DialOptions{Token: goodToken, CertHashes: f.certs.Hashes()}); err != nil {
		t.Fatalf("dial with the new hashes: %v", err)
	}
}

// TestShutdownClosesWithGoingAway: closing the hub ends sessions with 1001.
func TestShutdownClosesWithGoingAway(t *testing.T) {
	f := start(t)
	c, err := dial(t, f, pq.DialOptions{Token: goodToken})
	if err != nil {
		t.Fatal(err)
	}
	f.hub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, err = c.Recv(ctx); err != nil {
			break
		}
	}
	var re *pq.RefusedError
	if !errors.As(err, &re) || re.Code != pq.CodeGoingAway {
		t.Fatalf("session ended with %v, want code %d", err, pq.CodeGoingAway)
	}
}

// wtDial opens a WebTransport session the way a browser does, with the
// Go implementation: pinned certificate, optional Origin.
func wtDial(t *testing.T, f *fixture, origin string) (*http.Response, *webtransport.Session, error) {
	t.Helper()
	d := &webtransport.Transport{TLSClientConfig: pq.PinnedTLSConfig(f.certs.Hashes(), pq.ALPNHTTP3), QUICConfig: pq.QUICConfig()}
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, sess, err := d.Dial(ctx, "https://"+f.addr+pq.WebTransportPath, h)
	if err == nil {
		t.Cleanup(func() { _ = sess.CloseWithError(0, "") })
	}
	return resp, sess, err
}

func TestWebTransportSession(t *testing.T) {
	f := start(t)
	_, sess, err := wtDial(t, f, "http://127.0.0.1:8080") // the UI on the HTTP port
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := sess.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(str, `{"type":"auth","token":"`+goodToken+`"}`+"\n"+`{"type":"subscribe","kinds":["sample","alert"]}`+"\n"); err != nil {
		t.Fatal(err)
	}
	fr := pq.NewFrameReader(str, 1<<20)
	for _, want := range []string{`"type":"hello"`, `"type":"subscribed"`} {
		line, err := fr.Next()
		if err != nil || !strings.Contains(string(line), want) {
			t.Fatalf("frame %s, %v; want %s", line, err, want)
		}
	}
	f.hub.Observe("web-1", nil, 5, []storage.Sample{{Series: "cpu.usage_percent", Value: 3}})
	d, err := sess.ReceiveDatagram(ctx)
	if err != nil || !strings.HasPrefix(string(d), `{"seq":1,"type":"sample","host":"web-1"`) {
		t.Fatalf("datagram %s, %v", d, err)
	}
	f.hub.Publish("alert", map[string]string{"rule": "hot"})
	if line, err := fr.Next(); err != nil || !strings.HasPrefix(string(line), `{"type":"alert"`) {
		t.Fatalf("frame %s, %v; want the alert", line, err)
	}
}

func TestWebTransportRefusals(t *testing.T) {
	f := start(t)
	t.Run("foreign origin", func(t *testing.T) {
		resp, _, err := wtDial(t, f, "https://evil.example.net")
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("dial = %v (%v), want 403", err, resp)
		}
	})
	t.Run("allowed origin", func(t *testing.T) {
		if _, _, err := wtDial(t, f, "https://dash.example.com"); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct{ name, first string }{
		{"missing token", `{"type":"auth"}`},
		{"wrong token", `{"type":"auth","token":"forged"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, sess, err := wtDial(t, f, "")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			str, err := sess.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(str, tc.first+"\n")
			line, _ := pq.NewFrameReader(str, 1<<20).Next()
			var refusal struct {
				Type  string `json:"type"`
				Error string `json:"error"`
				Code  uint64 `json:"code"`
			}
			if err := json.Unmarshal(line, &refusal); err != nil || refusal.Type != "error" || refusal.Code != pq.CodeUnauthorized || refusal.Error == "" {
				t.Fatalf("answer %s, want an error frame with code %d", line, pq.CodeUnauthorized)
			}
			// A client that does not close is closed with the code.
			_, err = sess.AcceptStream(ctx)
			var se *webtransport.SessionError
			if !errors.As(err, &se) || uint64(se.ErrorCode) != pq.CodeUnauthorized {
				t.Fatalf("session closed with %v, want code %d", err, pq.CodeUnauthorized)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	f := start(t)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://dash.example.com:8080/api/v1/quic", nil)
	f.srv.HandleInfo(rec, req)
	var info Info
	if err := json.Unmarshal(rec.Body.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(f.addr, ":")
	if info.URL != "https://dash.example.com:"+port+pq.WebTransportPath || info.Certificate != "self-signed" || len(info.CertHashes) != 1 ||
		info.CertHashes[0].Algorithm != "sha-256" || info.ALPN != "h3" || info.NativeALPN != pq.ALPNNative {
		t.Fatalf("info = %s", rec.Body.Bytes())
	}
	if !strings.Contains(rec.Body.String(), `"value":"`) {
		t.Fatalf("hash value is not base64: %s", rec.Body.String())
	}
}
