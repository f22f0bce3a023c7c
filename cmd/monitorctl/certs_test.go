package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// TestCertsFiles: `certs` writes a CA, a server certificate with the given
// SANs, agent certificates carrying the host identity and a plain client
// certificate, every file 0600; a second run over the same files writes
// nothing and names the file; a later run reuses the CA; bad input is
// refused with the flag named.
func TestCertsFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	var out, errOut bytes.Buffer
	if code := run([]string{"certs", "-out", dir, "-hosts", "127.0.0.1,localhost,broker.example", "-agents", "web-1,web-2", "-clients", "prometheus"}, &out, &errOut); code != 0 {
		t.Fatalf("certs exit %d: %s", code, errOut.String())
	}
	want := []string{"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "agent-web-1.pem", "agent-web-1-key.pem",
		"agent-web-2.pem", "agent-web-2-key.pem", "client-prometheus.pem", "client-prometheus-key.pem"}
	for _, f := range want {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
		if !strings.Contains(out.String(), filepath.Join(dir, f)) {
			t.Errorf("%s not listed in the output:\n%s", f, out.String())
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}

	ca := parseCert(t, filepath.Join(dir, "ca.pem"))
	srv := parseCert(t, filepath.Join(dir, "server.pem"))
	agent := parseCert(t, filepath.Join(dir, "agent-web-1.pem"))
	if !ca.IsCA || srv.IsCA || agent.IsCA {
		t.Fatal("only the CA may be a CA")
	}
	if len(srv.IPAddresses) != 1 || !srv.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || strings.Join(srv.DNSNames, ",") != "localhost,broker.example" {
		t.Fatalf("server SANs: IPs %v DNS %v", srv.IPAddresses, srv.DNSNames)
	}
	if agent.Subject.CommonName != "web-1" || len(agent.URIs) != 1 || agent.URIs[0].String() != "monitor://host/web-1" {
		t.Fatalf("agent identity: CN %q URIs %v", agent.Subject.CommonName, agent.URIs)
	}
	if agent.PublicKeyAlgorithm != x509.ECDSA || srv.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("keys are %v / %v, want ECDSA", agent.PublicKeyAlgorithm, srv.PublicKeyAlgorithm)
	}

	// Nothing is overwritten: a second run fails, names the file, and
	// leaves every file as it was.
	before := readAll(t, dir, want)
	errOut.Reset()
	if code := run([]string{"certs", "-out", dir, "-agents", "web-3,web-1"}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "agent-web-1") || !strings.Contains(errOut.String(), "refusing to overwrite") {
		t.Fatalf("second run over agent-web-1: exit %d: %s", code, errOut.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "agent-web-3.pem")); err == nil {
		t.Fatal("a refused run wrote agent-web-3.pem")
	}
	for f, b := range readAll(t, dir, want) {
		if !bytes.Equal(b, before[f]) {
			t.Fatalf("%s changed", f)
		}
	}
	// A later run adds an agent under the same CA.
	if code := run([]string{"certs", "-out", dir, "-agents", "web-3"}, io.Discard, &errOut); code != 0 {
		t.Fatalf("adding web-3: %s", errOut.String())
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := parseCert(t, filepath.Join(dir, "agent-web-3.pem")).Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("web-3 is not signed by the existing CA: %v", err)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no out", []string{"certs", "-hosts", "a"}, "-out is required"},
		{"nothing", []string{"certs", "-out", dir}, "nothing to issue"},
		{"bad host", []string{"certs", "-out", dir, "-hosts", "bad host!"}, "-hosts"},
		{"bad agent", []string{"certs", "-out", dir, "-agents", "a/b"}, "-agents"},
		{"dup agent", []string{"certs", "-out", dir, "-agents", "x,x"}, "twice"},
		{"days", []string{"certs", "-out", dir, "-agents", "x", "-days", "0"}, "-days"},
	} {
		errOut.Reset()
		if code := run(tc.args, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%s: exit %d: %s (want %q)", tc.name, code, errOut.String(), tc.want)
		}
	}
	// Half a CA is refused, not replaced.
	half := t.TempDir()
	if err := os.WriteFile(filepath.Join(half, "ca.pem"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if code := run([]string{"certs", "-out", half, "-agents", "x"}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "both exist") {
		t.Fatalf("half a CA: exit %d: %s", code, errOut.String())
	}
}

// TestCertsWorkWithTLSConfig: the generated files load through
// pkg/tlsconfig; a mutual TLS handshake between the server certificate and
// an agent certificate succeeds and the server reads the agent's identity
// back; a broker with cert_identity uri accepts the agent's writes for its
// own host on the certificate alone and refuses another host's.
func TestCertsWorkWithTLSConfig(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	dir := t.TempDir()
	if code := run([]string{"certs", "-out", dir, "-hosts", "127.0.0.1,localhost", "-agents", "web-1"}, io.Discard, io.Discard); code != 0 {
		t.Fatal("certs failed")
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	serverBlock := tlsconfig.Config{Enabled: true, CertFile: f("server.pem"), KeyFile: f("server-key.pem"), CAFile: f("ca.pem"), ClientAuth: tlsconfig.ClientAuthRequire}
	agentBlock := tlsconfig.Config{Enabled: true, CertFile: f("agent-web-1.pem"), KeyFile: f("agent-web-1-key.pem"), CAFile: f("ca.pem")}
	if err := serverBlock.ValidateServer("grpc_tls"); err != nil {
		t.Fatal(err)
	}
	if err := agentBlock.Validate("tls"); err != nil {
		t.Fatal(err)
	}

	// A raw handshake.
	stc, err := serverBlock.Server()
	if err != nil {
		t.Fatal(err)
	}
	ctc, err := agentBlock.Client()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", stc)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *x509.Certificate, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil || len(tc.ConnectionState().PeerCertificates) == 0 {
			got <- nil
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0]
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), ctc)
	if err != nil {
		t.Fatalf("mTLS handshake with the generated files: %v", err)
	}
	peer := <-got
	conn.Close()
	if peer == nil || peer.Subject.CommonName != "web-1" || len(peer.URIs) != 1 || peer.URIs[0].String() != "monitor://host/web-1" {
		t.Fatalf("server read the agent identity as %+v", peer)
	}

	// A broker taking the identity from the certificate.
	cfg := broker.DefaultConfig()
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen, cfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	cfg.GRPCTLS = serverBlock
	cfg.Auth.CertIdentity = "uri"
	cfg.Cluster.Secret = "certs-test-cluster-secret"
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
	dial, err := grpcauth.Client{TLS: agentBlock}.DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(b.GRPCAddr(), dial...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := monitorpb.NewMonitorServiceClient(cc)
	rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Register(rctx, &monitorpb.RegisterRequest{Host: &monitorpb.HostInfo{HostId: "web-1", Hostname: "web-1"}}); err != nil {
		t.Fatalf("Register web-1 with its own certificate: %v", err)
	}
	if _, err := c.Register(rctx, &monitorpb.RegisterRequest{Host: &monitorpb.HostInfo{HostId: "web-2", Hostname: "web-2"}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Register web-2 with web-1's certificate: %v, want PermissionDenied", err)
	}
}

func parseCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func readAll(t *testing.T, dir string, names []string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		m[n] = b
	}
	return m
}
