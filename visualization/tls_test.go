package visualization_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

const clusterSecret = "cluster-secret-of-the-https-test"

// httpsClient trusts pki's CA and, with cert, presents it.
func httpsClient(t *testing.T, pki *testpki.PKI, cert *testpki.Pair) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool}
	if cert != nil {
		pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// startServer runs a server built from cfg until the test ends.
func startServer(t *testing.T, cfg visualization.Config) (*visualization.Server, *running) {
	t.Helper()
	srv, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{url: strings.TrimSuffix(srv.URL(), "/"), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop(t) })
	return srv, r
}

// loginWith logs in over client and returns the status and access token.
func loginWith(t *testing.T, client *http.Client, base string) (int, string) {
	t.Helper()
	resp, err := client.Post(base+"/api/v1/auth/login", "application/json",
		strings.NewReader(`{"username":"viewer","password":"`+testPassword+`"}`))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.AccessToken
}

func getWith(t *testing.T, client *http.Client, u, token string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.NewDecoder(resp.Body).Decode(&v)
	}
	return resp, v
}

// TestHTTPSAndBrokerTLS: the server serves HTTPS with HSTS, its page,
// logins, the API and wss://; it reads from and streams from a broker
// that requires mTLS and the cluster secret on every call; QUIC takes the
// HTTPS certificate; plaintext HTTP to the port gets no page and no token.
func TestHTTPSAndBrokerTLS(t *testing.T) {
	pki := testpki.New(t)
	bsrv, err := pki.ServerTLS(t, "broker", tlsconfig.ClientAuthRequire).Server()
	if err != nil {
		t.Fatal(err)
	}
	b := brokertest.StartWith(t, brokertest.Options{TLS: bsrv, RequireSecret: clusterSecret})
	b.SetHosts(&monitorpb.HostStatus{Info: &monitorpb.HostInfo{HostId: "tls-host"}})
	vizCert := pki.Client(t, "viz", "visualization")

	cfg := testConfig(b)
	cfg.TLS = pki.ServerTLS(t, "https", tlsconfig.ClientAuthNone)
	cfg.BrokerTLS = pki.ClientTLS(&vizCert)
	cfg.ClusterSecret = clusterSecret
	srv, r := startServer(t, cfg)
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL() = %s, want https://", srv.URL())
	}
	client := httpsClient(t, pki, nil)

	resp, _ := getWith(t, client, r.url+"/", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / over HTTPS = %s", resp.Status)
	}
	if h := resp.Header.Get("Strict-Transport-Security"); h != "max-age=31536000" {
		t.Fatalf("Strict-Transport-Security = %q, want max-age=31536000", h)
	}
	code, token := loginWith(t, client, r.url)
	if code != http.StatusOK || token == "" {
		t.Fatalf("login over HTTPS = %d", code)
	}
	resp, v := getWith(t, client, r.url+"/api/v1/hosts", token)
	if resp.StatusCode != http.StatusOK || !strings.Contains(toJSON(v), "tls-host") {
		t.Fatalf("hosts through a broker over mTLS = %s %v", resp.Status, v)
	}
	// The live feed's stream to the broker, over mTLS with the secret.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if srv.Stats().Live.Connected == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live feed never connected to the TLS broker: %+v", srv.Stats().Live)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The membership watcher's Watch stream too (the stand-in answers it
	// Unimplemented, after the credentials were checked).
	for len(b.AuthOf(monitorpb.ClusterService_Watch_FullMethodName)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the membership watcher never reached the TLS broker")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, a := range b.Auth() {
		if a != "Bearer "+clusterSecret {
			t.Fatalf("broker call %d carried authorization %q, want the cluster secret", i, a)
		}
	}

	// wss:// with the same client.
	ws, _, err := dialWS(t, "wss"+strings.TrimPrefix(r.url, "https")+"/api/v1/ws", token, nil, client)
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	if m := readMsg(t, ws, 10*time.Second); m.Type != "hello" {
		t.Fatalf("first wss message = %+v, want hello", m)
	}
	ws.CloseNow()

	// QUIC uses the HTTPS certificate: no self-signed hashes to pin.
	resp, v = getWith(t, client, r.url+"/api/v1/quic", token)
	if resp.StatusCode != http.StatusOK || v["certificate"] != "configured" {
		t.Fatalf("GET /api/v1/quic = %s %v, want the configured certificate", resp.Status, v)
	}

	// Plain HTTP to the HTTPS port: no page, no token.
	plain := &http.Client{Timeout: 10 * time.Second}
	presp, err := plain.Post("http://"+srv.Addr()+"/api/v1/auth/login", "application/json",
		strings.NewReader(`{"username":"viewer","password":"`+testPassword+`"}`))
	if err == nil {
		body, _ := io.ReadAll(presp.Body)
		presp.Body.Close()
		if presp.StatusCode == http.StatusOK || strings.Contains(string(body), "access_token") {
			t.Fatalf("plaintext login on the HTTPS port = %s %s", presp.Status, body)
		}
	}
	// A client that does not trust the CA does not get through.
	if _, err := http.Get(r.url + "/"); err == nil {
		t.Fatal("GET over HTTPS without the CA succeeded")
	}
}

