package grpcauth

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/credentials"
)

func TestTokens(t *testing.T) {
	s1, s2 := []byte("first-secret-0123456789"), []byte("second-secret-0123456789")
	tok, err := Mint(s1, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "v1.") {
		t.Fatalf("token %q lacks the version", tok)
	}
	if h, err := Verify(tok, [][]byte{s2, s1}); err != nil || h != "web-1" {
		t.Fatalf("Verify with the secret listed second = %q, %v", h, err)
	}
	if _, err := Verify(tok, [][]byte{s2}); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("Verify under another secret: %v; want ErrBadMAC", err)
	}
	// Swapping the host part keeps the signature of web-1: refused.
	other, _ := Mint(s1, "web-2")
	parts, oparts := strings.Split(tok, "."), strings.Split(other, ".")
	if _, err := Verify(parts[0]+"."+oparts[1]+"."+parts[2], [][]byte{s1}); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("token with a swapped host: %v; want ErrBadMAC", err)
	}
	for _, bad := range []string{"", "v1", "v2." + parts[1] + "." + parts[2], "v1.!!!." + parts[2], "v1." + parts[1] + ".short", "v1..x"} {
		if _, err := Verify(bad, [][]byte{s1}); !errors.Is(err, ErrMalformed) {
			t.Errorf("Verify(%q): %v; want ErrMalformed", bad, err)
		}
	}
	if _, err := Mint([]byte("short"), "web-1"); err == nil {
		t.Error("Mint accepted a short secret")
	}
	if _, err := Mint(s1, "web 1"); err == nil {
		t.Error("Mint accepted an invalid host id")
	}
	if h, err := TokenHost(tok); err != nil || h != "web-1" {
		t.Errorf("TokenHost = %q, %v", h, err)
	}
}

type authInfo struct{ level credentials.SecurityLevel }

func (a authInfo) AuthType() string { return "test" }
func (a authInfo) GetCommonAuthInfo() credentials.CommonAuthInfo {
	return credentials.CommonAuthInfo{SecurityLevel: a.level}
}

func TestBearerRefusesClearTextToOtherMachines(t *testing.T) {
	b := Bearer{Token: "tok", AllowInsecureLoopback: true}
	plain := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{AuthInfo: authInfo{credentials.NoSecurity}})
	if md, err := b.GetRequestMetadata(plain, "https://127.0.0.1:9093/monitor.v1.MonitorService"); err != nil || md["authorization"] != "Bearer tok" {
		t.Fatalf("loopback: %v %v", md, err)
	}
	if _, err := b.GetRequestMetadata(plain, "https://10.0.0.5:9093/monitor.v1.MonitorService"); err == nil {
		t.Fatal("sent a token in clear text to another machine")
	}
	secure := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{AuthInfo: authInfo{credentials.PrivacyAndIntegrity}})
	if _, err := b.GetRequestMetadata(secure, "https://10.0.0.5:9093/x"); err != nil {
		t.Fatalf("TLS to another machine: %v", err)
	}
	if !(Bearer{Token: "t"}).RequireTransportSecurity() || b.RequireTransportSecurity() {
		t.Fatal("RequireTransportSecurity must be true unless loopback clear text is allowed")
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:9093": true, "localhost:9093": true, "10.1.1.1:9093": false, "example.com": false} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) != %v", addr, want)
		}
	}
}
