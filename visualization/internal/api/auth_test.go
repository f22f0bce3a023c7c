package api_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization/internal/api"
	"github.com/monitorhq/monitor/visualization/internal/auth"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

// claims returns valid access claims for user with role; cases mutate them.
func claims(user string, role auth.Role) auth.Claims {
	now := time.Now()
	return auth.Claims{Role: role, Use: "access", RegisteredClaims: jwt.RegisteredClaims{
		Issuer: "monitor", Subject: user, Audience: jwt.ClaimStrings{"monitor-api"},
		ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute)), IssuedAt: jwt.NewNumericDate(now), ID: "t1",
	}}
}

func hs256(t *testing.T, c jwt.Claims, key string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handMade signs header.payload with HMAC-SHA256 of key whatever the
// header says: the HS/RS confusion attack's token.
func handMade(t *testing.T, header map[string]string, c jwt.Claims, key string) string {
	t.Helper()
	h, _ := json.Marshal(header)
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

// serveWithAdminRoute serves the API with an extra admin route and an
// extra viewer route (the engines' hook), each answering who called.
func serveWithAdminRoute(t *testing.T) string {
	t.Helper()
	b := brokertest.Start(t)
	cfg := testConfig()
	who := func(w http.ResponseWriter, r *http.Request) {
		id, _ := api.IdentityFrom(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]string{"user": id.User, "role": string(id.Role)})
	}
	cfg.Routes = []api.Route{
		{Method: "POST", Path: "/api/v1/admin/thing", Admin: true, Handler: who},
		{Method: "GET", Path: "/api/v1/admin/thing", Handler: who},
	}
	return serve(t, cfg, b)
}

func withToken(t *testing.T, method, u, tok string) response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return do(t, req)
}

func TestAuthRefusals(t *testing.T) {
	u := serveWithAdminRoute(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs256, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims("admin", auth.RoleAdmin)).SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims("admin", auth.RoleAdmin)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(c *auth.Claims)) string {
		c := claims("admin", auth.RoleAdmin)
		f(&c)
		return hs256(t, c, testSecret)
	}
	valid := mutate(func(*auth.Claims) {})
	parts := strings.Split(hs256(t, claims("viewer", auth.RoleViewer), testSecret), ".")
	adminPayload := strings.Split(valid, ".")[1]

	cases := []struct {
		name  string
		token string
		want  string // in the error
	}{
		{"no token", "", "no access token"},
		{"not a JWT", "hello", "invalid token"},
		{"alg none", none, "signing method none is invalid"},
		{"wrong key", hs256(t, claims("admin", auth.RoleAdmin), "another-secret-of-at-least-32-bytes!!"), "signature is invalid"},
		{"RS256 signed with an RSA key", rs256, "signing method RS256 is invalid"},
		{"RS256 header, HMAC with the HS secret", handMade(t, map[string]string{"alg": "RS256", "typ": "JWT"}, claims("admin", auth.RoleAdmin), testSecret), "signing method RS256 is invalid"},
		{"HS512 with the secret", func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, claims("admin", auth.RoleAdmin)).SignedString([]byte(testSecret))
			return s
		}(), "signing method HS512 is invalid"},
		{"expired", mutate(func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }), "token is expired"},
		{"missing exp", mutate(func(c *auth.Claims) { c.ExpiresAt = nil }), "exp claim is required"},
		{"missing iat", mutate(func(c *auth.Claims) { c.IssuedAt = nil }), "no iat"},
		{"iat in the future", mutate(func(c *auth.Claims) { c.IssuedAt = jwt.NewNumericDate(time.Now().Add(time.Hour)) }), "used before issued"},
		{"wrong aud", mutate(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"someone-else"} }), "audience"},
		{"missing aud", mutate(func(c *auth.Claims) { c.Audience = nil }), "aud claim is required"},
		{"wrong iss", mutate(func(c *auth.Claims) { c.Issuer = "evil" }), "issuer"},
		{"missing iss", mutate(func(c *auth.Claims) { c.Issuer = "" }), "iss claim is required"},
		{"unknown role", mutate(func(c *auth.Claims) { c.Role = "root" }), "neither viewer nor admin"},
		{"a refresh token as access token", mutate(func(c *auth.Claims) { c.Use = "refresh" }), `"refresh" token`},
		{"payload swapped to admin", parts[0] + "." + adminPayload + "." + parts[2], "signature is invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				r := withToken(t, m, u+"/api/v1/admin/thing", tc.token)
				v := checkJSON(t, r, http.StatusUnauthorized)
				wantError(t, v, tc.want)
			}
			for _, path := range []string{"/api/v1/hosts", "/api/v1/cluster", "/api/v1/hosts/web-1/latest", "/api/v1/hosts/web-1/metrics"} {
				checkJSON(t, withToken(t, http.MethodGet, u+path, tc.token), http.StatusUnauthorized)
			}
		})
	}

	t.Run("viewer on an admin route", func(t *testing.T) {
		r := withToken(t, http.MethodPost, u+"/api/v1/admin/thing", hs256(t, claims("viewer", auth.RoleViewer), testSecret))
		wantError(t, checkJSON(t, r, http.StatusForbidden), `"viewer" has role viewer`, "needs admin")
	})
	t.Run("the valid tokens pass", func(t *testing.T) {
		r := withToken(t, http.MethodPost, u+"/api/v1/admin/thing", valid)
		if r.code != http.StatusOK || !strings.Contains(string(r.body), `"role":"admin"`) {
			t.Fatalf("admin on the admin route = %d %s", r.code, r.body)
		}
		r = withToken(t, http.MethodGet, u+"/api/v1/admin/thing", hs256(t, claims("viewer", auth.RoleViewer), testSecret))
		if r.code != http.StatusOK || !strings.Contains(string(r.body), `"user":"viewer"`) {
			t.Fatalf("viewer on the viewer route = %d %s", r.code, r.body)
		}
	})
	t.Run("open routes", func(t *testing.T) {
		if r := withToken(t, http.MethodGet, u+"/healthz", ""); r.code != http.StatusOK {
			t.Fatalf("healthz without a token = %d", r.code)
		}
		if r := withToken(t, http.MethodGet, u+"/", ""); r.code != http.StatusOK {
			t.Fatalf("the page without a token = %d", r.code)
		}
	})
}

