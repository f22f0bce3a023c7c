package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"golang.org/x/crypto/bcrypt"

	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization/internal/api"
	"github.com/monitorhq/monitor/visualization/internal/auth"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// now is the fixed clock of every test: 2023-11-14T22:13:20Z.
var now = time.Unix(1_700_000_000, 0)

const nowUnix = 1_700_000_000

func testConfig() api.Options {
	return api.Options{
		PullInterval:  2 * time.Second,
		OfflineAfter:  30 * time.Second,
		StaleAfter:    15 * time.Second,
		MaxRange:      7 * 24 * time.Hour,
		MaxPoints:     11000,
		HealthTimeout: 2 * time.Second,
		Now:           func() time.Time { return now },
	}
}

// Test users; their hashes use bcrypt's minimum cost to keep tests fast.
const (
	viewerPassword = "viewer-password"
	adminPassword  = "admin-password"
	testSecret     = "0123456789abcdef0123456789abcdef-test-secret"
)

var testUsers = func() []auth.User {
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		return string(h)
	}
	return []auth.User{
		{Username: "viewer", PasswordHash: hash(viewerPassword), Role: auth.RoleViewer},
		{Username: "admin", PasswordHash: hash(adminPassword), Role: auth.RoleAdmin},
	}
}()

func testAuth(t testing.TB, clock func() time.Time) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(auth.Config{
		Secret: []byte(testSecret), Issuer: "monitor", Audience: "monitor-api",
		AccessTTL: 15 * time.Minute, RefreshTTL: 12 * time.Hour, Users: testUsers, Now: clock,
	})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	return a
}

// token is the bearer token request adds when the request has none; serve
// sets it to a viewer's access token.
var token string

// serve starts the API over a broker client of brokers and returns its URL.
// Requests made with request carry a viewer token.
func serve(t *testing.T, cfg api.Options, brokers ...*brokertest.Broker) string {
	t.Helper()
	var addrs []string
	for _, b := range brokers {
		addrs = append(addrs, b.Addr)
	}
	c, err := brokerclient.New(addrs, 2*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("broker client: %v", err)
	}
	cfg.Brokers = c
	if cfg.Auth == nil {
		// Tokens are checked against the real clock: the fixed test clock
		// is for the API's own freshness computations.
		cfg.Auth = testAuth(t, nil)
	}
	if cfg.LoginLimiter == nil {
		cfg.LoginLimiter = auth.NewLimiter(1, 100, nil)
	}
	a, err := api.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	toks, err := cfg.Auth.Login("viewer", viewerPassword)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	token = toks.AccessToken
	srv := httptest.NewServer(a)
	t.Cleanup(func() {
		srv.Close()
		_ = c.Close()
		token = ""
	})
	return srv.URL
}

type response struct {
	code int
	ct   string
	body []byte
}

func request(t *testing.T, method, u string) response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	u := req.URL.String()
	method := req.Method
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s: %v", u, err)
	}
	return response{code: resp.StatusCode, ct: resp.Header.Get("Content-Type"), body: body}
}

// getJSON GETs u, checks the status code and the JSON content type, and
// decodes the body into a generic value.
func getJSON(t *testing.T, u string, wantCode int) map[string]any {
	t.Helper()
	r := request(t, http.MethodGet, u)
	return checkJSON(t, r, wantCode)
}

func checkJSON(t *testing.T, r response, wantCode int) map[string]any {
	t.Helper()
	if r.code != wantCode {
		t.Fatalf("status %d, want %d; body %s", r.code, wantCode, r.body)
	}
	if r.ct != "application/json" {
		t.Fatalf("content type %q, want application/json; body %s", r.ct, r.body)
	}
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body %s is not a JSON object: %v", r.body, err)
	}
	return v
}

// wantError checks an error body mentions every part of want.
func wantError(t *testing.T, v map[string]any, want ...string) {
	t.Helper()
	msg, ok := v["error"].(string)
	if !ok || msg == "" {
		t.Fatalf("body %v has no error message", v)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q does not mention %q", msg, w)
		}
	}
}

