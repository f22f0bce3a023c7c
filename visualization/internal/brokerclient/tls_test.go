package brokerclient_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

const tlsSecret = "cluster-secret-for-the-tls-test"

// tlsBroker starts a stand-in broker that requires mTLS with certificates
// of pki and the cluster secret on every call.
func tlsBroker(t *testing.T, pki *testpki.PKI) *brokertest.Broker {
	t.Helper()
	srv, err := pki.ServerTLS(t, "broker", tlsconfig.ClientAuthRequire).Server()
	if err != nil {
		t.Fatal(err)
	}
	return brokertest.StartWith(t, brokertest.Options{TLS: srv, RequireSecret: tlsSecret})
}

// auth is WithAuth with TLS block tc and token.
func auth(tc tlsconfig.Config, token string) brokerclient.Option {
	return brokerclient.WithAuth(grpcauth.Client{TLS: tc, Token: token})
}

// TestTLSBroker: over mTLS with the secret, reads, the Subscribe stream
// and ClusterService calls work, and every call carried the secret.
func TestTLSBroker(t *testing.T) {
	pki := testpki.New(t)
	b := tlsBroker(t, pki)
	b.SetHosts(host("web-1"))
	b.SetStatus(&monitorpb.StatusResponse{NodeId: "b1", Term: 3})
	cert := pki.Client(t, "viz", "visualization")
	c, err := brokerclient.New([]string{b.Addr}, 5*time.Second, slog.New(slog.DiscardHandler),
		auth(pki.ClientTLS(&cert), tlsSecret))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hosts, err := c.ListHosts(ctx)
	if err != nil || hostIDs(hosts) != "web-1" {
		t.Fatalf("ListHosts over mTLS = %v, %v", hostIDs(hosts), err)
	}
	if st, err := c.ClusterStatus(ctx); err != nil || st.GetTerm() != 3 {
		t.Fatalf("ClusterStatus over mTLS = %v, %v", st, err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	stream, err := c.Subscribe(sctx, b.Addr, &monitorpb.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The stream is open once the broker counts it; then publish.
	for b.Subscribers() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the stream never reached the broker")
		case <-time.After(10 * time.Millisecond):
		}
	}
	b.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{{HostId: "web-1", Timestamp: 1}}})
	got, err := stream.Recv()
	if err != nil || len(got.GetSnapshots()) != 1 {
		t.Fatalf("Subscribe over mTLS = %v, %v", got, err)
	}
	stop()
	auth := b.Auth()
	if len(auth) < 3 {
		t.Fatalf("the broker saw %d calls, want 3", len(auth))
	}
	for i, a := range auth {
		if a != "Bearer "+tlsSecret {
			t.Fatalf("call %d carried authorization %q, want the cluster secret", i, a)
		}
	}
	// DialOptions gives other clients (membership) the same credentials.
	conn, err := grpc.NewClient(b.Addr, c.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := monitorpb.NewMonitorServiceClient(conn).ListHosts(ctx, &monitorpb.ListHostsRequest{}); err != nil {
		t.Fatalf("ListHosts with DialOptions = %v", err)
	}
}

// TestTLSBrokerRefusals: a plaintext client, a client without a
// certificate, one that trusts another CA and one without the secret all
// fail — with Unavailable for the transport, Unauthenticated for the
// secret.
func TestTLSBrokerRefusals(t *testing.T) {
	pki := testpki.New(t)
	b := tlsBroker(t, pki)
	cert := pki.Client(t, "viz", "visualization")
	other := testpki.New(t)
	otherCert := other.Client(t, "viz", "visualization")
	cases := []struct {
		name string
		opts []brokerclient.Option
		want codes.Code
	}{
		{"plaintext", []brokerclient.Option{brokerclient.WithAuth(grpcauth.Client{Token: tlsSecret, AllowInsecureLoopback: true})}, codes.Unavailable},
		{"no client certificate", []brokerclient.Option{auth(pki.ClientTLS(nil), tlsSecret)}, codes.Unavailable},
		{"another CA", []brokerclient.Option{auth(other.ClientTLS(&otherCert), tlsSecret)}, codes.Unavailable},
		{"no secret", []brokerclient.Option{auth(pki.ClientTLS(&cert), "")}, codes.Unauthenticated},
		{"wrong secret", []brokerclient.Option{auth(pki.ClientTLS(&cert), "not-"+tlsSecret)}, codes.Unauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := brokerclient.New([]string{b.Addr}, 3*time.Second, slog.New(slog.DiscardHandler), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.ListHosts(context.Background())
			if status.Code(err) != tc.want {
				t.Fatalf("ListHosts = %v, want %s", err, tc.want)
			}
		})
	}
}

// TestSecretNotSentInClear: without TLS the cluster secret goes to a
// loopback broker, and to a broker on another address of this machine
// (standing in for another machine) not at all: the call fails naming why
// and the broker sees no call carrying it.
func TestSecretNotSentInClear(t *testing.T) {
	creds := brokerclient.WithAuth(grpcauth.Client{Token: tlsSecret, AllowInsecureLoopback: true})
	b := brokertest.StartWith(t, brokertest.Options{RequireSecret: tlsSecret})
	lc, err := brokerclient.New([]string{b.Addr}, 2*time.Second, slog.New(slog.DiscardHandler), creds)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, err := lc.ListHosts(context.Background()); err != nil {
		t.Fatalf("a loopback plaintext broker with the secret: %v", err)
	}
	if a := b.Auth(); len(a) != 1 || a[0] != "Bearer "+tlsSecret {
		t.Fatalf("the loopback broker saw %q", a)
	}

	ip := nonLoopbackIP(t)
	remote := brokertest.StartWith(t, brokertest.Options{Listen: net.JoinHostPort(ip, "0")})
	rc, err := brokerclient.New([]string{remote.Addr}, 2*time.Second, slog.New(slog.DiscardHandler), creds)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = rc.ListHosts(context.Background())
	if err == nil || !strings.Contains(err.Error(), "clear text") {
		t.Fatalf("a plaintext call to %s with the secret = %v, want a refusal naming clear text", remote.Addr, err)
	}
	for _, a := range remote.Auth() {
		if strings.Contains(a, tlsSecret) {
			t.Fatalf("the non-loopback broker received the secret in clear: %q", a)
		}
	}
}

// nonLoopbackIP returns an address of this machine that is not loopback
// (the test is skipped on a machine that has none).
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address on this machine")
	return ""
}
