package tlsconfig_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

func TestValidateNamesTheKey(t *testing.T) {
	p := testpki.New(t)
	srv := p.Server(t, "srv")
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		c       tlsconfig.Config
		server  bool
		wantKey string // "" = valid
	}{
		{"disabled", tlsconfig.Config{}, true, ""},
		{"disabled bad mode", tlsconfig.Config{ClientAuth: "always"}, false, "grpc_tls.client_auth"},
		{"server ok", tlsconfig.Config{Enabled: true, CertFile: srv.CertFile, KeyFile: srv.KeyFile}, true, ""},
		{"server no cert", tlsconfig.Config{Enabled: true}, true, "grpc_tls.cert_file"},
		{"client no cert ok", tlsconfig.Config{Enabled: true}, false, ""},
		{"key without cert", tlsconfig.Config{Enabled: true, KeyFile: srv.KeyFile}, false, "grpc_tls.cert_file"},
		{"cert without key", tlsconfig.Config{Enabled: true, CertFile: srv.CertFile}, false, "grpc_tls.key_file"},
		{"mismatched pair", tlsconfig.Config{Enabled: true, CertFile: srv.CertFile, KeyFile: p.Client(t, "c", "x").KeyFile}, false, "grpc_tls.cert_file"},
		{"missing cert file", tlsconfig.Config{Enabled: true, CertFile: "/nonexistent.pem", KeyFile: srv.KeyFile}, false, "grpc_tls.cert_file"},
		{"bad CA", tlsconfig.Config{Enabled: true, CAFile: bad}, false, "grpc_tls.ca_file"},
		{"require without CA", tlsconfig.Config{Enabled: true, CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientAuth: "require"}, true, "grpc_tls.ca_file"},
		{"require ok", tlsconfig.Config{Enabled: true, CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientAuth: "require", CAFile: p.CAFile}, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.server {
				err = tc.c.ValidateServer("grpc_tls")
			} else {
				err = tc.c.Validate("grpc_tls")
			}
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Key != tc.wantKey {
				t.Fatalf("error %v, want one naming %s", err, tc.wantKey)
			}
		})
	}
}

func TestDisabledGivesNil(t *testing.T) {
	s, err := tlsconfig.Config{}.Server()
	if s != nil || err != nil {
		t.Fatalf("Server() = %v, %v; want nil, nil", s, err)
	}
	c, err := tlsconfig.Config{}.Client()
	if c != nil || err != nil {
		t.Fatalf("Client() = %v, %v; want nil, nil", c, err)
	}
}

// serve accepts TLS connections and answers each with the CommonName of the
// client certificate ("-" without one) after the handshake.
func serve(t *testing.T, c tlsconfig.Config) string {
	t.Helper()
	sc, err := c.Server()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				tc := conn.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.Handshake() != nil {
					return
				}
				cn := "-"
				if pcs := tc.ConnectionState().PeerCertificates; len(pcs) > 0 {
					cn = pcs[0].Subject.CommonName
				}
				_, _ = io.WriteString(tc, cn+"\n")
			}()
		}
	}()
	return ln.Addr().String()
}

// dial handshakes and returns the server's answer and its certificate serial.
func dial(addr string, c tlsconfig.Config) (string, string, error) {
	cc, err := c.Client()
	if err != nil {
		return "", "", err
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cc)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return "", "", err
	}
	return strings.TrimSpace(string(buf[:n])), conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func TestHandshakes(t *testing.T) {
	p := testpki.New(t)
	other := testpki.New(t)
	plain := serve(t, p.ServerTLS(t, "srv", "none"))
	mtls := serve(t, p.ServerTLS(t, "srv-m", "require"))
	alice := p.Client(t, "alice", "alice")
	mallory := other.Client(t, "mallory", "mallory")

	if got, _, err := dial(plain, p.ClientTLS(nil)); err != nil || got != "-" {
		t.Fatalf("TLS dial = %q, %v; want \"-\"", got, err)
	}
	if _, _, err := dial(plain, other.ClientTLS(nil)); err == nil {
		t.Fatal("a client trusting another CA completed the handshake")
	}
	if got, _, err := dial(mtls, p.ClientTLS(&alice)); err != nil || got != "alice" {
		t.Fatalf("mTLS dial = %q, %v; want alice", got, err)
	}
	if _, _, err := dial(mtls, p.ClientTLS(nil)); err == nil {
		t.Fatal("mTLS server accepted a client without a certificate")
	}
	c := p.ClientTLS(&mallory)
	if _, _, err := dial(mtls, c); err == nil {
		t.Fatal("mTLS server accepted a certificate from another CA")
	}
	old := tlsconfig.Config{Enabled: true, CAFile: p.CAFile}
	cc, _ := old.Client()
	cc.MaxVersion = tls.VersionTLS11
	if conn, err := tls.Dial("tcp", plain, cc); err == nil {
		conn.Close()
		t.Fatal("server accepted TLS 1.1")
	}
}

func TestServerCertificateRotation(t *testing.T) {
	p := testpki.New(t)
	sc := p.ServerTLS(t, "rot", "none")
	addr := serve(t, sc)
	_, before, err := dial(addr, p.ClientTLS(nil))
	if err != nil {
		t.Fatal(err)
	}
	p.WriteServer(t, testpki.Pair{CertFile: sc.CertFile, KeyFile: sc.KeyFile})
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, after, err := dial(addr, p.ClientTLS(nil))
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still presents serial %s 30s after rotation", before)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