func TestHosts(t *testing.T) {
	b := brokertest.Start(t)
	b.SetHosts(
		&monitorpb.HostStatus{
			Info: &monitorpb.HostInfo{
				HostId: "web-1", Hostname: "web-1.example", Os: "linux", Platform: "debian", Kernel: "6.1.0",
				Arch: "amd64", CpuCount: 8, MemoryBytes: 16 << 30, Labels: map[string]string{"role": "web"},
				AgentVersion: "0.1.0", BootTime: nowUnix - 86400,
			},
			FirstSeen: nowUnix - 3600, LastRegistered: nowUnix - 600,
			LastHeartbeat: nowUnix - 30, LastData: nowUnix - 15,
			Online: false, // the broker's view is ignored: this server's threshold decides
		},
		&monitorpb.HostStatus{
			Info:          &monitorpb.HostInfo{HostId: "db-1"},
			LastHeartbeat: nowUnix - 31, LastData: nowUnix - 16,
			Online: true,
		},
		&monitorpb.HostStatus{Info: &monitorpb.HostInfo{HostId: "new-1"}},
		// Registered 5 s ago, no heartbeat yet: a registration is proof of life.
		&monitorpb.HostStatus{Info: &monitorpb.HostInfo{HostId: "just-registered"}, LastRegistered: nowUnix - 5},
	)
	u := serve(t, testConfig(), b)
	v := getJSON(t, u+"/api/v1/hosts", http.StatusOK)
	hosts := v["hosts"].([]any)
	if len(hosts) != 4 {
		t.Fatalf("got %d hosts, want 4: %v", len(hosts), v)
	}
	byID := map[string]map[string]any{}
	for _, h := range hosts {
		m := h.(map[string]any)
		byID[m["id"].(string)] = m
	}
	web := byID["web-1"]
	want := map[string]any{
		"id": "web-1", "hostname": "web-1.example", "os": "linux", "platform": "debian", "kernel": "6.1.0",
		"arch": "amd64", "cpu_count": 8.0, "memory_bytes": float64(16 << 30), "labels": map[string]any{"role": "web"},
		"agent_version": "0.1.0", "boot_time": float64(nowUnix - 86400), "first_seen": float64(nowUnix - 3600),
		"last_registered": float64(nowUnix - 600), "last_heartbeat": float64(nowUnix - 30),
		"last_data": float64(nowUnix - 15), "online": true, "fresh": true,
	}
	if !reflect.DeepEqual(web, want) {
		t.Fatalf("web-1 =\n%v\nwant\n%v", web, want)
	}
	if db := byID["db-1"]; db["online"] != false || db["fresh"] != false {
		t.Fatalf("db-1 heartbeat 31 s and data 16 s old: online=%v fresh=%v, want false, false", db["online"], db["fresh"])
	}
	if jr := byID["just-registered"]; jr["online"] != true {
		t.Fatalf("host registered 5 s ago without a heartbeat yet: online=%v, want true", jr["online"])
	}
	fresh := byID["new-1"]
	if fresh["online"] != false || fresh["fresh"] != false || fresh["last_data"] != 0.0 {
		t.Fatalf("never-seen host = %v, want offline, not fresh, last_data 0", fresh)
	}
	if labels, ok := fresh["labels"].(map[string]any); !ok || len(labels) != 0 {
		t.Fatalf("labels of a host without labels = %v, want {}", fresh["labels"])
	}
}

func TestHostsEmpty(t *testing.T) {
	b := brokertest.Start(t)
	u := serve(t, testConfig(), b)
	r := request(t, http.MethodGet, u+"/api/v1/hosts")
	if got := strings.TrimSpace(string(r.body)); got != `{"hosts":[]}` {
		t.Fatalf("body %s, want {\"hosts\":[]}", got)
	}
}

