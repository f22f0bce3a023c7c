package broker

// Negative tests of the gRPC listener's security (docs/security.md): real
// brokers on loopback with certificates from internal/testpki, real gRPC
// clients.

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const (
	secOld     = "old-agent-secret-0123456789"
	secNew     = "new-agent-secret-9876543210"
	secCluster = "cluster-secret-for-security-tests"
	secAdmin   = "admin-password-1"
)

// startBroker runs a broker on loopback with embedded storage, cfg changed
// by mod; it stops at the end of the test.
func startBroker(t *testing.T, mod func(*Config)) *Broker {
	t.Helper()
	cfg := DefaultConfig()
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen, cfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return b
}

// dial returns a MonitorService client with the given options.
func dial(t *testing.T, addr string, opts ...grpc.DialOption) monitorpb.MonitorServiceClient {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return monitorpb.NewMonitorServiceClient(cc)
}

func tlsDial(t *testing.T, c tlsconfig.Config) grpc.DialOption {
	t.Helper()
	tc, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(tc))
}

func bearer(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func mint(t *testing.T, secret, host string) string {
	t.Helper()
	tok, err := grpcauth.Mint([]byte(secret), host)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTLSListener(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p := testpki.New(t)
	b := startBroker(t, func(c *Config) { c.GRPCTLS = p.ServerTLS(t, "broker", tlsconfig.ClientAuthNone) })
	ctx := testCtx(t)
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		t.Cleanup(cancel)
		return c
	}
	if _, err := dial(t, b.GRPCAddr()).ListHosts(short(), &monitorpb.ListHostsRequest{}); status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("plaintext client of a TLS broker: %v; want Unavailable", err)
	}
	other := testpki.New(t)
	if _, err := dial(t, b.GRPCAddr(), tlsDial(t, other.ClientTLS(nil))).ListHosts(short(), &monitorpb.ListHostsRequest{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client trusting another CA: %v; want a certificate error", err)
	}
	if _, err := dial(t, b.GRPCAddr(), tlsDial(t, p.ClientTLS(nil))).ListHosts(ctx, &monitorpb.ListHostsRequest{}); err != nil {
		t.Fatalf("TLS client: %v", err)
	}
}

func TestMutualTLSListener(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p := testpki.New(t)
	b := startBroker(t, func(c *Config) { c.GRPCTLS = p.ServerTLS(t, "broker", tlsconfig.ClientAuthRequire) })
	ctx := testCtx(t)
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := dial(t, b.GRPCAddr(), tlsDial(t, p.ClientTLS(nil))).ListHosts(short, &monitorpb.ListHostsRequest{}); err == nil {
		t.Fatal("mTLS broker served a client without a certificate")
	}
	foreign := testpki.New(t).Client(t, "foreign", "web-1")
	if _, err := dial(t, b.GRPCAddr(), tlsDial(t, p.ClientTLS(&foreign))).ListHosts(short, &monitorpb.ListHostsRequest{}); err == nil {
		t.Fatal("mTLS broker served a client certificate of another CA")
	}
	mine := p.Client(t, "mine", "web-1")
	if _, err := dial(t, b.GRPCAddr(), tlsDial(t, p.ClientTLS(&mine))).ListHosts(ctx, &monitorpb.ListHostsRequest{}); err != nil {
		t.Fatalf("client with a certificate of the CA: %v", err)
	}
}

func snapshot(host string) *monitorpb.Snapshot {
	return &monitorpb.Snapshot{HostId: host, Timestamp: time.Now().Unix(),
		Metrics: []*monitorpb.Metric{{Name: "cpu.usage_percent", Value: 42, Unit: "%"}}}
}

// ingestBatches opens an Ingest stream and sends Hello then one batch per host
// list; it returns the error that ended the stream, or nil when every
// batch was acknowledged.
func ingestBatches(ctx context.Context, c monitorpb.MonitorServiceClient, batches ...[]string) error {
	st, err := c.Ingest(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: "t"}}}); err != nil {
		return err
	}
	for i, hosts := range batches {
		b := &monitorpb.Batch{Seq: uint64(i + 1)}
		for _, h := range hosts {
			b.Snapshots = append(b.Snapshots, snapshot(h))
		}
		if err := st.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: b}}); err != nil {
			break // the stream ended: Recv says why
		}
		for {
			resp, err := st.Recv()
			if err != nil {
				return err
			}
			if a := resp.GetAck(); a != nil && a.GetAckedSeq() == b.Seq {
				break
			}
		}
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestAgentIdentity(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p := testpki.New(t)
	b := startBroker(t, func(c *Config) {
		c.GRPCTLS = p.ServerTLS(t, "broker", tlsconfig.ClientAuthNone)
		c.Auth.AgentSecrets = []string{secNew, secOld}
		c.Auth.RevokedHosts = []string{"web-9"}
		c.Cluster.Secret, c.Cluster.AdminPassword = secCluster, secAdmin
	})
	ctx := testCtx(t)
	c := dial(t, b.GRPCAddr(), tlsDial(t, p.ClientTLS(nil)))
	reg := func(ctx context.Context, host string) error {
		_, err := c.Register(ctx, &monitorpb.RegisterRequest{Host: &monitorpb.HostInfo{HostId: host, Hostname: host}})
		return err
	}
	tokA := mint(t, secNew, "web-1")
	tokAOld := mint(t, secOld, "web-1") // rotation: the old secret still listed
	forged := mint(t, "not-a-configured-secret-000", "web-1")

	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"no credentials", reg(ctx, "web-1"), codes.Unauthenticated},
		{"forged token", reg(bearer(ctx, forged), "web-1"), codes.Unauthenticated},
		{"malformed token", reg(bearer(ctx, "v1.garbage"), "web-1"), codes.Unauthenticated},
		{"cluster secret is no agent", reg(bearer(ctx, secCluster), "web-1"), codes.Unauthenticated},
		{"token of web-1 registering web-2", reg(bearer(ctx, tokA), "web-2"), codes.PermissionDenied},
		{"revoked host", reg(bearer(ctx, mint(t, secNew, "web-9")), "web-9"), codes.PermissionDenied},
		{"token under the new secret", reg(bearer(ctx, tokA), "web-1"), codes.OK},
		{"token under the old secret", reg(bearer(ctx, tokAOld), "web-1"), codes.OK},
	}
	for _, tc := range cases {
		if got := status.Code(tc.err); got != tc.want {
			t.Errorf("%s: %v; want %s", tc.name, tc.err, tc.want)
		}
	}
	if _, err := c.Heartbeat(bearer(ctx, tokA), &monitorpb.HeartbeatRequest{HostId: "web-2"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("heartbeat for another host: %v; want PermissionDenied", err)
	}

	// Ingest: web-1's own batch is stored; a batch naming web-2 ends the
	// stream with PermissionDenied naming web-2, and nothing of web-2 is stored.
	if err := ingestBatches(bearer(ctx, tokA), c, []string{"web-1"}); err != nil {
		t.Fatalf("ingest of its own host: %v", err)
	}
	err := ingestBatches(bearer(ctx, tokA), c, []string{"web-1", "web-2"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"web-2"`) {
		t.Fatalf("ingest naming another host: %v; want PermissionDenied naming web-2", err)
	}
	if err := ingestBatches(bearer(ctx, forged), c, []string{"web-1"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ingest with a forged token: %v; want Unauthenticated", err)
	}
	reader := bearer(ctx, secCluster)
	if l, err := c.Latest(reader, &monitorpb.LatestRequest{HostId: "web-2"}); err != nil || l.GetSnapshot() != nil {
		t.Fatalf("web-2 has data after a refused batch: %v %v", l, err)
	}
	if l, err := c.Latest(reader, &monitorpb.LatestRequest{HostId: "web-1"}); err != nil || l.GetSnapshot().GetHostId() != "web-1" {
		t.Fatalf("web-1's data: %v %v", l, err)
	}

	// Readers: the cluster secret or the admin; not an agent, not nobody.
	admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:"+secAdmin)))
	for _, rc := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no credentials", ctx, codes.Unauthenticated},
		{"agent token", bearer(ctx, tokA), codes.PermissionDenied},
		{"wrong secret", bearer(ctx, "cluster-secret-for-security-testX"), codes.Unauthenticated},
		{"cluster secret", reader, codes.OK},
		{"admin", admin, codes.OK},
	} {
		_, err := c.ListHosts(rc.ctx, &monitorpb.ListHostsRequest{})
		if status.Code(err) != rc.want {
			t.Errorf("ListHosts with %s: %v; want %s", rc.name, err, rc.want)
		}
		sub, err := c.Subscribe(rc.ctx, &monitorpb.SubscribeRequest{})
		if err == nil && rc.want != codes.OK {
			_, err = sub.Recv()
		}
		if rc.want != codes.OK && status.Code(err) != rc.want {
			t.Errorf("Subscribe with %s: %v; want %s", rc.name, err, rc.want)
		}
	}
	// Agents may follow the member list.
	cl := monitorpb.NewClusterServiceClient(mustConn(t, b.GRPCAddr(), tlsDial(t, p.ClientTLS(nil))))
	if _, err := cl.Status(bearer(ctx, tokA), &monitorpb.StatusRequest{}); err != nil {
		t.Errorf("Status with an agent token: %v", err)
	}
	if _, err := cl.Status(ctx, &monitorpb.StatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Status without credentials: %v; want Unauthenticated", err)
	}

	f := b.authz.Failures()
	for _, r := range []string{"missing", "invalid", "revoked", "host_mismatch", "not_reader"} {
		if f[r] == 0 {
			t.Errorf("auth failures %q not counted: %v", r, f)
		}
	}
}

func mustConn(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestCertificateIdentity: with cert_identity uri, a client certificate
// with URI SAN monitor://host/web-5 writes web-5 without a token, and only
// web-5.
func TestCertificateIdentity(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p := testpki.New(t)
	b := startBroker(t, func(c *Config) {
		c.GRPCTLS = p.ServerTLS(t, "broker", tlsconfig.ClientAuthRequire)
		c.Auth.CertIdentity = "uri"
		c.Cluster.Secret = secCluster
	})
	ctx := testCtx(t)
	web5 := p.Client(t, "web5", "ignored-cn", "monitor://host/web-5")
	c := dial(t, b.GRPCAddr(), tlsDial(t, p.ClientTLS(&web5)))
	if err := ingestBatches(ctx, c, []string{"web-5"}); err != nil {
		t.Fatalf("ingest as the certificate's host: %v", err)
	}
	if err := ingestBatches(ctx, c, []string{"web-6"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ingest of another host: %v; want PermissionDenied", err)
	}
	noURI := p.Client(t, "nouri", "web-7")
	c2 := dial(t, b.GRPCAddr(), tlsDial(t, p.ClientTLS(&noURI)))
	if _, err := c2.Register(ctx, &monitorpb.RegisterRequest{Host: &monitorpb.HostInfo{HostId: "web-7"}}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("certificate without a host URI: %v; want Unauthenticated", err)
	}
}

// TestConnectionLimit: past max_connections_per_ip a new connection is
// closed at once and counted; the ones within the limit keep working.
func TestConnectionLimit(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	b := startBroker(t, func(c *Config) { c.MaxConnectionsPerIP = 2 })
	ctx := testCtx(t)
	var clients []monitorpb.MonitorServiceClient
	for i := 0; i < 2; i++ {
		c := dial(t, b.GRPCAddr())
		if _, err := c.ListHosts(ctx, &monitorpb.ListHostsRequest{}); err != nil {
			t.Fatalf("connection %d within the limit: %v", i, err)
		}
		clients = append(clients, c)
	}
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := dial(t, b.GRPCAddr()).ListHosts(short, &monitorpb.ListHostsRequest{}); err == nil {
		t.Fatal("a third connection from the same IP was served")
	}
	if n := b.connLim.Refused()["max_connections_per_ip"]; n == 0 {
		t.Fatal("refusal not counted")
	}
	for i, c := range clients {
		if _, err := c.ListHosts(ctx, &monitorpb.ListHostsRequest{}); err != nil {
			t.Fatalf("connection %d after the refusal: %v", i, err)
		}
	}
	// A raw TCP connection past the limit is closed by the broker.
	raw, err := net.DialTimeout("tcp", b.GRPCAddr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection past the limit was not closed")
	}
}
