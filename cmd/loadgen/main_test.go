package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

func TestSecure(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	secret := "0123456789abcdef0123"
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MONITOR_AGENT_SECRET", "")

	// Tokens to a loopback broker in clear text: each host its own, valid.
	cfg := loadgen.Config{Brokers: []string{"127.0.0.1:9093", "[::1]:9093", "localhost:9093"}}
	if err := secure(&cfg, tlsconfig.Config{}, secretFile); err != nil {
		t.Fatal(err)
	}
	if cfg.Token == nil {
		t.Fatal("no per-host tokens with a secret file")
	}
	for _, h := range []string{"lg-00001", "lg-00002"} {
		got, err := grpcauth.Verify(cfg.Token(h), [][]byte{[]byte(secret)})
		if err != nil || got != h {
			t.Fatalf("token of %s verifies as %q, %v", h, got, err)
		}
	}

	for name, tc := range map[string]struct {
		brokers []string
		tls     tlsconfig.Config
		file    string
		want    string
	}{
		"token in clear to another machine": {[]string{"127.0.0.1:9093", "10.0.0.7:9093"}, tlsconfig.Config{}, secretFile, "clear text to 10.0.0.7:9093"},
		"tls flags without -tls":            {[]string{"127.0.0.1:9093"}, tlsconfig.Config{CAFile: "ca.pem"}, "", "need -tls"},
		"missing CA file":                   {[]string{"127.0.0.1:9093"}, tlsconfig.Config{Enabled: true, CAFile: filepath.Join(dir, "nope.pem")}, "", "ca_file"},
		"missing secret file":               {[]string{"127.0.0.1:9093"}, tlsconfig.Config{}, filepath.Join(dir, "nope"), "-agent-secret-file"},
		"short secret":                      {[]string{"127.0.0.1:9093"}, tlsconfig.Config{}, short, "at least"},
	} {
		cfg := loadgen.Config{Brokers: tc.brokers}
		err := secure(&cfg, tc.tls, tc.file)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", name, err, tc.want)
		}
		if strings.Contains(err.Error(), "0123456789abcdef") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}

	// No secret anywhere: no tokens, plaintext as before.
	cfg = loadgen.Config{Brokers: []string{"10.0.0.7:9093"}}
	if err := secure(&cfg, tlsconfig.Config{}, ""); err != nil || cfg.Token != nil || cfg.DialOptions != nil {
		t.Fatalf("without credentials: err %v, token set %v, dial options %d", err, cfg.Token != nil, len(cfg.DialOptions))
	}
	// The environment's secret is used when no file is given.
	t.Setenv("MONITOR_AGENT_SECRET", secret)
	cfg = loadgen.Config{Brokers: []string{"127.0.0.1:9093"}}
	if err := secure(&cfg, tlsconfig.Config{}, ""); err != nil || cfg.Token == nil {
		t.Fatalf("secret from the environment: err %v, token set %v", err, cfg.Token != nil)
	}
}
