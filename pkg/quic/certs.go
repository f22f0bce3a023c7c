package quic

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"sync"
	"time"
)

// MaxSelfSignedValidity is the longest validity of a generated
// certificate. Chromium accepts a certificate pinned with
// serverCertificateHashes only when it is valid for at most 14 days; the
// day of margin covers the backdated start.
const MaxSelfSignedValidity = 13 * 24 * time.Hour

// backdate starts a generated certificate a little in the past, for
// clients whose clocks are behind.
const backdate = time.Minute

// CertHash is the hash of a certificate in the form WebTransport's
// serverCertificateHashes takes: {"algorithm":"sha-256","value":base64}.
type CertHash struct {
	Algorithm string `json:"algorithm"`
	Value     []byte `json:"value"` // encoded as base64 in JSON
}

// HashOf returns the sha-256 hash of a DER certificate.
func HashOf(der []byte) CertHash {
	sum := sha256.Sum256(der)
	return CertHash{Algorithm: "sha-256", Value: sum[:]}
}

// SelfSignedOptions configure generated certificates.
type SelfSignedOptions struct {
	// Validity is each certificate's lifetime, at most
	// MaxSelfSignedValidity.
	Validity time.Duration
	// RotateBefore: when the current certificate has this much validity
	// left, the next one is made and announced (Hashes lists both); at
	// half of it, new connections get the next one. At most Validity/2.
	RotateBefore time.Duration
	// Hosts are DNS names and IPs put in the certificate besides localhost
	// and the loopback addresses (pinned clients do not check names;
	// others may).
	Hosts []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Certs is the certificate source of a QUIC server: either a configured
// certificate (LoadCerts) or self-signed ECDSA P-256 certificates made and
// rotated here (NewSelfSigned). Existing connections keep the certificate
// they were made with; rotation only affects new handshakes.
//
// Certs is safe for concurrent use.
type Certs struct {
	opts       SelfSignedOptions
	now        func() time.Time
	selfSigned bool

	mu      sync.RWMutex
	current *tls.Certificate
	next    *tls.Certificate // announced, not yet served
}

// LoadCerts reads a PEM certificate chain and its key (a configured
// certificate, e.g. from a CA). Such a certificate is verified by clients
// in the usual way; Hashes still lists its leaf's hash for clients that
// pin.
func LoadCerts(certFile, keyFile string) (*Certs, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the QUIC certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &Certs{now: time.Now, current: &cert}, nil
}

// NewSelfSigned makes the first self-signed certificate.
func NewSelfSigned(opts SelfSignedOptions) (*Certs, error) {
	if opts.Validity <= 0 || opts.Validity > MaxSelfSignedValidity {
		return nil, fmt.Errorf("self-signed certificate validity %s: want more than 0 and at most %s (Chromium refuses pinned certificates valid for more than 14 days)", opts.Validity, MaxSelfSignedValidity)
	}
	if opts.RotateBefore <= 0 || opts.RotateBefore > opts.Validity/2 {
		return nil, fmt.Errorf("rotate %s before expiry: want more than 0 and at most half the validity (%s)", opts.RotateBefore, opts.Validity/2)
	}
	c := &Certs{opts: opts, now: opts.Now, selfSigned: true}
	if c.now == nil {
		c.now = time.Now
	}
	cert, err := c.generate()
	if err != nil {
		return nil, err
	}
	c.current = cert
	return c, nil
}

// SelfSigned reports whether the certificates are generated here (and so
// must be pinned by hash).
func (c *Certs) SelfSigned() bool { return c.selfSigned }

// GetCertificate serves the current certificate (tls.Config's hook).
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.current, nil
}

// Hashes returns the hashes clients may pin: the current certificate's,
// then the announced next one's during a rotation.
func (c *Certs) Hashes() []CertHash {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := []CertHash{HashOf(c.current.Leaf.Raw)}
	if c.next != nil {
		out = append(out, HashOf(c.next.Leaf.Raw))
	}
	return out
}

// NotAfter returns the current certificate's expiry.
func (c *Certs) NotAfter() time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.current.Leaf.NotAfter
}

// Rotate moves to a new self-signed certificate now (the next one if it
// was announced): new handshakes get it, open connections keep theirs.
func (c *Certs) Rotate() error {
	if !c.selfSigned {
		return errors.New("rotate: the QUIC certificate is configured, not generated here; replace its files and restart")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next := c.next
	if next == nil {
		var err error
		if next, err = c.generate(); err != nil {
			return err
		}
	}
	c.current, c.next = next, nil
	return nil
}

// Tick does what the clock asks for: announce the next certificate when
// RotateBefore of validity is left, switch to it at half of that. It
// returns when it should be called again at the latest. Run calls it.
func (c *Certs) Tick() (time.Duration, error) {
	if !c.selfSigned {
		return time.Hour, nil
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	left := c.current.Leaf.NotAfter.Sub(now)
	if left <= c.opts.RotateBefore && c.next == nil {
		next, err := c.generate()
		if err != nil {
			return time.Minute, err
		}
		c.next = next
	}
	if left <= c.opts.RotateBefore/2 {
		c.current, c.next = c.next, nil
		left = c.current.Leaf.NotAfter.Sub(now)
	}
	wait := left - c.opts.RotateBefore
	if c.next != nil {
		wait = left - c.opts.RotateBefore/2
	}
	return max(wait, time.Second), nil
}

// generate makes a self-signed ECDSA P-256 certificate valid from now
// (backdated a minute) for opts.Validity.
func (c *Certs) generate() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate a P-256 key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate a serial number: %w", err)
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "monitor QUIC (self-signed)"},
		NotBefore:    now.Add(-backdate),
		// Validity includes the backdated minute: Chromium measures
		// NotAfter − NotBefore.
		NotAfter:              now.Add(c.opts.Validity - backdate),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	for _, h := range c.opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create a self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse the generated certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
