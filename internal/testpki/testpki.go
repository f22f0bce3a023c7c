// Package testpki issues throw-away certificates for tests: a CA, server
// certificates valid for 127.0.0.1, ::1 and localhost, and client
// certificates with a chosen CommonName and URI SANs, written as PEM files
// into the test's temporary directory. Keys are ECDSA P-256 (fast to make).
//
// A PKI is safe for concurrent use.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

// PKI is one certificate authority and the files it has issued.
type PKI struct {
	Dir    string // where the PEM files are written
	CAFile string // the CA certificate (PEM)

	mu     sync.Mutex
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

// Pair names a certificate and its key on disk.
type Pair struct {
	CertFile, KeyFile string
}

// New makes a CA whose files live in a fresh t.TempDir().
func New(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), serial: 1}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "monitor test CA " + t.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testpki: create CA: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse CA: %v", err)
	}
	p.ca, p.caKey = ca, key
	p.CAFile = filepath.Join(p.Dir, "ca.pem")
	writePEM(t, p.CAFile, "CERTIFICATE", der)
	return p
}

// Server issues a server certificate for 127.0.0.1, ::1 and localhost (plus
// extra DNS names) into name.pem / name-key.pem.
func (p *PKI) Server(t testing.TB, name string, dnsNames ...string) Pair {
	t.Helper()
	pair := Pair{CertFile: filepath.Join(p.Dir, name+".pem"), KeyFile: filepath.Join(p.Dir, name+"-key.pem")}
	p.WriteServer(t, pair, dnsNames...)
	return pair
}

// WriteServer (re)issues a server certificate into pair's files, replacing
// them atomically: the way an operator rotates a certificate on disk.
func (p *PKI) WriteServer(t testing.TB, pair Pair, dnsNames ...string) {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    append([]string{"localhost"}, dnsNames...),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	p.issue(t, tmpl, pair)
}

// Client issues a client certificate with CommonName cn and the given URI
// SANs (e.g. "spiffe://monitor/host/web-1") into name.pem / name-key.pem.
func (p *PKI) Client(t testing.TB, name, cn string, uris ...string) Pair {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("testpki: URI SAN %q: %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	pair := Pair{CertFile: filepath.Join(p.Dir, name+".pem"), KeyFile: filepath.Join(p.Dir, name+"-key.pem")}
	p.issue(t, tmpl, pair)
	return pair
}

// ServerTLS returns an enabled server block using a fresh server
// certificate named name, with the given client_auth mode.
func (p *PKI) ServerTLS(t testing.TB, name, clientAuth string) tlsconfig.Config {
	t.Helper()
	pair := p.Server(t, name)
	c := tlsconfig.Config{Enabled: true, CertFile: pair.CertFile, KeyFile: pair.KeyFile, ClientAuth: clientAuth}
	if clientAuth != "" && clientAuth != tlsconfig.ClientAuthNone {
		c.CAFile = p.CAFile
	}
	return c
}

// ClientTLS returns an enabled client block trusting this CA; with a
// non-nil pair it presents that certificate (mTLS).
func (p *PKI) ClientTLS(pair *Pair) tlsconfig.Config {
	c := tlsconfig.Config{Enabled: true, CAFile: p.CAFile}
	if pair != nil {
		c.CertFile, c.KeyFile = pair.CertFile, pair.KeyFile
	}
	return c
}

func (p *PKI) issue(t testing.TB, tmpl *x509.Certificate, pair Pair) {
	t.Helper()
	key := newKey(t)
	p.mu.Lock()
	p.serial++
	tmpl.SerialNumber = big.NewInt(p.serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	p.mu.Unlock()
	if err != nil {
		t.Fatalf("testpki: issue %s: %v", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	// Key first, then the certificate: a reader that sees the new
	// certificate finds its key already in place.
	writePEM(t, pair.KeyFile, "PRIVATE KEY", keyDER)
	writePEM(t, pair.CertFile, "CERTIFICATE", der)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: generate key: %v", err)
	}
	return key
}

// writePEM replaces path atomically (temp file + rename).
func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("testpki: write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("testpki: rename %s: %v", tmp, err)
	}
}
