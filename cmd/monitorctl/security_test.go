package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

func TestAgentToken(t *testing.T) {
	const secret = "ctl-agent-secret-0123456789"
	t.Setenv("MONITOR_AGENT_SECRET", secret)
	var out, errOut bytes.Buffer
	if code := run([]string{"agent-token", "-host", "web-1"}, &out, &errOut); code != 0 {
		t.Fatalf("agent-token exit %d: %s", code, errOut.String())
	}
	host, err := grpcauth.Verify(strings.TrimSpace(out.String()), [][]byte{[]byte(secret)})
	if err != nil || host != "web-1" {
		t.Fatalf("printed token verifies as %q, %v", host, err)
	}
	t.Setenv("MONITOR_AGENT_SECRET", "")
	out.Reset()
	if code := run([]string{"agent-token", "-host", "web-1"}, &out, &errOut); code != 2 || out.Len() != 0 {
		t.Fatalf("agent-token without a secret: exit %d, printed %q", code, out.String())
	}
}

// TestStatusOverTLS: status against a broker with mutual TLS and agent
// authentication works with the CA, a client certificate and the admin's
// password, and fails without TLS or without credentials.
func TestStatusOverTLS(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p := testpki.New(t)
	cfg := broker.DefaultConfig()
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen, cfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	cfg.GRPCTLS = p.ServerTLS(t, "broker", tlsconfig.ClientAuthRequire)
	cfg.Auth.AgentSecrets = []string{"ctl-agent-secret-0123456789"}
	cfg.Cluster.AdminPassword = adminPwd
	b, err := broker.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	cert := p.Client(t, "ctl", "admin")
	tlsArgs := []string{"-broker", b.GRPCAddr(), "-timeout", "5s", "-tls-ca", p.CAFile, "-tls-cert", cert.CertFile, "-tls-key", cert.KeyFile}
	var out, errOut bytes.Buffer
	if code := run(append(tlsArgs, "-password", adminPwd, "status"), &out, &errOut); code != 0 || !strings.Contains(out.String(), "leader:") {
		t.Fatalf("status over mTLS: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	errOut.Reset()
	if code := run(append(tlsArgs, "-password", "", "status"), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "Unauthenticated") {
		t.Fatalf("status without credentials: exit %d %s", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"-broker", b.GRPCAddr(), "-timeout", "3s", "-password", adminPwd, "status"}, &out, &errOut); code != 1 {
		t.Fatalf("plaintext status of a TLS broker: exit %d", code)
	}
}
