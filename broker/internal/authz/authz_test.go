package authz

import (
	"net/url"
	"testing"
)

// The interceptors are tested through a real broker in
// broker/security_test.go; this covers the certificate URI rule and when
// authentication is on.
func TestHostFromURI(t *testing.T) {
	for s, want := range map[string]string{
		"monitor://host/web-1":   "web-1",
		"monitor://host/":        "",
		"monitor://host/a/b":     "",
		"monitor://agent/web-1":  "",
		"spiffe://host/web-1":    "",
		"monitor://host/web-1/x": "",
	} {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := HostFromURI(u)
		if got != want && ok || ok != (want != "") {
			t.Errorf("HostFromURI(%q) = %q, %v; want %q", s, got, ok, want)
		}
	}
	if (New(Config{}, nil)).Enabled() {
		t.Error("enabled without secrets or cert identity")
	}
	if !(New(Config{CertIdentity: CertIdentityURI}, nil)).Enabled() || !(New(Config{AgentSecrets: []string{"x"}}, nil)).Enabled() {
		t.Error("not enabled with a secret or a cert identity")
	}
}
