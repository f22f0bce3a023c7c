package broker

// The HTTP port over TLS (http_tls): what a Prometheus scrape with a client
// certificate gets, and what everyone else does not.

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/internal/testpki"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

// httpsGet GETs url with the client TLS block c (nil: plain HTTP client).
func httpsGet(t *testing.T, c *tlsconfig.Config, url string) (int, string, error) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	if c != nil {
		tc, err := c.Client()
		if err != nil {
			t.Fatal(err)
		}
		tr.TLSClientConfig = tc
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// TestHTTPTLS: with http_tls (client_auth require) /metrics, /federate,
// /healthz and /readyz answer a client presenting a certificate of the CA;
// a client without one, one with a certificate of another CA, one that does
// not trust the broker's CA and plain HTTP get nothing. With client_auth
// none any client trusting the CA gets in.
func TestHTTPTLS(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p := testpki.New(t)
	other := testpki.New(t)
	scraper := p.Client(t, "prometheus", "prometheus")
	foreign := other.Client(t, "prometheus", "prometheus")

	t.Run("require", func(t *testing.T) {
		b := startBroker(t, func(c *Config) {
			c.HTTPListen = "127.0.0.1:0"
			c.HTTPTLS = p.ServerTLS(t, "broker-http", tlsconfig.ClientAuthRequire)
		})
		base := "https://" + b.HTTPAddr()
		good := p.ClientTLS(&scraper)
		for _, path := range []string{"/metrics", "/federate", "/healthz", "/readyz"} {
			var code int
			var body string
			var err error
			// /readyz turns 200 once Raft knows a leader.
			deadline := time.Now().Add(30 * time.Second)
			for {
				code, body, err = httpsGet(t, &good, base+path)
				if err != nil || code == http.StatusOK || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil || code != http.StatusOK {
				t.Fatalf("GET %s with a client certificate: %d %v %.200s", path, code, err, body)
			}
			if path == "/metrics" && !strings.Contains(body, "monitor_broker_") {
				t.Fatalf("/metrics over TLS lacks the broker's metrics: %.300s", body)
			}
		}
		noCert := p.ClientTLS(nil)
		foreignCert := p.ClientTLS(&foreign)
		untrusting := other.ClientTLS(&scraper)
		for name, c := range map[string]*tlsconfig.Config{
			"no client certificate":            &noCert,
			"a certificate of another CA":      &foreignCert,
			"a client not trusting the broker": &untrusting,
		} {
			if code, body, err := httpsGet(t, c, base+"/metrics"); err == nil {
				t.Errorf("%s: /metrics answered %d %.100s", name, code, body)
			}
		}
		if code, _, err := httpsGet(t, nil, "http://"+b.HTTPAddr()+"/metrics"); err == nil && code == http.StatusOK {
			t.Errorf("plain HTTP to the TLS port got /metrics")
		}
	})

	t.Run("none", func(t *testing.T) {
		b := startBroker(t, func(c *Config) {
			c.HTTPListen = "127.0.0.1:0"
			c.HTTPTLS = p.ServerTLS(t, "broker-http-open", tlsconfig.ClientAuthNone)
		})
		c := p.ClientTLS(nil)
		if code, body, err := httpsGet(t, &c, "https://"+b.HTTPAddr()+"/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("healthz over TLS without client auth: %d %v %s", code, err, body)
		}
		// TLS 1.1 is refused (MinVersion 1.2).
		old := &tls.Config{MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true} //nolint:gosec // the point of the test
		conn, err := tls.Dial("tcp", b.HTTPAddr(), old)
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
}