func postJSON(t *testing.T, u string, body any) response {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func TestLoginAndRefresh(t *testing.T) {
	u := serveWithAdminRoute(t)

	r := postJSON(t, u+"/api/v1/auth/login", map[string]string{"username": "admin", "password": adminPassword})
	checkJSON(t, r, http.StatusOK)
	var toks auth.Tokens
	if err := json.Unmarshal(r.body, &toks); err != nil {
		t.Fatal(err)
	}
	if toks.TokenType != "Bearer" || toks.Role != auth.RoleAdmin || toks.ExpiresIn != 900 || toks.AccessToken == "" || toks.RefreshToken == "" {
		t.Fatalf("login = %+v", toks)
	}
	if r := withToken(t, http.MethodPost, u+"/api/v1/admin/thing", toks.AccessToken); r.code != http.StatusOK {
		t.Fatalf("admin route with the login's token = %d %s", r.code, r.body)
	}
	// A refresh token is not an access token.
	checkJSON(t, withToken(t, http.MethodGet, u+"/api/v1/hosts", toks.RefreshToken), http.StatusUnauthorized)

	// Refresh rotates: the new pair works, the old refresh token is spent.
	r = postJSON(t, u+"/api/v1/auth/refresh", map[string]string{"refresh_token": toks.RefreshToken})
	checkJSON(t, r, http.StatusOK)
	var next auth.Tokens
	if err := json.Unmarshal(r.body, &next); err != nil {
		t.Fatal(err)
	}
	if next.RefreshToken == toks.RefreshToken || next.AccessToken == toks.AccessToken {
		t.Fatal("refresh returned the same tokens")
	}
	if r := withToken(t, http.MethodPost, u+"/api/v1/admin/thing", next.AccessToken); r.code != http.StatusOK {
		t.Fatalf("admin route with the refreshed token = %d %s", r.code, r.body)
	}
	r = postJSON(t, u+"/api/v1/auth/refresh", map[string]string{"refresh_token": toks.RefreshToken})
	wantError(t, checkJSON(t, r, http.StatusUnauthorized), "already used")
	r = postJSON(t, u+"/api/v1/auth/refresh", map[string]string{"refresh_token": next.AccessToken})
	wantError(t, checkJSON(t, r, http.StatusUnauthorized), `"access" token`)

	// Wrong password and unknown user get the same answer.
	for _, body := range []map[string]string{
		{"username": "admin", "password": "guess"},
		{"username": "nobody", "password": "guess"},
	} {
		r := postJSON(t, u+"/api/v1/auth/login", body)
		wantError(t, checkJSON(t, r, http.StatusUnauthorized), "wrong username or password")
	}
	r = postJSON(t, u+"/api/v1/auth/login", map[string]string{"user": "admin"})
	wantError(t, checkJSON(t, r, http.StatusBadRequest), "unknown field")
	r = request(t, http.MethodGet, u+"/api/v1/auth/login")
	checkJSON(t, r, http.StatusMethodNotAllowed)
}

func TestLoginIsRateLimited(t *testing.T) {
	b := brokertest.Start(t)
	cfg := testConfig()
	cfg.LoginLimiter = auth.NewLimiter(1.0/60, 3, nil) // 3 at once, then one a minute
	u := serve(t, cfg, b)
	for i := range 3 {
		r := postJSON(t, u+"/api/v1/auth/login", map[string]string{"username": "admin", "password": "wrong"})
		if r.code != http.StatusUnauthorized {
			t.Fatalf("attempt %d = %d, want 401", i+1, r.code)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, u+"/api/v1/auth/login", strings.NewReader(`{"username":"admin","password":"`+adminPassword+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("4th attempt = %d, want 429 (even with the right password)", resp.StatusCode)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("Retry-After = %q, want the seconds until the next attempt", ra)
	}
	// Refresh shares the bucket: no token guessing around the limit.
	r := postJSON(t, u+"/api/v1/auth/refresh", map[string]string{"refresh_token": "x"})
	checkJSON(t, r, http.StatusTooManyRequests)
}

func TestLimiterRefills(t *testing.T) {
	now := time.Unix(1000, 0)
	l := auth.NewLimiter(0.5, 2, func() time.Time { return now }) // a token every 2 s
	for i := range 2 {
		if ok, _ := l.Allow("10.0.0.1"); !ok {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
	}
	ok, wait := l.Allow("10.0.0.1")
	if ok || wait != 2*time.Second {
		t.Fatalf("3rd attempt = %v, wait %s; want refused, 2s", ok, wait)
	}
	if ok, _ := l.Allow("10.0.0.2"); !ok {
		t.Fatal("another address shares the first one's bucket")
	}
	now = now.Add(2 * time.Second)
	if ok, _ := l.Allow("10.0.0.1"); !ok {
		t.Fatal("no token after the refill interval")
	}
}

func TestCluster(t *testing.T) {
	b := brokertest.Start(t)
	u := serve(t, testConfig(), b)

	// Without a control plane (a single broker): the brokers followed, and why
	// the rest is missing.
	v := getJSON(t, u+"/api/v1/cluster", http.StatusOK)
	if v["control_plane"] != false || !strings.Contains(v["status_error"].(string), "without the Raft control plane") {
		t.Fatalf("cluster without control plane = %v", v)
	}
	if br := v["brokers"].([]any); len(br) != 1 || br[0].(map[string]any)["addr"] != b.Addr {
		t.Fatalf("brokers = %v, want %s", v["brokers"], b.Addr)
	}

	b.SetStatus(&monitorpb.StatusResponse{
		NodeId: "b1", LeaderId: "b2", LeaderGrpcAddr: "10.0.0.2:9093", Term: 7, CommitIndex: 40, AppliedIndex: 39,
		Members: []*monitorpb.MemberStatus{
			{Member: &monitorpb.Member{Id: "b1", GrpcAddr: "10.0.0.1:9093", RaftAddr: "10.0.0.1:9094"}, Voter: true},
			{Member: &monitorpb.Member{Id: "b2", GrpcAddr: "10.0.0.2:9093", RaftAddr: "10.0.0.2:9094"}, Voter: true, Leader: true},
		},
		RingVersion: 3,
		Shards: []*monitorpb.Shard{
			{Id: "s1", Addrs: []string{"10.0.1.1:6379"}},
			{Id: "s2", Addrs: []string{"10.0.1.2:6379", "10.0.1.3:6379"}, Draining: true, Tls: true},
		},
		ShardHosts: map[string]uint64{"s1": 120, "s2": 4},
		Migration:  &monitorpb.Migration{RingVersion: 3, FromVersion: 2, FromShards: []string{"s1", "s2"}, ToShards: []string{"s1"}, HostsTotal: 10, HostsMoved: 6},
	})
	v = getJSON(t, u+"/api/v1/cluster", http.StatusOK)
	if v["control_plane"] != true || v["leader"] != "b2" || v["leader_addr"] != "10.0.0.2:9093" || v["term"] != 7.0 || v["ring_version"] != 3.0 || v["node_id"] != "b1" {
		t.Fatalf("cluster = %v", v)
	}
	shards := v["shards"].([]any)
	s2 := shards[1].(map[string]any)
	if len(shards) != 2 || shards[0].(map[string]any)["hosts"] != 120.0 || s2["hosts"] != 4.0 || s2["draining"] != true || s2["tls"] != true {
		t.Fatalf("shards = %v", shards)
	}
	mig := v["migration"].(map[string]any)
	if mig["hosts_moved"] != 6.0 || mig["done"] != false || mig["from_version"] != 2.0 {
		t.Fatalf("migration = %v", mig)
	}
	if m := v["members"].([]any); len(m) != 2 || m[1].(map[string]any)["leader"] != true {
		t.Fatalf("members = %v", m)
	}
}
