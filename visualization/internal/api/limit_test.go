package api_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/visualization/internal/api"
	"github.com/monitorhq/monitor/visualization/internal/auth"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
)

// limitAPI is an API whose login limits are set by the caller; requests go
// straight to its handler with a chosen peer address.
func limitAPI(t *testing.T, mut func(*api.Options)) *api.API {
	t.Helper()
	c, err := brokerclient.New([]string{"127.0.0.1:1"}, time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cfg := testConfig()
	cfg.Brokers, cfg.Auth = c, testAuth(t, nil)
	cfg.LoginLimiter = auth.NewLimiter(1.0/3600, 1000, nil)
	mut(&cfg)
	a, err := api.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// login posts a login from peer (ip:port) with the X-Forwarded-For values
// given and returns the status code.
func login(a *api.API, peer, user, password string, xff ...string) int {
	req := httptest.NewRequest(http.MethodPost, "/api/v1/auth/login",
		strings.NewReader(`{"username":"`+user+`","password":"`+password+`"}`))
	req.RemoteAddr = peer
	for _, v := range xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	return rec.Code
}

// TestLoginLimitPerUser: failed logins of one user from many addresses
// empty that user's bucket — then even the right password gets 429 —
// while another user still logs in; each refusal is counted.
func TestLoginLimitPerUser(t *testing.T) {
	a := limitAPI(t, func(o *api.Options) { o.UserLimiter = auth.NewLimiter(1.0/3600, 3, nil) })
	for i, peer := range []string{"10.0.0.1:1000", "10.0.0.2:1000", "10.0.0.3:1000"} {
		if code := login(a, peer, "admin", "guess"); code != http.StatusUnauthorized {
			t.Fatalf("failed login %d = %d, want 401", i+1, code)
		}
	}
	if code := login(a, "10.0.0.4:1000", "admin", adminPassword); code != http.StatusTooManyRequests {
		t.Fatalf("login of a user with 3 failures from 3 addresses = %d, want 429", code)
	}
	if code := login(a, "10.0.0.4:1000", "viewer", viewerPassword); code != http.StatusOK {
		t.Fatalf("another user's login = %d, want 200", code)
	}
	// A successful login costs the user nothing.
	for i := range 5 {
		if code := login(a, "10.0.0.5:1000", "viewer", viewerPassword); code != http.StatusOK {
			t.Fatalf("good login %d = %d, want 200", i+1, code)
		}
	}
	st := a.AuthStats()
	if st.LimitedUser != 1 || st.BadCredentials != 3 || st.LimitedAddr != 0 {
		t.Fatalf("AuthStats = %+v, want 1 limited by user, 3 bad credentials", st)
	}
}

// TestLoginLimitIgnoresForwardedFor: without trusted proxies a client
// cannot get a fresh bucket per request by making up X-Forwarded-For.
func TestLoginLimitIgnoresForwardedFor(t *testing.T) {
	a := limitAPI(t, func(o *api.Options) { o.LoginLimiter = auth.NewLimiter(1.0/3600, 2, nil) })
	codes := []int{
		login(a, "192.0.2.7:5000", "admin", "guess", "198.51.100.1"),
		login(a, "192.0.2.7:5001", "admin", "guess", "198.51.100.2"),
		login(a, "192.0.2.7:5002", "admin", adminPassword, "198.51.100.3"),
	}
	if codes[0] != http.StatusUnauthorized || codes[1] != http.StatusUnauthorized || codes[2] != http.StatusTooManyRequests {
		t.Fatalf("logins with made-up X-Forwarded-For = %v, want 401 401 429", codes)
	}
	if st := a.AuthStats(); st.LimitedAddr != 1 {
		t.Fatalf("AuthStats = %+v, want 1 limited by address", st)
	}
}

// TestLoginLimitTrustedProxy: behind a trusted proxy the client named by
// X-Forwarded-For has its own bucket; the part of the header the client
// wrote itself (left of the proxy's entry) is not believed; a peer that is
// not a trusted proxy is keyed by its own address whatever it sends.
func TestLoginLimitTrustedProxy(t *testing.T) {
	a := limitAPI(t, func(o *api.Options) {
		o.LoginLimiter = auth.NewLimiter(1.0/3600, 1, nil)
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	})
	const proxy = "10.1.2.3:443"
	// Two clients behind the proxy: a bucket each.
	if code := login(a, proxy, "admin", "guess", "203.0.113.1"); code != http.StatusUnauthorized {
		t.Fatalf("first client = %d, want 401", code)
	}
	if code := login(a, proxy, "viewer", viewerPassword, "203.0.113.2"); code != http.StatusOK {
		t.Fatalf("second client behind the proxy = %d, want 200 (a bucket of its own)", code)
	}
	// The first client again, hiding behind a made-up left-most entry and
	// a second proxy hop: still its own (empty) bucket.
	if code := login(a, proxy, "viewer", viewerPassword, "198.51.100.9, 203.0.113.1", "10.1.9.9"); code != http.StatusTooManyRequests {
		t.Fatalf("first client with a forged X-Forwarded-For prefix = %d, want 429", code)
	}
	// Not from the proxy: the header is not believed.
	if code := login(a, "192.0.2.50:1", "viewer", viewerPassword, "203.0.113.77"); code != http.StatusOK {
		t.Fatalf("direct client = %d, want 200", code)
	}
	if code := login(a, "192.0.2.50:2", "viewer", viewerPassword, "203.0.113.78"); code != http.StatusTooManyRequests {
		t.Fatalf("direct client claiming another address = %d, want 429", code)
	}
}

func TestLimiterPeekTakesNothing(t *testing.T) {
	now := time.Unix(1000, 0)
	l := auth.NewLimiter(1.0/60, 1, func() time.Time { return now })
	for range 3 {
		if ok, _ := l.Peek("u"); !ok {
			t.Fatal("Peek took a token")
		}
	}
	if ok, _ := l.Allow("u"); !ok {
		t.Fatal("Allow refused the only token")
	}
	if ok, wait := l.Peek("u"); ok || wait != time.Minute {
		t.Fatalf("Peek on an empty bucket = %v, %s; want refused, 1m", ok, wait)
	}
}