func TestLatest(t *testing.T) {
	b := brokertest.Start(t)
	b.SetLatest(&monitorpb.Snapshot{
		HostId: "web-1", Timestamp: nowUnix - 5, Tags: map[string]string{"dc": "fra1"},
		Metrics: []*monitorpb.Metric{
			{Name: "cpu.usage_percent", Value: 12.5, Unit: "%"},
			{Name: "net.rx_bytes_per_sec", Value: 1e6, Unit: "bytes/s", Labels: map[string]string{"interface": "eth0"}},
		},
	})
	b.SetLatest(&monitorpb.Snapshot{HostId: "bare-1", Timestamp: 7, Metrics: []*monitorpb.Metric{{Name: "mem.used_percent", Value: 40}}})
	u := serve(t, testConfig(), b)

	v := getJSON(t, u+"/api/v1/hosts/web-1/latest", http.StatusOK)
	want := map[string]any{
		"host_id": "web-1", "timestamp": float64(nowUnix - 5), "tags": map[string]any{"dc": "fra1"},
		"metrics": []any{
			map[string]any{"name": "cpu.usage_percent", "labels": map[string]any{}, "value": 12.5, "unit": "%"},
			map[string]any{"name": "net.rx_bytes_per_sec", "labels": map[string]any{"interface": "eth0"}, "value": 1e6, "unit": "bytes/s"},
		},
	}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("latest =\n%v\nwant\n%v", v, want)
	}
	if v := getJSON(t, u+"/api/v1/hosts/bare-1/latest", http.StatusOK); !reflect.DeepEqual(v["tags"], map[string]any{}) {
		t.Fatalf("tags of a snapshot without tags = %v, want {}", v["tags"])
	}

	wantError(t, getJSON(t, u+"/api/v1/hosts/ghost-1/latest", http.StatusNotFound), `"ghost-1" has no stored data`)
	wantError(t, getJSON(t, u+"/api/v1/hosts/-bad/latest", http.StatusBadRequest), "host id", "-bad")
	wantError(t, getJSON(t, u+"/api/v1/hosts/a%3Ab/latest", http.StatusBadRequest), "host id", "a:b")
	if n := b.Calls(); n != 3 {
		t.Fatalf("broker calls = %d, want 3 (invalid ids never reach it)", n)
	}
}

// series returns a series with a point every 10 s over [from, to].
func series(name string, labels map[string]string, from, to int64) *monitorpb.Series {
	s := &monitorpb.Series{Name: name, Labels: labels, Unit: "%"}
	for ts := from; ts <= to; ts += 10 {
		s.Points = append(s.Points, &monitorpb.Point{Timestamp: ts, Value: float64(ts-from) / 10})
	}
	return s
}

func TestMetrics(t *testing.T) {
	b := brokertest.Start(t)
	b.SetSeries("web-1",
		series("cpu.usage_percent", nil, nowUnix-7200, nowUnix),
		series("net.rx_bytes_per_sec", map[string]string{"interface": "eth0"}, nowUnix-60, nowUnix),
		series("net.rx_bytes_per_sec", map[string]string{"interface": "eth1"}, nowUnix-60, nowUnix),
		series("mem.used_percent", nil, nowUnix-60, nowUnix),
	)
	u := serve(t, testConfig(), b)
	base := u + "/api/v1/hosts/web-1/metrics"

	t.Run("explicit range and step", func(t *testing.T) {
		q := url.Values{"names": {"cpu.usage_percent"}, "from": {"1699999980"}, "to": {"1700000000"}, "step": {"10"}}
		r := request(t, http.MethodGet, base+"?"+q.Encode())
		checkJSON(t, r, http.StatusOK)
		want := `{"host_id":"web-1","from":1699999980,"to":1700000000,"step":10,"series":[{"name":"cpu.usage_percent","labels":{},"unit":"%","points":[[1699999980,718],[1699999990,719],[1700000000,720]]}]}`
		if got := strings.TrimSpace(string(r.body)); got != want {
			t.Fatalf("body\n%s\nwant\n%s", got, want)
		}
		q2 := b.LastQuery()
		if q2.GetFrom() != 1699999980 || q2.GetTo() != nowUnix || q2.GetStep() != 10 || strings.Join(q2.GetNames(), "|") != "cpu.usage_percent" {
			t.Fatalf("broker got %v", q2)
		}
	})

	t.Run("defaults: the last hour, raw samples, every series", func(t *testing.T) {
		v := getJSON(t, base, http.StatusOK)
		if v["from"] != float64(nowUnix-3600) || v["to"] != float64(nowUnix) || v["step"] != 0.0 {
			t.Fatalf("from/to/step = %v/%v/%v, want now-1h/now/0", v["from"], v["to"], v["step"])
		}
		if n := len(v["series"].([]any)); n != 4 {
			t.Fatalf("got %d series, want all 4", n)
		}
		cpu := v["series"].([]any)[0].(map[string]any)
		if n := len(cpu["points"].([]any)); n != 361 {
			t.Fatalf("cpu points in the last hour = %d, want 361", n)
		}
		if q := b.LastQuery(); len(q.GetNames()) != 0 {
			t.Fatalf("names sent = %v, want none (every series)", q.GetNames())
		}
	})

	t.Run("RFC 3339 times, duration step, label selectors with commas", func(t *testing.T) {
		q := url.Values{
			"names": {"net.rx_bytes_per_sec{interface=eth0},mem.*", "mem.used_percent"},
			"from":  {"2023-11-14T22:12:20Z"},
			"to":    {"2023-11-14T23:13:20+01:00"},
			"step":  {"1m"},
		}
		v := getJSON(t, base+"?"+q.Encode(), http.StatusOK)
		if v["from"] != float64(nowUnix-60) || v["to"] != float64(nowUnix) || v["step"] != 60.0 {
			t.Fatalf("from/to/step = %v/%v/%v", v["from"], v["to"], v["step"])
		}
		got := b.LastQuery().GetNames()
		if want := []string{"net.rx_bytes_per_sec{interface=eth0}", "mem.*", "mem.used_percent"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("names sent = %q, want %q", got, want)
		}
		var got2 []string
		for _, s := range v["series"].([]any) {
			m := s.(map[string]any)
			key := m["name"].(string)
			if iface, ok := m["labels"].(map[string]any)["interface"].(string); ok {
				key += "{interface=" + iface + "}"
			}
			got2 = append(got2, key)
		}
		if want := []string{"net.rx_bytes_per_sec{interface=eth0}", "mem.used_percent"}; !reflect.DeepEqual(got2, want) {
			t.Fatalf("series = %q, want %q", got2, want)
		}
	})

	t.Run("only from given", func(t *testing.T) {
		v := getJSON(t, base+"?from=1699990000", http.StatusOK)
		if v["to"] != float64(nowUnix) {
			t.Fatalf("to = %v, want now", v["to"])
		}
	})

	t.Run("a long range without step gets the smallest step that fits", func(t *testing.T) {
		q := url.Values{"from": {"1699913600"}, "to": {"1700000000"}} // one day
		v := getJSON(t, base+"?"+q.Encode(), http.StatusOK)
		// ceil(86400 / 10999) = 8 s gives ceil(86400/8)+1 = 10801 points.
		if v["step"] != 8.0 {
			t.Fatalf("step = %v, want 8", v["step"])
		}
	})

	t.Run("a step longer than the range", func(t *testing.T) {
		v := getJSON(t, base+"?step=9223372036854775807", http.StatusOK)
		if v["step"] != float64(9223372036854775807) {
			t.Fatalf("step = %v", v["step"])
		}
		if q := b.LastQuery(); q.GetStep() != 9223372036854775807 {
			t.Fatalf("broker got step %d", q.GetStep())
		}
	})

	t.Run("unknown host has no series", func(t *testing.T) {
		v := getJSON(t, u+"/api/v1/hosts/ghost-1/metrics", http.StatusOK)
		if s := v["series"].([]any); len(s) != 0 {
			t.Fatalf("series = %v, want []", s)
		}
	})
}

