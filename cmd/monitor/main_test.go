package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const testAdminPassword = "standalone-admin-pw"

// syncBuffer is an io.Writer safe for the test and the server to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instance is a standalone started in this process.
type instance struct {
	ui, grpc string
	out      *syncBuffer
}

// startStandalone runs standalone with args (plus loopback ports, no QUIC
// and the test's admin password) until the test ends, and waits for its
// banner.
func startStandalone(t *testing.T, args ...string) instance {
	t.Helper()
	args = append([]string{"-data", t.TempDir(), "-http", "127.0.0.1:0", "-grpc", "127.0.0.1:0", "-quic", "",
		"-interval", "1s", "-admin-password", testAdminPassword, "-log-level", "warn"}, args...)
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- standalone(ctx, args, &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("standalone: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("standalone did not stop within 60s of its context ending")
		}
		if t.Failed() {
			t.Logf("standalone stderr:\n%s", errOut.String())
		}
	})
	re := regexp.MustCompile(`UI and API:\s+(\S+)/\n\s+broker gRPC:\s+(\S+)`)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return instance{ui: m[1], grpc: m[2], out: &out}
		}
		select {
		case err := <-done:
			t.Fatalf("standalone ended before its banner: %v\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner within 60s:\n%s\n%s", out.String(), errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// apiClient logs in as admin and returns a GET helper.
func apiClient(t *testing.T, hc *http.Client, base string) func(path string, v any) error {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": "admin", "password": testAdminPassword})
	resp, err := hc.Post(base+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || tok.AccessToken == "" {
		t.Fatalf("login: %s %v", resp.Status, err)
	}
	return func(path string, v any) error {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
		}
		return json.Unmarshal(b, v)
	}
}

// waitLocalHost polls the API until the local agent's host is listed with
// a latest snapshot: the agent wrote (with its token when auth is on) and
// the visualization server read through the broker (with the cluster
// secret).
func waitLocalHost(t *testing.T, get func(string, any) error) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		var hosts struct {
			Hosts []struct {
				ID string `json:"id"`
			} `json:"hosts"`
		}
		var latest struct {
			Metrics []struct {
				Name string `json:"name"`
			} `json:"metrics"`
		}
		last = get("/api/v1/hosts", &hosts)
		if last == nil && len(hosts.Hosts) == 1 {
			id := hosts.Hosts[0].ID
			if last = get("/api/v1/hosts/"+id+"/latest", &latest); last == nil && len(latest.Metrics) > 0 {
				return id
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the local host has no data within 60s: %v", last)
	return ""
}

func register(ctx context.Context, addr, host, token string) error {
	opts, err := grpcauth.Client{Token: token, AllowInsecureLoopback: true}.DialOptions()
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	_, err = monitorpb.NewMonitorServiceClient(cc).Register(ctx, &monitorpb.RegisterRequest{Host: &monitorpb.HostInfo{HostId: host, Hostname: host}})
	return err
}

// TestStandaloneAgentAuth: by default the broker requires agent tokens; the
// local agent has one and its data reaches the UI's API (the visualization
// server reading with the cluster secret); a client without a token, with
// a token of another secret or with the local agent's token for another
// host is refused, and reads without the cluster secret are too. A token
// under $MONITOR_AGENT_SECRET is accepted.
func TestStandaloneAgentAuth(t *testing.T) {
	const secret = "standalone-agent-secret-0123456789"
	t.Setenv("MONITOR_AGENT_SECRET", secret)
	in := startStandalone(t)
	if !strings.Contains(in.out.String(), "token required") {
		t.Fatalf("banner does not say agents need a token:\n%s", in.out.String())
	}
	if strings.Contains(in.out.String(), secret) {
		t.Fatal("the banner prints the agent secret")
	}
	host := waitLocalHost(t, apiClient(t, http.DefaultClient, in.ui))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := register(ctx, in.grpc, "intruder", ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Register without a token: %v, want Unauthenticated", err)
	}
	forged, _ := grpcauth.Mint([]byte("some-other-agent-secret-000"), "intruder")
	if err := register(ctx, in.grpc, "intruder", forged); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Register with another secret's token: %v, want Unauthenticated", err)
	}
	local, _ := grpcauth.Mint([]byte(secret), host)
	if err := register(ctx, in.grpc, "someone-else", local); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Register of another host with the local agent's token: %v, want PermissionDenied", err)
	}
	extra, _ := grpcauth.Mint([]byte(secret), "second-agent")
	if err := register(ctx, in.grpc, "second-agent", extra); err != nil {
		t.Fatalf("Register with a token under MONITOR_AGENT_SECRET: %v", err)
	}
	cc, err := grpc.NewClient(in.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := monitorpb.NewMonitorServiceClient(cc).ListHosts(ctx, &monitorpb.ListHostsRequest{}); status.Code(err) != codes.Unauthenticated && status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ListHosts without the cluster secret: %v, want refused", err)
	}
}

// TestStandaloneOpenIngest: -agent-auth=false lets a tokenless client write,
// as a simulated fleet on the same machine does.
func TestStandaloneOpenIngest(t *testing.T) {
	t.Setenv("MONITOR_AGENT_SECRET", "")
	in := startStandalone(t, "-agent-auth=false")
	if !strings.Contains(in.out.String(), "not authenticated") {
		t.Fatalf("banner does not say agents are not authenticated:\n%s", in.out.String())
	}
	waitLocalHost(t, apiClient(t, http.DefaultClient, in.ui))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := register(ctx, in.grpc, "sim-1", ""); err != nil {
		t.Fatalf("tokenless Register with -agent-auth=false: %v", err)
	}
}

// TestStandaloneHTTPS: -tls-cert/-tls-key serve the UI and API over HTTPS
// (with a generated agent secret); plain HTTP to the port gets no page.
func TestStandaloneHTTPS(t *testing.T) {
	t.Setenv("MONITOR_AGENT_SECRET", "")
	p := testpki.New(t)
	pair := p.Server(t, "ui")
	in := startStandalone(t, "-tls-cert", pair.CertFile, "-tls-key", pair.KeyFile)
	if !strings.HasPrefix(in.ui, "https://") || !strings.Contains(in.out.String(), "secret generated per start") {
		t.Fatalf("banner:\n%s", in.out.String())
	}
	tc, err := p.ClientTLS(nil).Client()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	waitLocalHost(t, apiClient(t, hc, in.ui))

	plain := &http.Transport{}
	defer plain.CloseIdleConnections()
	resp, err := (&http.Client{Transport: plain, Timeout: 10 * time.Second}).Get("http://" + strings.TrimPrefix(in.ui, "https://") + "/healthz")
	if err == nil {
		code := resp.StatusCode
		resp.Body.Close()
		if code == http.StatusOK {
			t.Fatal("plain HTTP to the HTTPS port answered 200")
		}
	}
	// A client that does not trust the certificate gets nothing.
	untrusting := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	defer untrusting.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: untrusting, Timeout: 10 * time.Second}).Get(in.ui + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without the CA completed the handshake")
	}
}

// TestStandaloneBadFlags: flag mistakes are refused, naming the flag.
func TestStandaloneBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"cert without key", []string{"-tls-cert", "x.pem"}, "", "-tls-cert and -tls-key"},
		{"missing cert files", []string{"-tls-cert", "/nonexistent/c.pem", "-tls-key", "/nonexistent/k.pem"}, "", "-tls-cert/-tls-key"},
		{"short agent secret", nil, "short", "MONITOR_AGENT_SECRET"},
		{"remote grpc", []string{"-grpc", "192.0.2.1:9093"}, "", "-grpc 192.0.2.1:9093"},
		{"positional", []string{"extra"}, "", "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MONITOR_AGENT_SECRET", tc.env)
			args := append([]string{"-data", t.TempDir(), "-http", "127.0.0.1:0", "-grpc", "127.0.0.1:0", "-quic", ""}, tc.args...)
			err := standalone(context.Background(), args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
