package api

import (
	"strings"
	"testing"
)

// TestPageCSPFor checks the page's connect-src: the page's own host on any
// port over https (the WebTransport session on the QUIC port) for a plain
// name or IP, and 'self' only for anything else a Host header may carry.
func TestPageCSPFor(t *testing.T) {
	for _, c := range []struct{ host, want string }{
		{"127.0.0.1:8080", "connect-src 'self' https://127.0.0.1:*;"},
		{"dash.example.com", "connect-src 'self' https://dash.example.com:*;"},
		{"[::1]:8080", "connect-src 'self' https://[::1]:*;"},
		{"", "connect-src 'self';"},
		{"evil.com; script-src *", "connect-src 'self';"},
		{"a b:80", "connect-src 'self';"},
		{"x'y", "connect-src 'self';"},
	} {
		got := pageCSPFor(c.host)
		if !strings.Contains(got, c.want) {
			t.Errorf("pageCSPFor(%q) = %q, want it to contain %q", c.host, got, c.want)
		}
		if !strings.Contains(got, "script-src 'self';") || strings.Count(got, "script-src") != 1 {
			t.Errorf("pageCSPFor(%q) changed script-src: %q", c.host, got)
		}
	}
}

// TestEmbeddedPage checks that a page is embedded either way: the built
// dashboard (ui/dist) or the fallback that explains how to build it.
func TestEmbeddedPage(t *testing.T) {
	if len(appJS) == 0 || len(styleCSS) == 0 {
		t.Fatal("app.js or style.css is empty")
	}
	full := strings.Contains(indexHTML, `data-ui="full"`)
	fallback := strings.Contains(indexHTML, `id="not-built"`) && strings.Contains(indexHTML, "make build")
	if full == fallback {
		t.Fatalf("the embedded index.html is neither the dashboard nor the fallback (full %v, fallback %v)", full, fallback)
	}
}