func TestMetricsBadParameters(t *testing.T) {
	b := brokertest.Start(t)
	u := serve(t, testConfig(), b)
	cases := []struct {
		name  string
		path  string
		query url.Values
		want  []string
	}{
		{"invalid host id", "/api/v1/hosts/_x/metrics", nil, []string{"host id", "_x"}},
		{"from not a time", "", url.Values{"from": {"yesterday"}}, []string{"from", `"yesterday" is not a time`, "Unix seconds", "RFC 3339"}},
		{"to not a time", "", url.Values{"to": {"2023-13-01"}}, []string{"to", "is not a time"}},
		{"negative from", "", url.Values{"from": {"-5"}}, []string{"from", "before 1970"}},
		{"from after to", "", url.Values{"from": {"1700000001"}, "to": {"1700000000"}}, []string{"from", "1700000001 is after to 1700000000"}},
		{"range over max_range", "", url.Values{"from": {"1699000000"}, "to": {"1700000000"}}, []string{"from", "longer than max_range 168h0m0s"}},
		{"negative step", "", url.Values{"step": {"-5"}}, []string{"step", "-5 is negative", "use 0 for raw samples"}},
		{"negative duration step", "", url.Values{"step": {"-1m"}}, []string{"step", "-1m0s is negative"}},
		{"step not a step", "", url.Values{"step": {"often"}}, []string{"step", `"often" is not a step`, "60s, 5m"}},
		{"fractional step", "", url.Values{"step": {"1500ms"}}, []string{"step", "1.5s is not a whole number of seconds"}},
		{"too many points", "", url.Values{"from": {"1699913600"}, "to": {"1700000000"}, "step": {"1s"}}, []string{"step", "86401 points", "max_points 11000", "use step=8"}},
		{"too many raw points", "", url.Values{"from": {"1699913600"}, "to": {"1700000000"}, "step": {"0"}}, []string{"step", "max_points 11000", "use step=8"}},
		{"bad metric name", "", url.Values{"names": {"9cpu"}}, []string{"names", `"9cpu"`, "prefix ending in *"}},
		{"unsorted labels", "", url.Values{"names": {"net.rx{b=1,a=2}"}}, []string{"names", "not sorted"}},
		{"star in the middle", "", url.Values{"names": {"net*rx*"}}, []string{"names", "only one trailing *"}},
		{"too many names", "", url.Values{"names": {strings.Repeat("a,", 65)}}, []string{"names", "65 selectors, the limit is 64"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = "/api/v1/hosts/web-1/metrics"
			}
			wantError(t, getJSON(t, u+path+"?"+tc.query.Encode(), http.StatusBadRequest), tc.want...)
		})
	}
	if n := b.Calls(); n != 0 {
		t.Fatalf("broker calls = %d, want 0: bad parameters are refused at the edge", n)
	}
}

