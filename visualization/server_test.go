package visualization_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/monitorhq/monitor/pkg/config"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Test accounts; bcrypt's minimum cost keeps logins fast.
const (
	testPassword = "test-password"
	testSecret   = "a-jwt-secret-for-tests-of-32-bytes-or-more"
)

var testHash = func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}()

func testConfig(brokers ...*brokertest.Broker) visualization.Config {
	cfg := visualization.DefaultConfig()
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.QUICListen = "127.0.0.1:0" // the QUIC channel runs in every test, on a free port
	cfg.Brokers = []string{"127.0.0.1:1"}
	if len(brokers) > 0 {
		cfg.Brokers = nil
	}
	for _, b := range brokers {
		cfg.Brokers = append(cfg.Brokers, b.Addr)
	}
	cfg.Auth.JWTSecret = testSecret
	cfg.Auth.Users = []visualization.UserConfig{
		{Username: "admin", PasswordHash: testHash, Role: "admin"},
		{Username: "viewer", PasswordHash: testHash, Role: "viewer"},
	}
	cfg.Auth.LoginBurst = 1000
	cfg.TopK.ShmName = "" // tests run in parallel processes; standalone's e2e test exports it
	return cfg
}

// login returns an access token of user.
func login(t testing.TB, base, user string) string {
	t.Helper()
	resp, err := http.Post(base+"/api/v1/auth/login", "application/json",
		strings.NewReader(`{"username":"`+user+`","password":"`+testPassword+`"}`))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		t.Fatalf("login as %s: %s, %v", user, resp.Status, err)
	}
	return body.AccessToken
}

// running is a server started by start; stop ends it once.
type running struct {
	url    string
	token  string // a viewer's access token
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels Run and returns its result, waiting at most 15 s.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	})
	return r.err
}

// start runs a server until the test ends.
func start(t *testing.T, cfg visualization.Config) *running {
	t.Helper()
	srv, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{url: "http://" + srv.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop(t) })
	r.token = login(t, r.url, "viewer")
	return r
}

func get(t *testing.T, u, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", u, err)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("GET %s: body %s is not JSON: %v", u, body, err)
	}
	return resp.StatusCode, v
}

func TestRunServesAndShutsDown(t *testing.T) {
	b := brokertest.Start(t)
	b.SetHosts(&monitorpb.HostStatus{Info: &monitorpb.HostInfo{HostId: "web-1"}})
	r := start(t, testConfig(b))
	u := r.url

	if code, v := get(t, u+"/healthz", ""); code != http.StatusOK || v["status"] != "ok" || v["brokers"] != 1.0 {
		t.Fatalf("healthz = %d %v, want 200 ok with 1 broker", code, v)
	}
	if code, v := get(t, u+"/api/v1/hosts", r.token); code != http.StatusOK || len(v["hosts"].([]any)) != 1 {
		t.Fatalf("hosts = %d %v, want web-1", code, v)
	}
	if code, _ := get(t, u+"/api/v1/hosts", ""); code != http.StatusUnauthorized {
		t.Fatalf("hosts without a token = %d, want 401", code)
	}
	if code, v := get(t, u+"/api/v1/stats", r.token); code != http.StatusOK || v["live"] == nil || v["push"] == nil {
		t.Fatalf("stats = %d %v", code, v)
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	if conn, err := net.Dial("tcp", u[len("http://"):]); err == nil {
		conn.Close()
		t.Fatal("the HTTP listener still accepts after Run returned")
	}
}

// TestShutdownDrainsInFlightRequests cancels Run while a request waits on a
// hung broker: the request still gets its answer (a timeout), then Run ends.
func TestShutdownDrainsInFlightRequests(t *testing.T) {
	b := brokertest.Start(t)
	b.Hang()
	cfg := testConfig(b)
	cfg.BrokerTimeout = config.Duration(500 * time.Millisecond)
	run := start(t, cfg)
	u := run.url

	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	// The live feed's Subscribe reaches the broker first (and hangs there).
	for deadline := time.Now().Add(5 * time.Second); b.Calls() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the live feed never subscribed")
		}
	}
	req, _ := http.NewRequest(http.MethodGet, u+"/api/v1/hosts", nil)
	req.Header.Set("Authorization", "Bearer "+run.token)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res <- result{code: resp.StatusCode}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for b.ListHostsCalls() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the broker")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := run.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	// Had the shutdown not drained it, the request would have failed with a
	// closed connection instead of getting the broker timeout.
	r := <-res
	if r.err != nil || r.code != http.StatusGatewayTimeout {
		t.Fatalf("in-flight request during shutdown = %d, %v; want 504 from the broker timeout", r.code, r.err)
	}
}

func TestNewFailsWhenTheAddressIsTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig()
	cfg.HTTPListen = ln.Addr().String()
	if _, err := visualization.New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "listen on http_listen") {
		t.Fatalf("New on a taken address = %v, want a listen error", err)
	}
}
