package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/monitorhq/monitor/agent"
	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const e2eAgentSecret = "e2e-agent-secret-0123456789"

// TestSecuredAgentPath runs a real agent against a broker that requires
// mutual TLS and agent tokens: the agent (uplink and membership watcher)
// authenticates with its client certificate and its token, and its data is
// stored; the load generator drives the same broker with per-host tokens,
// and is refused with tokens of another secret.
func TestSecuredAgentPath(t *testing.T) {
	defer goleak.VerifyNone(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	p := testpki.New(t)

	bcfg := broker.DefaultConfig()
	bcfg.GRPCListen, bcfg.HTTPListen, bcfg.Raft.Listen, bcfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	bcfg.GRPCTLS = p.ServerTLS(t, "broker", tlsconfig.ClientAuthRequire)
	bcfg.Raft.TLS = true
	bcfg.Auth.AgentSecrets = []string{e2eAgentSecret}
	bcfg.Cluster.Secret = testSecret
	b, err := broker.New(ctx, bcfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	bctx, stopBroker := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(bctx) }()
	defer func() {
		stopBroker()
		if err := <-bdone; err != nil {
			t.Errorf("broker: %v", err)
		}
	}()

	tok, err := grpcauth.Mint([]byte(e2eAgentSecret), "secure-host")
	if err != nil {
		t.Fatal(err)
	}
	cert := p.Client(t, "agent", "secure-host")
	acfg := agent.DefaultConfig()
	acfg.HostID = "secure-host"
	acfg.Brokers = []string{b.GRPCAddr()}
	acfg.DataDir = t.TempDir()
	acfg.Interval = config.Duration(time.Second)
	acfg.CollectorTimeout = config.Duration(500 * time.Millisecond)
	acfg.TLS = p.ClientTLS(&cert)
	acfg.Token = tok
	a, err := agent.New(acfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()

	// Read back through the broker as the visualization server does: TLS,
	// client certificate, cluster secret.
	reader := p.Client(t, "reader", "visualization")
	rtc, err := p.ClientTLS(&reader).Client()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(b.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(rtc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	mc := monitorpb.NewMonitorServiceClient(cc)
	rctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testSecret)
	eventually(t, 30*time.Second, func() error {
		l, err := mc.Latest(rctx, &monitorpb.LatestRequest{HostId: "secure-host"})
		if err != nil {
			return err
		}
		if len(l.GetSnapshot().GetMetrics()) == 0 {
			return fmt.Errorf("no snapshot of secure-host yet")
		}
		return nil
	})
	stopAgent()
	if err := <-adone; err != nil {
		t.Fatalf("agent: %v", err)
	}
	if st := a.Stats(); st.Acked == 0 {
		t.Fatalf("agent stats: nothing acknowledged: %+v", st)
	}

	// The load generator over TLS with each host's token.
	lgTLS := p.ClientTLS(&cert)
	run := func(secret string, drain time.Duration) loadgen.Result {
		t.Helper()
		dial, err := grpcauth.Client{TLS: lgTLS}.DialOptions()
		if err != nil {
			t.Fatal(err)
		}
		g, err := loadgen.New(loadgen.Config{
			Brokers: []string{b.GRPCAddr()}, Hosts: 20, Interval: 200 * time.Millisecond, Duration: 2 * time.Second,
			Drain: drain, Prefix: "sec", DialOptions: dial,
			Token: func(host string) string {
				tok, err := grpcauth.Mint([]byte(secret), host)
				if err != nil {
					t.Error(err)
				}
				return tok
			},
		}, logger)
		if err != nil {
			t.Fatal(err)
		}
		lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		res, _ := g.Run(lctx)
		return res
	}
	// A loaded machine may flow-control: the drain ends as soon as all is
	// acknowledged, so a long one costs nothing when it is not needed.
	good := run(e2eAgentSecret, 30*time.Second)
	t.Logf("FIGURE loadgen over mTLS with tokens: %d snapshots acked, %.0f/s, ack p50 %.1f ms p99 %.1f ms, errors %d",
		good.Acked, good.SnapshotsPerS, good.AckP50MS, good.AckP99MS, good.Errors)
	if good.Acked == 0 || good.Lost != 0 {
		t.Fatalf("loadgen with valid tokens: %+v", good)
	}
	bad := run("some-other-secret-0123456789", 2*time.Second) // nothing can be acknowledged
	if bad.Acked != 0 || bad.Errors == 0 {
		t.Fatalf("loadgen with tokens of another secret: acked %d, errors %d; want 0 acked and errors", bad.Acked, bad.Errors)
	}
}
