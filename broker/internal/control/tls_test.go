package control

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// tlsSetup is one broker's TLS: its gRPC server, its client side (gRPC
// dials to other members and Raft dials), its Raft server.
type tlsSetup struct {
	grpcServer, raftServer, client *tls.Config
}

func newTLSSetup(t *testing.T, p *testpki.PKI, name string) tlsSetup {
	t.Helper()
	pair := p.Server(t, name)
	mk := func(c tlsconfig.Config, server bool) *tls.Config {
		var (
			tc  *tls.Config
			err error
		)
		if server {
			tc, err = c.Server()
		} else {
			tc, err = c.Client()
		}
		if err != nil {
			t.Fatal(err)
		}
		return tc
	}
	base := tlsconfig.Config{Enabled: true, CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: p.CAFile}
	srv := base
	srv.ClientAuth = tlsconfig.ClientAuthRequire
	return tlsSetup{grpcServer: mk(srv, true), raftServer: mk(srv, true), client: mk(base, false)}
}

func startTLSBroker(t *testing.T, id string, bootstrap bool, s tlsSetup) *broker {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node, err := Start(NodeConfig{ID: id, BindAddr: "127.0.0.1:0", DataDir: t.TempDir(), HeartbeatTimeout: 500 * time.Millisecond,
		ElectionTimeout: time.Second, Bootstrap: bootstrap, ServerTLS: s.raftServer, ClientTLS: s.client}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{node: node, member: &monitorpb.Member{Id: id, GrpcAddr: lis.Addr().String(), RaftAddr: node.Addr()}}
	b.srv = NewServer(node, b.member, testCreds, ServerOptions{
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(s.client))},
	}, quiet)
	b.grpc = grpc.NewServer(grpc.Creds(credentials.NewTLS(s.grpcServer)))
	monitorpb.RegisterClusterServiceServer(b.grpc, b.srv)
	go func() { _ = b.grpc.Serve(lis) }()
	t.Cleanup(func() {
		b.grpc.Stop()
		b.srv.Close()
		node.Shutdown()
	})
	return b
}

// TestClusterOverTLS forms a three-member cluster whose gRPC (Join,
// Forward) and Raft links are all mutual TLS, writes through a follower,
// and checks that a Raft peer without a member certificate is refused.
func TestClusterOverTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := testpki.New(t)
	b1 := startTLSBroker(t, "b1", true, newTLSSetup(t, p, "b1"))
	for !b1.node.IsLeader() {
		select {
		case <-b1.node.LeadershipChanges():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := b1.srv.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_MEMBER, b1.member); err != nil {
		t.Fatal(err)
	}
	s2, s3 := newTLSSetup(t, p, "b2"), newTLSSetup(t, p, "b3")
	b2 := startTLSBroker(t, "b2", false, s2)
	b3 := startTLSBroker(t, "b3", false, s3)
	// A plaintext join of a TLS cluster fails (JoinCluster gives up only
	// when ctx ends, so bound it).
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	if err := JoinCluster(pctx, b1.member.GrpcAddr, b2.member, testCreds.Secret); err == nil {
		t.Fatal("a plaintext Join of a TLS broker succeeded")
	}
	pcancel()
	tlsDial := grpc.WithTransportCredentials(credentials.NewTLS(s2.client))
	if err := JoinCluster(ctx, b1.member.GrpcAddr, b2.member, testCreds.Secret, tlsDial); err != nil {
		t.Fatal(err)
	}
	if err := JoinCluster(ctx, b2.member.GrpcAddr, b3.member, testCreds.Secret, grpc.WithTransportCredentials(credentials.NewTLS(s3.client))); err != nil {
		t.Fatal(err)
	}
	// Forwarded from a follower over TLS, replicated over Raft TLS.
	if err := b3.srv.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING, &monitorpb.Setting{Key: "k", Value: "tls"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, b := range []*broker{b1, b2, b3} {
			if v, _ := b.node.FSM().Setting("k"); v != "tls" {
				return false
			}
		}
		return true
	})

	// Raft's port: a TLS client without a member certificate, and a
	// certificate from another CA, are refused.
	foreign := testpki.New(t).Client(t, "x", "b9")
	for name, cfg := range map[string]tlsconfig.Config{
		"no client certificate": p.ClientTLS(nil),
		"foreign certificate":   {Enabled: true, CAFile: p.CAFile, CertFile: foreign.CertFile, KeyFile: foreign.KeyFile},
	} {
		cc, err := cfg.Client()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", b1.node.Addr(), cc)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = conn.Write([]byte{0})
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatalf("%s: Raft port answered", name)
		}
	}
	// Plain TCP bytes get no Raft answer either.
	raw, err := net.DialTimeout("tcp", b1.node.Addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = raw.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	buf := make([]byte, 64)
	n, _ := raw.Read(buf)
	raw.Close()
	if n > 0 && buf[0] != 0x15 { // anything but a TLS alert record
		t.Fatalf("plaintext Raft peer got a non-TLS answer %x", buf[:n])
	}
}