// TestHTTPSMutualTLS: with client_auth require, a client without a
// certificate is refused in the handshake, one with a certificate of the
// CA logs in.
func TestHTTPSMutualTLS(t *testing.T) {
	pki := testpki.New(t)
	cfg := testConfig()
	cfg.TLS = pki.ServerTLS(t, "https", tlsconfig.ClientAuthRequire)
	_, r := startServer(t, cfg)
	if _, err := httpsClient(t, pki, nil).Get(r.url + "/healthz"); err == nil {
		t.Fatal("a client without a certificate got an answer from an mTLS server")
	}
	other := testpki.New(t)
	stranger := other.Client(t, "stranger", "stranger")
	if _, err := httpsClient(t, pki, &stranger).Get(r.url + "/healthz"); err == nil {
		t.Fatal("a client with a certificate of another CA got an answer")
	}
	cert := pki.Client(t, "browser", "ann")
	if code, tok := loginWith(t, httpsClient(t, pki, &cert), r.url); code != http.StatusOK || tok == "" {
		t.Fatalf("login with a client certificate = %d", code)
	}
}

// TestConnectionLimits: connections over max_connections_per_ip and
// max_connections are closed at accept and counted (also in /metrics); a
// trusted proxy is not capped per address; a slot freed is usable again.
func TestConnectionLimits(t *testing.T) {
	cases := []struct {
		name          string
		max, perIP    int
		proxies       []string
		admitted      int // connections held open before the refused one
		refusedPerIP  uint64
		refusedMax    uint64
		metricsReason string
	}{
		{"per address", 100, 3, nil, 3, 1, 0, "max_connections_per_ip"},
		{"total", 16, 0, nil, 16, 0, 1, "max_connections"},
		{"trusted proxy not capped per address", 16, 3, []string{"127.0.0.1"}, 16, 0, 1, "max_connections"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxConnections, cfg.MaxConnectionsPerIP, cfg.TrustedProxies = tc.max, tc.perIP, tc.proxies
			cfg.MetricsListen = "127.0.0.1:0"
			srv, r := startServer(t, cfg)
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for range tc.admitted {
				c, err := net.Dial("tcp", srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
			}
			waitStats(t, srv, func(st visualization.Stats) bool { return st.HTTP.Open == tc.admitted })
			c, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("read on a connection over the limit = %v, want it closed by the server", err)
			}
			st := srv.Stats().HTTP
			if st.RefusedPerIP != tc.refusedPerIP || st.RefusedMax != tc.refusedMax {
				t.Fatalf("HTTP stats = %+v, want %d refused per address, %d refused at the total", st, tc.refusedPerIP, tc.refusedMax)
			}
			// Free a slot: the API answers again.
			held[0].Close()
			held = held[1:]
			waitStats(t, srv, func(st visualization.Stats) bool { return st.HTTP.Open == tc.admitted-1 })
			if code := login(t, r.url, "viewer"); code == "" {
				t.Fatal("no login after a slot was freed")
			}
			_, body := fetch(t, "http://"+srv.MetricsAddr()+"/metrics")
			want := `monitor_visualization_http_connections_refused_total{reason="` + tc.metricsReason + `"} 1`
			if !strings.Contains(body, want) {
				t.Fatalf("/metrics lacks %s", want)
			}
		})
	}
}

// TestLoginRefusalsCounted: a wrong password and a rate-limited login show
// in /api/v1/stats and /metrics.
func TestLoginRefusalsCounted(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.LoginBurst = 2
	cfg.Auth.LoginInterval = config.Duration(time.Hour)
	cfg.MetricsListen = "127.0.0.1:0"
	srv, r := startServer(t, cfg)
	for range 3 {
		resp, err := http.Post(r.url+"/api/v1/auth/login", "application/json", strings.NewReader(`{"username":"admin","password":"wrong"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	st := srv.Stats().Auth
	if st.BadCredentials != 2 || st.LimitedAddr+st.LimitedUser != 1 {
		t.Fatalf("auth stats = %+v, want 2 bad credentials and 1 rate-limited", st)
	}
	_, body := fetch(t, "http://"+srv.MetricsAddr()+"/metrics")
	if !strings.Contains(body, `monitor_visualization_login_refused_total{reason="bad_credentials"} 2`) {
		t.Fatalf("/metrics lacks the bad credentials count:\n%s", grepLines(body, "login_refused"))
	}
}

// TestSecretToLocalBrokerOnAllInterfaces: a broker listening on every
// interface reports "[::]:port" (standalone's with -grpc :9093); the
// server dials it at loopback, so the cluster secret goes in clear text
// to this machine only, and the reads work.
func TestSecretToLocalBrokerOnAllInterfaces(t *testing.T) {
	b := brokertest.StartWith(t, brokertest.Options{Listen: ":0", RequireSecret: clusterSecret})
	b.SetHosts(&monitorpb.HostStatus{Info: &monitorpb.HostInfo{HostId: "local-host"}})
	if !strings.HasPrefix(b.Addr, "[::]:") && !strings.HasPrefix(b.Addr, "0.0.0.0:") {
		t.Fatalf("the stand-in reports %s, not an unspecified address", b.Addr)
	}
	cfg := testConfig(b)
	cfg.ClusterSecret = clusterSecret
	_, r := startServer(t, cfg)
	tok := login(t, r.url, "viewer")
	code, v := get(t, r.url+"/api/v1/hosts", tok)
	if code != http.StatusOK || !strings.Contains(toJSON(v), "local-host") {
		t.Fatalf("hosts = %d %v", code, v)
	}
}

func waitStats(t *testing.T, srv *visualization.Server, cond func(visualization.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond(srv.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("stats never reached the expected state: %+v", srv.Stats().HTTP)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