func TestBrokerErrorsMapToHTTP(t *testing.T) {
	cases := []struct {
		err  error
		code int
		want string
	}{
		{status.Error(codes.InvalidArgument, "names: too broad"), http.StatusBadRequest, "names: too broad"},
		{status.Error(codes.NotFound, "host web-1 unknown"), http.StatusNotFound, "host web-1 unknown"},
		{status.Error(codes.Unavailable, "storage shard down"), http.StatusServiceUnavailable, "storage shard down"},
		{status.Error(codes.Internal, "disk on fire"), http.StatusBadGateway, "disk on fire"},
	}
	for _, tc := range cases {
		t.Run(status.Code(tc.err).String(), func(t *testing.T) {
			b := brokertest.Start(t)
			b.FailWith(tc.err)
			u := serve(t, testConfig(), b)
			for _, path := range []string{"/api/v1/hosts", "/api/v1/hosts/web-1/latest", "/api/v1/hosts/web-1/metrics"} {
				wantError(t, getJSON(t, u+path, tc.code), tc.want)
			}
		})
	}
}

func TestBrokerTimeoutIs504(t *testing.T) {
	b := brokertest.Start(t)
	b.Hang()
	var addrs = []string{b.Addr}
	c, err := brokerclient.New(addrs, 200*time.Millisecond, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := testConfig()
	cfg.Brokers, cfg.Auth, cfg.LoginLimiter = c, testAuth(t, nil), auth.NewLimiter(1, 1, nil)
	a, err := api.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	toks, err := cfg.Auth.Login("viewer", viewerPassword)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/hosts", nil)
	req.Header.Set("Authorization", "Bearer "+toks.AccessToken)
	a.ServeHTTP(rec, req)
	r := response{code: rec.Code, ct: rec.Header().Get("Content-Type"), body: rec.Body.Bytes()}
	wantError(t, checkJSON(t, r, http.StatusGatewayTimeout), "DeadlineExceeded", b.Addr)
}

func TestBrokerDown(t *testing.T) {
	b := brokertest.Start(t)
	u := serve(t, testConfig(), b)
	v := getJSON(t, u+"/healthz", http.StatusOK)
	if v["status"] != "ok" || v["brokers"] != 1.0 {
		t.Fatalf("healthz = %v, want ok with 1 broker", v)
	}
	b.Stop()
	for _, path := range []string{"/api/v1/hosts", "/api/v1/hosts/web-1/latest", "/api/v1/hosts/web-1/metrics"} {
		wantError(t, getJSON(t, u+path, http.StatusServiceUnavailable), "Unavailable", b.Addr)
	}
	v = getJSON(t, u+"/healthz", http.StatusServiceUnavailable)
	if v["status"] != "unavailable" || v["brokers"] != 0.0 {
		t.Fatalf("healthz = %v, want unavailable with 0 brokers", v)
	}
	wantError(t, v, "none of the 1 configured brokers is reachable")
}

func TestFailoverToSecondBroker(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	b2.SetHosts(&monitorpb.HostStatus{Info: &monitorpb.HostInfo{HostId: "web-1"}})
	b2.SetLatest(&monitorpb.Snapshot{HostId: "web-1", Timestamp: 1})
	u := serve(t, testConfig(), b1, b2)
	b1.Stop()

	v := getJSON(t, u+"/api/v1/hosts", http.StatusOK)
	if n := len(v["hosts"].([]any)); n != 1 {
		t.Fatalf("hosts = %v, want web-1 from the second broker", v)
	}
	getJSON(t, u+"/api/v1/hosts/web-1/latest", http.StatusOK)
	getJSON(t, u+"/api/v1/hosts/web-1/metrics", http.StatusOK)
	if v := getJSON(t, u+"/healthz", http.StatusOK); v["brokers"] != 1.0 {
		t.Fatalf("healthz = %v, want ok with 1 of 2 brokers", v)
	}
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	b := brokertest.Start(t)
	u := serve(t, testConfig(), b)
	r := request(t, http.MethodPost, u+"/api/v1/hosts")
	wantError(t, checkJSON(t, r, http.StatusMethodNotAllowed), "POST", "use GET")
	r = request(t, http.MethodDelete, u+"/api/v1/hosts/web-1/latest")
	wantError(t, checkJSON(t, r, http.StatusMethodNotAllowed), "DELETE")
	wantError(t, getJSON(t, u+"/api/v1/nothing", http.StatusNotFound), "no API route GET /api/v1/nothing")
	wantError(t, getJSON(t, u+"/api/v1/hosts/web-1/latest/extra", http.StatusNotFound), "no API route")
	if r := request(t, http.MethodHead, u+"/healthz"); r.code != http.StatusOK {
		t.Fatalf("HEAD /healthz = %d, want 200", r.code)
	}
}

func TestStatusPage(t *testing.T) {
	b := brokertest.Start(t)
	cfg := testConfig()
	cfg.PullInterval = 2500 * time.Millisecond
	u := serve(t, cfg, b)

	r := request(t, http.MethodGet, u+"/")
	if r.code != http.StatusOK || r.ct != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %d %q, want 200 text/html", r.code, r.ct)
	}
	page := string(r.body)
	for _, want := range []string{`data-refresh-ms="2500"`, `src="/ui/app.js"`, `href="/ui/style.css"`, "every 2.5s"} {
		if !strings.Contains(page, want) {
			t.Fatalf("page does not contain %q:\n%s", want, page)
		}
	}
	for _, external := range []string{"http://", "https://", "//cdn"} {
		if strings.Contains(page, external) {
			t.Fatalf("page refers to %q: it must be self-contained", external)
		}
	}
	js := request(t, http.MethodGet, u+"/ui/app.js")
	if js.code != http.StatusOK || !strings.HasPrefix(js.ct, "text/javascript") {
		t.Fatalf("GET /ui/app.js = %d %q", js.code, js.ct)
	}
	for _, want := range []string{"/api/v1/hosts", "cpu.usage_percent", "mem.used_percent", "refreshMs"} {
		if !strings.Contains(string(js.body), want) {
			t.Fatalf("app.js does not use %q", want)
		}
	}
	if css := request(t, http.MethodGet, u+"/ui/style.css"); css.code != http.StatusOK || !strings.HasPrefix(css.ct, "text/css") {
		t.Fatalf("GET /ui/style.css = %d %q", css.code, css.ct)
	}
	if r := request(t, http.MethodGet, u+"/nothing"); r.code != http.StatusNotFound {
		t.Fatalf("GET /nothing = %d, want 404", r.code)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	c, err := brokerclient.New([]string{"127.0.0.1:1"}, time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := testConfig()
	cfg.Brokers, cfg.Auth, cfg.LoginLimiter = c, testAuth(t, nil), auth.NewLimiter(1, 1, nil)
	cfg.MaxPoints = 1
	if _, err := api.New(cfg, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("api.New with max points 1: want an error")
	}
	cfg.MaxPoints = 100
	cfg.Auth = nil
	if _, err := api.New(cfg, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("api.New without an authenticator: want an error")
	}
	cfg.Auth = testAuth(t, nil)
	cfg.Routes = []api.Route{{Method: "GET", Path: "/other/x", Handler: func(http.ResponseWriter, *http.Request) {}}}
	if _, err := api.New(cfg, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("api.New with an extra route outside /api/v1/: want an error")
	}
	cfg.Routes = []api.Route{{Method: "GET", Path: "/api/v1/hosts", Handler: func(http.ResponseWriter, *http.Request) {}}}
	if _, err := api.New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "/api/v1/hosts") {
		t.Fatalf("api.New with an extra route that clashes with a built-in one = %v, want an error naming it", err)
	}
}
